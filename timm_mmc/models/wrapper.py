"""An MM head on any timm backbone, as a registered timm model with one name scheme for every command.

timm creates registered names only, so wrapped backbones are one architecture, ``mmc_wrapper``, whose model arguments
name the backbone and the head::

    timm.create_model('mmc_wrapper', backbone='resnet18', head='mmc', num_classes=10)

Our commands (``train``, ``eval.robustness``, ``timm_mmc.io.load_model``) take the short name ``BACKBONE+HEAD[.TAG]``,
``HEAD`` one of the suffixes of :data:`timm_mmc.heads.HEADS` (``resnet18+mmc``, ``convnext_atto+sce.cifar100``);
:func:`resolve_model_name` is the one place that turns it into the architecture and its arguments. Release folders
and Hub repos cannot hold ``+`` (Hub names allow letters, digits, ``-``, ``_`` and ``.``; no timm name has a ``-``),
so there the name is written ``BACKBONE-HEAD.TAG`` (:func:`release_name`), which every command accepts too.

The model is the timm backbone without its classifier (``num_classes=0``), the input normalisation as buffers (images
in ``[0, 1]``, as the CIFAR ResNets) and an :class:`~timm_mmc.heads.MMHead` on its pooled pre-logits features.
``config.json`` (``model_args``) rebuilds it, so ``local-dir:`` / ``hf-hub:`` and ``pretrained_cfg_overlay=dict(file=)``
load it as any timm model. Its pretrained cfg is its own (CIFAR input size, mean 0 / std 1), never the backbone's.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..heads import HEADS, HeadConfig, MMHead, drop_head, head_spec
from ._pretrained import CIFAR10_LABELS, CIFAR100_LABELS, PretrainedWeightsError, build_pretrained
from .cifar_resnet import _filter_fn

__all__ = ['MMCWrapper', 'create_mmc_model', 'resolve_model_name', 'model_display_name', 'release_name',
           'WRAPPER_ARCH', 'NAME_SEP', 'RELEASE_SEP']

WRAPPER_ARCH = 'mmc_wrapper'
NAME_SEP = '+'  # resnet18+mmc: what users type
RELEASE_SEP = '-'  # resnet18-mmc.cifar10: release folders and Hub repo ids, which cannot hold '+'
DEFAULT_BACKBONE = 'resnet18'
_OWN_MODULES = ('cifar_resnet', 'wrapper')
_RUNTIME_ARGS = ('drop_path_rate', 'drop_block_rate')  # timm leaves drop rates out of saved model_args too


def _check_backbone(name: Any) -> str:
    if not isinstance(name, str) or not timm.is_model(name):
        stem = name.split('_')[0] if isinstance(name, str) else ''
        raise ValueError(f'unknown backbone {name!r}: not a registered timm model. List candidates with '
                         f'timm.list_models("{stem}*").')
    if name.split('.', 1)[0] in timm.list_models(module=list(_OWN_MODULES)):  # with or without a tag
        raise ValueError(f'{name!r} is a timm_mmc model with its own head: name the head in its suffix '
                         f'(timm.list_models("{name.split("_")[0]}_*")) instead of wrapping it.')
    return name


def _suffix(head: str, center_kind: str) -> str:
    return head_spec(head, center_kind).suffix


def _head_args(suffix: str) -> Dict[str, Any]:
    if suffix not in HEADS:
        raise ValueError(f'unknown head {suffix!r}; the part after {NAME_SEP!r} is one of {", ".join(HEADS)} '
                         f'(e.g. resnet18{NAME_SEP}mmc).')
    spec = HEADS[suffix]
    return dict(head=spec.kind, center_kind=spec.center_kind)


def resolve_model_name(spec: str) -> Tuple[str, Dict[str, Any]]:
    """The timm name and model arguments of a model name as our commands take it.

    ``resnet32_mmc.cifar10`` and any other registered timm name stay as they are; ``BACKBONE+HEAD[.TAG]`` (or its
    release spelling ``BACKBONE-HEAD[.TAG]``) becomes ``mmc_wrapper[.TAG]`` with ``backbone`` and the head's arguments.

    Returns:
        ``(timm name with the tag, model arguments)``, e.g. ``('mmc_wrapper.cifar10', {'backbone': 'resnet18',
        'head': 'mmc', 'center_kind': 'mm'})``.

    Raises:
        ValueError: An unknown model, backbone or head, naming what is accepted.
    """
    name, dot, tag = spec.partition('.')
    if NAME_SEP in tag:
        head = tag.split(NAME_SEP)[-1]
        raise ValueError(f'{spec!r}: the backbone of BACKBONE{NAME_SEP}HEAD takes no pretrained tag (it is built as '
                         f'timm\'s default {name!r}); write {name}{NAME_SEP}{head} and start it from its timm weights '
                         f'with --pretrained-backbone.')
    sep = NAME_SEP if NAME_SEP in name else RELEASE_SEP if RELEASE_SEP in name else None
    if sep is None:
        if not timm.is_model(name):
            raise ValueError(f'unknown model {spec!r}: name a registered one (timm.list_models("*_mmc"), e.g. '
                             f'resnet32_mmc) or an MM head on a timm backbone as BACKBONE{NAME_SEP}HEAD (e.g. '
                             f'resnet18{NAME_SEP}mmc, HEAD one of {", ".join(HEADS)}).')
        return spec, {}
    backbone, _, suffix = name.rpartition(sep)
    args = dict(backbone=_check_backbone(backbone), **_head_args(suffix))
    return WRAPPER_ARCH + dot + tag, args


def model_display_name(architecture: str, model_args: Dict[str, Any]) -> str:
    """The name our commands take for a model of ``config.json``'s ``architecture`` and ``model_args``."""
    if architecture != WRAPPER_ARCH:
        return architecture
    suffix = _suffix(model_args.get('head', 'mmc'), model_args.get('center_kind', 'mm'))
    return f'{model_args.get("backbone", DEFAULT_BACKBONE)}{NAME_SEP}{suffix}'


def release_name(architecture: str, model_args: Dict[str, Any], tag: str) -> str:
    """The release folder and Hub repo name: ``resnet32_mmc.cifar10``, ``resnet18-mmc.cifar10``."""
    return f'{model_display_name(architecture, model_args).replace(NAME_SEP, RELEASE_SEP)}.{tag}'


class MMCWrapper(nn.Module):
    """A timm backbone (classifier removed) + normalisation buffers + an MM head. Inputs are images in [0, 1].

    Args:
        backbone: A timm model name (not one of timm_mmc's own).
        num_classes: Classes (>= 2; 0 makes ``forward`` return the feature ``z``).
        in_chans: Input channels.
        drop_rate: Dropout before the feature layer.
        norm_mean: Per-channel mean of the inputs, applied inside; default the backbone's pretrained cfg.
        norm_std: Per-channel std; default the backbone's pretrained cfg.
        **kwargs: :class:`~timm_mmc.heads.HeadConfig` fields (head, feature_dim, center_norm, ...); the rest goes to
            ``timm.create_model`` of the backbone (e.g. ``img_size`` of a ViT).
    """

    def __init__(
            self,
            backbone: str = DEFAULT_BACKBONE,
            num_classes: int = 10,
            in_chans: int = 3,
            drop_rate: float = 0.0,
            norm_mean: Optional[Sequence[float]] = None,
            norm_std: Optional[Sequence[float]] = None,
            **kwargs: Any,
    ) -> None:
        super().__init__()
        head_cfg = HeadConfig.from_kwargs(kwargs)
        self.backbone_name = _check_backbone(backbone)
        self.backbone_kwargs = {k: v for k, v in kwargs.items() if k not in _RUNTIME_ARGS}
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        cfg = getattr(self.backbone, 'pretrained_cfg', {}) or {}
        mean = tuple(norm_mean if norm_mean is not None else cfg.get('mean', (0.485, 0.456, 0.406)))
        std = tuple(norm_std if norm_std is not None else cfg.get('std', (0.229, 0.224, 0.225)))
        if len(mean) != in_chans or len(std) != in_chans or min(std) <= 0:
            raise ValueError(f'norm_mean / norm_std need {in_chans} values each, std > 0.')
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.backbone.num_features
        in_features = getattr(self.backbone, 'head_hidden_size', None) or self.backbone.num_features
        self.head_hidden_size = head_cfg.feature_dim
        self.head = MMHead(in_features, num_classes, head_cfg, drop_rate)
        first_conv = cfg.get('first_conv')
        self.first_conv = f'backbone.{first_conv}' if isinstance(first_conv, str) else None
        self._traits = dict(first_conv=self.first_conv)  # timm's exports read the input layer from here
        # what forward_intermediates / features_only=True return: the backbone's maps, named from here
        self.feature_info = [dict(f, module=f'backbone.{f["module"]}') for f in getattr(self.backbone, 'feature_info',
                                                                                        None) or []]

    @property
    def head_config(self) -> HeadConfig:
        return self.head.cfg

    @property
    def name(self) -> str:
        """The name our commands take for this model, e.g. ``resnet18+mmc``."""
        return model_display_name(WRAPPER_ARCH, self.model_args())

    def model_args(self) -> Dict[str, Any]:
        """JSON-serialisable arguments that rebuild this model (for ``config.json``'s ``model_args``)."""
        return dict(self.backbone_kwargs, backbone=self.backbone_name, **self.head.cfg.to_dict(),
                    num_classes=self.num_classes, in_chans=self.in_chans,
                    norm_mean=[float(v) for v in self.mean.flatten()], norm_std=[float(v) for v in self.std.flatten()])

    def load_backbone_weights(self, source: Union[str, Path] = 'timm') -> str:
        """Load the backbone's pretrained weights (the head stays as initialised).

        Args:
            source: ``'timm'``: the backbone's default pretrained tag through timm (the HF cache when offline); or a
                safetensors / weights-only file holding a state dict of the backbone (its classifier is dropped).

        Returns:
            Where the weights came from, for the log.

        Raises:
            PretrainedWeightsError: No such weights, or the Hub neither reachable nor cached; the message names the
                offline route.
        """
        if str(source) != 'timm':
            return self._load_backbone_file(Path(source))
        name = self.backbone_name
        if not timm.is_model_pretrained(name):
            raise PretrainedWeightsError(f'timm has no pretrained weights for the backbone {name!r}; train from '
                                         f'scratch (without --pretrained-backbone) or pass a weights file of it.')
        where = timm.get_pretrained_cfg(name)
        where = where.hf_hub_id or where.url
        from ._pretrained import _hub_errors
        try:
            src = timm.create_model(name, pretrained=True, num_classes=0, in_chans=self.in_chans,
                                    **self.backbone_kwargs)
        except (*_hub_errors(), OSError) as e:
            raise PretrainedWeightsError(
                f'the pretrained weights of the backbone {name!r} ({where}) are not in the local Hugging Face cache '
                f'and could not be downloaded ({type(e).__name__}). Offline: download them where the Hub is reachable '
                f'(huggingface-cli download {where} model.safetensors) and pass that file '
                f'(--pretrained-backbone path/to/model.safetensors), or copy that machine\'s HF cache here; or train '
                f'from scratch without --pretrained-backbone.') from e
        self.backbone.load_state_dict(src.state_dict())
        return f'timm {name} ({where})'

    def _load_backbone_file(self, path: Path) -> str:
        from ..io import load_state_dict_safe

        state = load_state_dict_safe(path)
        # what timm does with its own files: the backbone family's filter adapts them (a ViT built at another image
        # size gets its position embedding resampled)
        adapt = getattr(sys.modules.get(type(self.backbone).__module__), 'checkpoint_filter_fn', None)
        if adapt is not None:
            state = adapt(state, self.backbone)
        try:
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        except RuntimeError as e:  # a tensor of another shape
            raise PretrainedWeightsError(f'{str(path)!r} does not fit {self.backbone_name!r} as built here '
                                         f'({str(e).splitlines()[-1].strip()}).') from None
        if missing:
            raise PretrainedWeightsError(f'{str(path)!r} does not hold the weights of {self.backbone_name!r}: '
                                         f'{len(missing)} missing keys (e.g. {missing[0]}).')
        classifier = str((getattr(self.backbone, 'pretrained_cfg', {}) or {}).get('classifier') or '')
        other = [k for k in unexpected if not (classifier and k.startswith(classifier))]
        if other:
            raise PretrainedWeightsError(f'{str(path)!r} holds {len(other)} keys {self.backbone_name!r} does not have '
                                         f'(e.g. {other[0]}); is it a state dict of that backbone?')
        return f'{self.backbone_name} from {path}'

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New classifier for ``num_classes`` (0: features only). MM centers are rebuilt, not carried over.

        A ``global_pool`` is the backbone's and is recorded in :meth:`model_args`, so a saved model pools the same
        way when rebuilt.
        """
        if global_pool is not None:
            self.backbone.reset_classifier(0, global_pool)
            self.backbone_kwargs['global_pool'] = global_pool
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.normalize(x))

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The backbone's ``forward_intermediates`` on the normalised input (same arguments)."""
        return self.backbone.forward_intermediates(self.normalize(x), *args, **kwargs)

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """The backbone's pruning after the last map in ``indices``; the MM head goes with the backbone's head.

        As in :class:`~timm_mmc.models.cifar_resnet.CifarResNet`, the head goes whenever stages go (it could not take
        the narrower features) or when ``prune_head``; ``num_features`` then is the width of the last map kept.
        Returns the absolute indices.

        Raises:
            NotImplementedError: A backbone without ``prune_intermediate_layers`` in this timm (features_only=True
                needs it); the message names the way out.
        """
        if not hasattr(self.backbone, 'prune_intermediate_layers') or not self.feature_info:
            raise NotImplementedError(
                f'the backbone {self.backbone_name!r} has no prune_intermediate_layers / feature_info in timm '
                f'{timm.__version__}, so the wrapped model cannot be a features_only model; call '
                f'timm.create_model({self.backbone_name!r}, features_only=True) for its maps (you normalise inputs).')
        _, max_index = feature_take_indices(len(self.feature_info), indices)
        prune_end = max_index < len(self.feature_info) - 1
        width = self.backbone.num_features
        take_indices = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm,
                                                               prune_head=prune_head or prune_end)
        if prune_head or prune_end or self.backbone.num_features != width:  # e.g. EfficientNet's conv_head went
            drop_head(self, self.feature_info[max_index]['num_chs'])
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x, pre_logits=True)  # pooled (N, in_features)
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(tag: str) -> Dict[str, Any]:
    cifar100 = tag.startswith('cifar100')
    return {  # no weights source: what a wrapped backbone was trained into lives in its release folder / repo
        'num_classes': 100 if cifar100 else 10,
        'input_size': (3, 32, 32), 'fixed_input_size': False, 'crop_pct': 1.0, 'interpolation': 'bilinear',
        'mean': (0.0, 0.0, 0.0), 'std': (1.0, 1.0, 1.0),  # normalisation is inside the model
        'classifier': 'head.classifier', 'license': 'apache-2.0', 'paper_ids': 'arXiv:1905.10626',
        'label_names': CIFAR100_LABELS if cifar100 else CIFAR10_LABELS,
    }


default_cfgs = generate_default_cfgs({f'{WRAPPER_ARCH}.{tag}': _cfg(tag)
                                     for tag in ('cifar10', 'cifar100', 'cifar10_at')})


@register_model
def mmc_wrapper(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """An MM head on any timm backbone: ``backbone='resnet18'``, ``head='mmc'`` (our commands: ``resnet18+mmc``).

    With ``features_only=True`` it is timm's ``FeatureGetterNet``: the backbone's maps of the input in [0, 1],
    normalised inside as for classification; ``out_indices`` picks them (default: every map of the backbone's
    ``feature_info``, however many it has).
    """
    args = dict(backbone=kwargs.get('backbone', DEFAULT_BACKBONE), head=kwargs.get('head', 'mmc'),
                center_kind=kwargs.get('center_kind', 'mm'))
    model = build_pretrained(MMCWrapper, WRAPPER_ARCH, pretrained,
                             release_name=lambda tag: release_name(WRAPPER_ARCH, args, tag),
                             display_name=model_display_name(WRAPPER_ARCH, args),
                             pretrained_filter_fn=_filter_fn, feature_cfg=dict(feature_cls='getter', out_indices=None),
                             **kwargs)
    inner = model if isinstance(model, MMCWrapper) else model.model  # features_only=True: timm's FeatureGetterNet
    inner.pretrained_cfg = dict(inner.pretrained_cfg, first_conv=inner.first_conv)
    inner.default_cfg = inner.pretrained_cfg
    return model


def create_mmc_model(
        model_name: str,
        head: str = 'mmc',
        num_classes: int = 10,
        feature_dim: int = 256,
        center_norm: float = 10.0,
        center_kind: str = 'mm',
        center_seed: int = 0,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        drop_rate: float = 0.0,
        pretrained: bool = False,
        **timm_kwargs: Any,
) -> nn.Module:
    """Any timm model with an MM (or linear / L-GM) head: ``timm.create_model('mmc_wrapper', backbone=model_name)``.

    Args:
        model_name: A timm model name. One of this package's CIFAR ResNets (``resnet32_mmc``, optionally with a tag)
            is built directly; its suffix must name the same head as ``head`` and ``center_kind``.
        head: ``'mmc'``, ``'mmlda'``, ``'lgm'`` or ``'linear'``.
        num_classes: Number of classes (>= 2).
        feature_dim: Width of the feature ``z`` that meets the centers.
        center_norm: Norm of every center.
        center_kind: ``'mm'`` or ``'random'``.
        center_seed: Seed for random or optimised centers.
        mean: Input normalisation mean (pixel units); defaults to the backbone's pretrained cfg.
        std: Input normalisation std; defaults to the backbone's pretrained cfg.
        drop_rate: Dropout before the feature layer.
        pretrained: Load the backbone's pretrained weights (timm's; see :meth:`MMCWrapper.load_backbone_weights`);
            for one of this package's CIFAR ResNets, its released weights (the whole model).
        **timm_kwargs: Passed to ``timm.create_model`` for the backbone.

    Raises:
        ValueError: Unknown backbone or bad head configuration.
        PretrainedWeightsError: ``pretrained=True`` and the backbone's weights cannot be had.
    """
    head_cfg = HeadConfig(head=head, feature_dim=feature_dim, center_norm=center_norm, center_kind=center_kind,
                          center_seed=center_seed)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f'num_classes must be an int >= 2 (got {num_classes!r}).')
    if not timm.is_model(model_name):
        _check_backbone(model_name)
    kwargs = dict(head_cfg.to_dict(), num_classes=num_classes, drop_rate=drop_rate, **timm_kwargs)
    if mean is not None:
        kwargs['norm_mean'] = tuple(mean)
    if std is not None:
        kwargs['norm_std'] = tuple(std)
    base = model_name.split('.', 1)[0]
    if base in timm.list_models(module='cifar_resnet'):
        own = base.split('_', 1)[1]  # the head the name carries: sce, mmc, mmlda, ...
        if own != _suffix(head, center_kind):
            raise ValueError(f'{model_name!r} carries its own {own!r} head, not head={head!r}, '
                             f'center_kind={center_kind!r}; name the head in the suffix instead '
                             f'({base.split("_")[0]}_{_suffix(head, center_kind)}).')
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    model = timm.create_model(WRAPPER_ARCH, backbone=model_name, **kwargs)
    if pretrained:
        model.load_backbone_weights('timm')
    return model
