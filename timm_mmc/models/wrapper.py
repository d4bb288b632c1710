"""Put a Max-Mahalanobis head on any timm backbone.

``create_mmc_model('convnext_atto', head='mmc', num_classes=10)`` builds the timm model without its classifier
(``num_classes=0``), adds input normalisation as buffers (the backbone's own mean / std unless told otherwise) and an
:class:`~timm_mmc.heads.MMHead` on its pre-logits features. The result follows the timm model contract.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import timm
import torch
import torch.nn as nn

from ..heads import HeadConfig, MMHead

__all__ = ['MMCWrapper', 'create_mmc_model']


class MMCWrapper(nn.Module):
    """A timm backbone (classifier removed) + normalisation buffers + an MM head. Inputs are images in [0, 1]."""

    def __init__(self, backbone: nn.Module, num_classes: int, head_cfg: HeadConfig, mean: Sequence[float],
                 std: Sequence[float], drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.num_features = backbone.num_features
        in_features = getattr(backbone, 'head_hidden_size', None) or backbone.num_features
        self.head_hidden_size = head_cfg.feature_dim
        self.num_classes = num_classes
        self.head = MMHead(in_features, num_classes, head_cfg, drop_rate)
        cfg = dict(getattr(backbone, 'pretrained_cfg', {}) or {})
        cfg.update(mean=(0.0,) * len(mean), std=(1.0,) * len(std), num_classes=num_classes,
                   classifier='head.classifier')
        self.pretrained_cfg = cfg

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self.backbone.reset_classifier(0, global_pool)
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features((x - self.mean) / self.std)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x, pre_logits=True)  # pooled (N, in_features)
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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
    """Any timm model with an MM (or linear / L-GM) head.

    Args:
        model_name: A timm model name. One of this package's CIFAR ResNets is built directly with the given head.
        head: ``'mmc'``, ``'mmlda'``, ``'lgm'`` or ``'linear'``.
        num_classes: Number of classes (>= 2).
        feature_dim: Width of the feature ``z`` that meets the centers.
        center_norm: Norm of every center.
        center_kind: ``'mm'`` or ``'random'``.
        center_seed: Seed for random or optimised centers.
        mean: Input normalisation mean (pixel units); defaults to the backbone's pretrained cfg.
        std: Input normalisation std; defaults to the backbone's pretrained cfg.
        drop_rate: Dropout before the feature layer.
        pretrained: Load the backbone's pretrained weights (timm's usual resolution).
        **timm_kwargs: Passed to ``timm.create_model`` for the backbone.

    Raises:
        ValueError: Unknown backbone or bad head configuration.
    """
    head_cfg = HeadConfig(head=head, feature_dim=feature_dim, center_norm=center_norm, center_kind=center_kind,
                          center_seed=center_seed)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f'num_classes must be an int >= 2 (got {num_classes!r}).')
    if not timm.is_model(model_name):
        raise ValueError(f'unknown backbone {model_name!r}: not a registered timm model. List candidates with '
                         f'timm.list_models("{model_name.split("_")[0]}*").')
    from .cifar_resnet import CifarResNet
    if model_name in timm.list_models(module='cifar_resnet'):
        kwargs = dict(head_cfg.to_dict(), num_classes=num_classes, drop_rate=drop_rate, **timm_kwargs)
        if mean is not None:
            kwargs['norm_mean'] = tuple(mean)
        if std is not None:
            kwargs['norm_std'] = tuple(std)
        model = timm.create_model(model_name, pretrained=pretrained, **kwargs)
        assert isinstance(model, CifarResNet)
        return model
    backbone = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **timm_kwargs)
    cfg: Dict[str, Any] = getattr(backbone, 'pretrained_cfg', {}) or {}
    mean = tuple(mean if mean is not None else cfg.get('mean', (0.485, 0.456, 0.406)))
    std = tuple(std if std is not None else cfg.get('std', (0.229, 0.224, 0.225)))
    return MMCWrapper(backbone, num_classes, head_cfg, mean, std, drop_rate)
