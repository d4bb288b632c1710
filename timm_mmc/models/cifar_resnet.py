"""CIFAR ResNets with Max-Mahalanobis heads.

Backbones:

* He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385), section 4.2: the CIFAR
  ResNet of depth ``6n + 2`` (three stages of ``n`` basic blocks, 16/32/64 channels, identity shortcuts with zero
  padding, "option A"). ResNet-32 has 0.46M parameters, ResNet-110 1.7M.
* The pre-activation bottleneck variant (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016,
  arXiv:1603.05027) of depth ``9n + 2`` that the MMC authors trained, with 64/128/256 output channels. Their code
  named it after ``n = 5`` ("resnet32v2"); its depth is 47. We keep their name: ``resnet32v2_*``.

Heads (:mod:`timm_mmc.heads`): ``sce`` (linear), ``mmc`` / ``mmlda`` (fixed Max-Mahalanobis centers),
``lgm`` (trainable Gaussian means), and ``mmc_rand`` (MMC with random centers of the same norm). Papers:
Pang et al., "Max-Mahalanobis Linear Discriminant Analysis Networks", ICML 2018 (arXiv:1802.09308);
Pang et al., "Rethinking Softmax Cross-Entropy Loss for Adversarial Robustness", ICLR 2020 (arXiv:1905.10626);
Wan et al., "Rethinking Feature Distribution for Loss Functions in Image Classification", CVPR 2018.

Inputs are images in ``[0, 1]``; the per-channel data set mean and std live inside the model as buffers, so
attacks and the timm data pipeline both work in pixel space (the pretrained cfgs say mean 0, std 1).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..heads import HEADS, HeadConfig, MMHead, drop_head
from ._pretrained import CIFAR10_LABELS, CIFAR100_LABELS, HUB_NAMESPACE, RELEASED, build_pretrained, hub_repo_id

__all__ = ['CifarResNet', 'HUB_NAMESPACE', 'CIFAR10_MEAN', 'CIFAR10_STD', 'CIFAR100_MEAN', 'CIFAR100_STD']

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, add the shortcut, ReLU (He et al. 2016, CIFAR option A shortcut)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.stride = stride
        self.pad = out_chs - in_chs  # zero channels appended to the subsampled identity

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def zero_init_last(self) -> None:
        """Zero the last batch norm's scale: the block starts as ReLU of its shortcut."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBottleneck(nn.Module):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1, plus a 1x1 projection shortcut in a stage's first block.

    ``preact=False`` skips the first BN-ReLU (the very first block, whose input the stem already activated).
    """

    def __init__(self, in_chs: int, width: int, out_chs: int, stride: int = 1, preact: bool = True,
                 project: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs) if preact else nn.Identity()
        self.act1 = nn.ReLU() if preact else nn.Identity()
        self.conv1 = nn.Conv2d(in_chs, width, 1, stride, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=True)
        self.proj = nn.Conv2d(in_chs, out_chs, 1, stride, bias=True) if project else nn.Identity()

    def zero_init_last(self) -> None:
        """Zero the last convolution (there is no batch norm after it): the block starts as its shortcut."""
        nn.init.zeros_(self.conv3.weight)
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + self.proj(x)


class CifarResNet(nn.Module):
    """A CIFAR ResNet backbone (32x32 inputs in [0, 1]) with an :class:`~timm_mmc.heads.MMHead`.

    Args:
        depth: ``6n + 2`` for ``block='basic'``, ``9n + 2`` for ``block='preact_bottleneck'``.
        block: ``'basic'`` (He et al. CIFAR ResNet) or ``'preact_bottleneck'`` (the MMC authors' variant).
        num_classes: Classes; 0 makes ``forward`` return the feature ``z``.
        in_chans: Input channels.
        drop_rate: Dropout before the feature layer.
        zero_init_last: Start every residual block as its shortcut: zero the last batch-norm scale of a basic block,
            the last convolution of a bottleneck (Goyal et al. 2017, arXiv:1706.02677; timm's ResNets
            do it by default). Off by default: the released weights were trained without it. An initialisation
            only, so not among :meth:`model_args`.
        global_pool: Only ``'avg'`` is supported (kept for timm's interface).
        norm_mean: Per-channel mean of the training data, applied inside ``forward_features``.
        norm_std: Per-channel std of the training data.
        **head_kwargs: :class:`~timm_mmc.heads.HeadConfig` fields (head, feature_dim, center_norm, ...).
    """

    def __init__(
            self,
            depth: int = 32,
            block: str = 'basic',
            num_classes: int = 10,
            in_chans: int = 3,
            drop_rate: float = 0.0,
            zero_init_last: bool = False,
            global_pool: str = 'avg',
            norm_mean: Sequence[float] = CIFAR10_MEAN,
            norm_std: Sequence[float] = CIFAR10_STD,
            **head_kwargs: Any,
    ) -> None:
        super().__init__()
        head_cfg = HeadConfig.from_kwargs(head_kwargs)
        if head_kwargs:
            raise ValueError(f'unknown model arguments {sorted(head_kwargs)}; the head takes '
                             f'{sorted(HeadConfig().to_dict())}.')
        if global_pool != 'avg':
            raise ValueError(f"CIFAR ResNets pool with 'avg' only (got global_pool={global_pool!r}).")
        if len(norm_mean) != in_chans or len(norm_std) != in_chans or min(norm_std) <= 0:
            raise ValueError(f'norm_mean / norm_std need {in_chans} values each, std > 0.')
        self.depth = depth
        self.block = block
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.register_buffer('mean', torch.tensor(norm_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer('std', torch.tensor(norm_std, dtype=torch.float32).view(1, -1, 1, 1))

        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        if block == 'basic':
            if (depth - 2) % 6 or depth < 8:
                raise ValueError(f'basic-block CIFAR ResNets have depth 6n + 2 (20, 32, 56, 110), got {depth}.')
            n = (depth - 2) // 6
            chs = (16, 32, 64)
            widths = list(chs)
            stages: List[nn.Module] = []
            in_chs = 16
            for i, c in enumerate(chs):
                blocks = [BasicBlock(in_chs if j == 0 else c, c, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
                stages.append(nn.Sequential(*blocks))
                in_chs = c
            self.final_norm = nn.Identity()
        elif block == 'preact_bottleneck':
            if (depth - 2) % 9 or depth < 11:
                raise ValueError(f'pre-activation bottleneck CIFAR ResNets have depth 9n + 2 (47 for n = 5), '
                                 f'got {depth}.')
            n = (depth - 2) // 9
            stages = []
            widths = []
            in_chs = 16
            for i in range(3):
                out_chs = in_chs * 4 if i == 0 else in_chs * 2
                blocks = [PreActBottleneck(in_chs if j == 0 else out_chs, in_chs, out_chs,
                                           stride=2 if (i > 0 and j == 0) else 1, preact=not (i == 0 and j == 0),
                                           project=j == 0) for j in range(n)]
                stages.append(nn.Sequential(*blocks))
                widths.append(out_chs)
                in_chs = out_chs
            self.final_norm = nn.Sequential(nn.BatchNorm2d(in_chs), nn.ReLU())
        else:
            raise ValueError(f"unknown block {block!r}; choose 'basic' or 'preact_bottleneck'.")
        self.stages = nn.Sequential(*stages)
        # what forward_intermediates / features_only=True return: the stem, then each stage (stride 1, 2, 2)
        self.feature_info = [dict(num_chs=16, reduction=1, module='stem')] + [
            dict(num_chs=w, reduction=2 ** i, module=f'stages.{i}') for i, w in enumerate(widths)]
        self.num_features = in_chs  # backbone width, (N, num_features, 8, 8) out of forward_features
        self.head_hidden_size = head_cfg.feature_dim  # width of the pre-logits feature z
        self.head = MMHead(self.num_features, num_classes, head_cfg, drop_rate)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for block in self.stages.modules():
                if isinstance(block, (BasicBlock, PreActBottleneck)):
                    block.zero_init_last()

    @property
    def head_config(self) -> HeadConfig:
        return self.head.cfg

    def model_args(self) -> Dict[str, Any]:
        """JSON-serialisable arguments that rebuild this model (for ``config.json``'s ``model_args``)."""
        return dict(self.head.cfg.to_dict(), num_classes=self.num_classes,
                    norm_mean=[float(v) for v in self.mean.flatten()],
                    norm_std=[float(v) for v in self.std.flatten()])

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New classifier for ``num_classes`` (0: features only). MM centers are rebuilt, not carried over."""
        if global_pool is not None and global_pool != 'avg':
            raise ValueError(f"CIFAR ResNets pool with 'avg' only (got global_pool={global_pool!r}).")
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))  # (N, 16, 32, 32)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models import checkpoint_seq
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)  # (N, num_features, 8, 8)
        return self.final_norm(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Feature maps of the stem and of each stage (timm's feature-extraction interface).

        Args:
            x: Images in [0, 1], (N, C, H, W); normalised inside, as in ``forward``.
            indices: Which of the 4 maps (0 stem, 1-3 stages): None all, an int the last n, a list those.
            norm: Apply the final norm (pre-activation variant only) to the last stage's map.
            stop_early: Stop after the last stage that is taken.
            output_fmt: Only ``'NCHW'``.
            intermediates_only: Return the list of maps only.

        Returns:
            The maps, or ``(forward_features output, maps)``.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"CIFAR ResNets return feature maps as 'NCHW' only (got output_fmt={output_fmt!r}).")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        intermediates = []
        x = self.stem(self.normalize(x))  # (N, 16, 32, 32)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        last = len(self.stages) - 1
        for i, stage in enumerate(stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                from timm.models import checkpoint_seq
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if i + 1 in take_indices:
                intermediates.append(self.final_norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return (self.final_norm(x) if len(stages) == len(self.stages) else x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop what follows the last map in ``indices``: later stages, the final norm and the head.

        As timm's models do, the head goes whenever stages go (it could not take the narrower features) or when
        ``prune_head``; ``num_features`` then is the width of the last map kept. Returns the absolute indices.
        """
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        prune_end = max_index < len(self.feature_info) - 1
        self.stages = self.stages[:max_index]
        if prune_norm or prune_end:
            self.final_norm = nn.Identity()
        if prune_head or prune_end:
            drop_head(self, self.feature_info[max_index]['num_chs'])
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # global average pool, (N, num_features)
        return self.head(x, pre_logits=pre_logits)  # z (N, feature_dim) or logits (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _filter_fn(state_dict: Dict[str, torch.Tensor], model: CifarResNet) -> Dict[str, torch.Tensor]:
    """Drop class-sized head tensors (linear weights, L-GM means) that do not fit a model with another class count.

    MM centers are never in a checkpoint; timm itself drops ``classifier.weight`` / ``.bias`` on a class mismatch.
    """
    own = model.state_dict()
    return {k: v for k, v in state_dict.items()
            if not (k.startswith('head.classifier.') and k in own and own[k].shape != v.shape)}


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_pretrained(CifarResNet, variant, pretrained, release_name=lambda tag: f'{variant}.{tag}',
                            display_name=variant, pretrained_filter_fn=_filter_fn,
                            feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)), **kwargs)



def _cfg(name: str, tag: str, **kwargs: Any) -> Dict[str, Any]:
    """A tag's pretrained cfg; only released tags name a source (``hf_hub_id``), so only they are listed by
    ``timm.list_pretrained`` and ``pretrained=True`` of the others says that no weights are released."""
    cifar100 = tag.startswith('cifar100')
    source = {'hf_hub_id': hub_repo_id(f'{name}.{tag}')} if f'{name}.{tag}' in RELEASED else {}
    return {
        **source,
        'num_classes': 100 if cifar100 else 10,
        'input_size': (3, 32, 32), 'fixed_input_size': False, 'pool_size': (8, 8),
        'crop_pct': 1.0, 'interpolation': 'bilinear',
        'mean': (0.0, 0.0, 0.0), 'std': (1.0, 1.0, 1.0),  # normalisation is inside the model
        'first_conv': 'stem.0', 'classifier': 'head.classifier',
        'license': 'apache-2.0',
        'paper_ids': HEADS[name.split('_', 1)[1]].paper_id,
        'label_names': CIFAR100_LABELS if cifar100 else CIFAR10_LABELS,
        'origin_url': 'https://github.com/P2333/Max-Mahalanobis-Training',
        **kwargs,
    }


_ARCHS = [f'resnet{d}_{h}' for d in (20, 32, 56, 110) for h in HEADS]
_ARCHS += ['resnet32v2_sce', 'resnet32v2_mmc']
# adversarially trained releases (FGSM-RS / PGD training, the inner attack on the head's own objective)
_AT_ARCHS = ('resnet32_sce', 'resnet32_mmc')
default_cfgs = generate_default_cfgs({  # the first tag with weights, else the first tag, is an architecture's default
    f'{arch}.{tag}': _cfg(arch, tag) for arch in _ARCHS
    for tag in ('cifar10', 'cifar100') + (('cifar10_at',) if arch in _AT_ARCHS else ())})


def _make(variant: str, pretrained: bool, depth: int, head: str, kwargs: Dict[str, Any],
          block: str = 'basic') -> CifarResNet:
    spec = HEADS[head]
    args: Dict[str, Any] = dict(depth=depth, block=block, head=spec.kind)
    if spec.center_kind != 'mm':
        args['center_kind'] = spec.center_kind
    args.update(kwargs)  # the caller may override the head's defaults, e.g. center_norm
    return _create_cifar_resnet(variant, pretrained, **args)


@register_model
def resnet20_sce(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 (He et al. 2016) with a linear softmax head."""
    return _make('resnet20_sce', pretrained, 20, 'sce', kwargs)


@register_model
def resnet20_mmc(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 with Max-Mahalanobis centers, trained with the MMC loss."""
    return _make('resnet20_mmc', pretrained, 20, 'mmc', kwargs)


@register_model
def resnet20_mmlda(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 with Max-Mahalanobis centers, trained with cross-entropy on distance logits (MMLDA)."""
    return _make('resnet20_mmlda', pretrained, 20, 'mmlda', kwargs)


@register_model
def resnet20_lgm(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 with an L-GM head (trainable means)."""
    return _make('resnet20_lgm', pretrained, 20, 'lgm', kwargs)


@register_model
def resnet20_mmc_rand(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20, MMC loss with random centers of the same norm (the paper's "MMC (rand)")."""
    return _make('resnet20_mmc_rand', pretrained, 20, 'mmc_rand', kwargs)


@register_model
def resnet32_sce(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 (He et al. 2016) with a linear softmax head."""
    return _make('resnet32_sce', pretrained, 32, 'sce', kwargs)


@register_model
def resnet32_mmc(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 with Max-Mahalanobis centers, trained with the MMC loss (the paper's "MMC-10")."""
    return _make('resnet32_mmc', pretrained, 32, 'mmc', kwargs)


@register_model
def resnet32_mmlda(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 with Max-Mahalanobis centers, trained with cross-entropy on distance logits (MMLDA)."""
    return _make('resnet32_mmlda', pretrained, 32, 'mmlda', kwargs)


@register_model
def resnet32_lgm(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 with an L-GM head (trainable means)."""
    return _make('resnet32_lgm', pretrained, 32, 'lgm', kwargs)


@register_model
def resnet32_mmc_rand(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32, MMC loss with random centers of the same norm (the paper's "MMC (rand)")."""
    return _make('resnet32_mmc_rand', pretrained, 32, 'mmc_rand', kwargs)


@register_model
def resnet56_sce(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 (He et al. 2016) with a linear softmax head."""
    return _make('resnet56_sce', pretrained, 56, 'sce', kwargs)


@register_model
def resnet56_mmc(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 with Max-Mahalanobis centers, trained with the MMC loss."""
    return _make('resnet56_mmc', pretrained, 56, 'mmc', kwargs)


@register_model
def resnet56_mmlda(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 with Max-Mahalanobis centers, trained with cross-entropy on distance logits (MMLDA)."""
    return _make('resnet56_mmlda', pretrained, 56, 'mmlda', kwargs)


@register_model
def resnet56_lgm(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 with an L-GM head (trainable means)."""
    return _make('resnet56_lgm', pretrained, 56, 'lgm', kwargs)


@register_model
def resnet56_mmc_rand(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56, MMC loss with random centers of the same norm."""
    return _make('resnet56_mmc_rand', pretrained, 56, 'mmc_rand', kwargs)


@register_model
def resnet110_sce(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 (He et al. 2016) with a linear softmax head."""
    return _make('resnet110_sce', pretrained, 110, 'sce', kwargs)


@register_model
def resnet110_mmc(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 with Max-Mahalanobis centers, trained with the MMC loss."""
    return _make('resnet110_mmc', pretrained, 110, 'mmc', kwargs)


@register_model
def resnet110_mmlda(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 with Max-Mahalanobis centers, trained with cross-entropy on distance logits (MMLDA)."""
    return _make('resnet110_mmlda', pretrained, 110, 'mmlda', kwargs)


@register_model
def resnet110_lgm(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 with an L-GM head (trainable means)."""
    return _make('resnet110_lgm', pretrained, 110, 'lgm', kwargs)


@register_model
def resnet110_mmc_rand(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110, MMC loss with random centers of the same norm."""
    return _make('resnet110_mmc_rand', pretrained, 110, 'mmc_rand', kwargs)


@register_model
def resnet32v2_sce(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """The MMC authors' pre-activation bottleneck ResNet (depth 47, their "resnet32v2") with a linear head."""
    return _make('resnet32v2_sce', pretrained, 47, 'sce', kwargs, block='preact_bottleneck')


@register_model
def resnet32v2_mmc(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """The MMC authors' pre-activation bottleneck ResNet (depth 47, their "resnet32v2") with MMC-10 centers."""
    return _make('resnet32v2_mmc', pretrained, 47, 'mmc', kwargs, block='preact_bottleneck')
