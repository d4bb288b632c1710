"""Classifier heads for Max-Mahalanobis training.

Every head is ``feature layer -> classifier``: a ``Linear(in_features, feature_dim)`` gives the feature ``z`` that
meets the centers (the authors' code used ``feature_dim = 256``), then one of

* ``linear``: a linear layer, the softmax cross-entropy (SCE) baseline;
* ``mmc`` / ``mmlda``: fixed Max-Mahalanobis centers ``mu_i`` (:mod:`timm_mmc.centers`) and logits
  ``h_i = -||z - mu_i||^2 / 2``. The two differ only in the loss they are trained with (MMC: ``-h_y``;
  MMLDA: cross-entropy on ``h``), so they share one module. The centers are a non-persistent buffer rebuilt
  from the config: checkpoints never carry them and changing ``num_classes`` never trips a size mismatch;
* ``lgm``: L-GM (Wan et al., "Rethinking Feature Distribution for Loss Functions in Image Classification",
  CVPR 2018): the same distance logits with trainable means (identity covariance); margin and likelihood terms
  live in :class:`timm_mmc.losses.LGMLoss`.

Papers: Pang et al., ICML 2018 (arXiv:1802.09308) and ICLR 2020 (arXiv:1905.10626).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from .centers import CENTER_KINDS, mm_centers

__all__ = ['HEAD_KINDS', 'HEADS', 'HeadSpec', 'HeadConfig', 'MMHead', 'PrunedHead', 'drop_head', 'CenterClassifier',
           'distance_logits', 'head_spec']

HEAD_KINDS = ('linear', 'mmc', 'mmlda', 'lgm')  # the module kinds; HEADS below names the trained variants


@dataclass(frozen=True)
class HeadSpec:
    """One trained variant of a head: what it is built from, trained with and attacked with, and its paper row.

    The single table :data:`HEADS` is the one place that maps a head to these; the model registry, the losses,
    training, evaluation and the release tooling all ask it.
    """
    suffix: str  # the model-name suffix: resnet32_<suffix>
    kind: str  # the module's head kind, one of HEAD_KINDS
    center_kind: str  # 'mm' or 'random' (the paper's "MMC (rand)" baseline); unused by linear heads
    loss: str  # default training loss, a name in timm_mmc.losses.LOSSES
    objective: str  # the head's own attack objective: 'ce' (cross-entropy) or 'mm' (push z away from mu_y)
    targeted_training: bool  # default inner attack of adversarial training (the paper: targeted for MM heads)
    paper_row: str  # the row of Pang et al. (ICLR 2020), Table A, this variant corresponds to
    paper_id: str  # the paper that defines the variant

    @property
    def distance_logits(self) -> bool:
        """Whether the logits are ``-||z - mu_i||^2 / 2`` (saturating cross-entropy: attack with care)."""
        return self.kind != 'linear'


HEADS: Dict[str, HeadSpec] = {s.suffix: s for s in (
    HeadSpec('sce', 'linear', 'mm', 'sce', 'ce', False, 'SCE', 'arXiv:1512.03385'),
    HeadSpec('mmc', 'mmc', 'mm', 'mmc', 'mm', True, 'MMC-10', 'arXiv:1905.10626'),
    HeadSpec('mmc_rand', 'mmc', 'random', 'mmc', 'mm', True, 'MMC-10 (rand)', 'arXiv:1905.10626'),
    HeadSpec('mmlda', 'mmlda', 'mm', 'mmlda', 'mm', True, 'MMLDA', 'arXiv:1802.09308'),
    HeadSpec('lgm', 'lgm', 'mm', 'lgm', 'mm', True, 'L-GM', 'arXiv:1905.10626'),  # Wan et al. as the paper's baseline
)}


def head_spec(kind: str, center_kind: str = 'mm') -> HeadSpec:
    """The :class:`HeadSpec` of a head module kind (``HeadConfig.head``) and center kind.

    Raises:
        ValueError: An unknown kind.
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f'unknown head {kind!r}; choose one of {HEAD_KINDS}.')
    for spec in HEADS.values():
        if spec.kind == kind and (kind == 'linear' or spec.center_kind == center_kind):
            return spec
    return next(s for s in HEADS.values() if s.kind == kind)


@dataclass
class HeadConfig:
    """What a head is; JSON-serialisable so it survives ``config.json`` (``model_args``) round trips."""
    head: str = 'mmc'  # one of HEAD_KINDS; 'mmc' is the paper's method
    feature_dim: int = 256  # width of z; 256 in the authors' code
    center_norm: float = 10.0  # C: "MMC-10" in the paper
    center_kind: str = 'mm'  # 'mm' (Max-Mahalanobis) or 'random' (the paper's "MMC (rand)" baseline)
    center_seed: int = 0  # seeds 'random' centers and the optimised regime L > 2d

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ValueError(f'unknown head {self.head!r}; choose one of {HEAD_KINDS}.')
        if not isinstance(self.feature_dim, int) or isinstance(self.feature_dim, bool) or self.feature_dim < 1:
            raise ValueError(f'feature_dim must be an int >= 1 (got {self.feature_dim!r}); e.g. feature_dim=256.')
        if not (isinstance(self.center_norm, (int, float)) and math.isfinite(self.center_norm)
                and self.center_norm > 0):
            raise ValueError(f'center_norm must be a finite number > 0 (got {self.center_norm!r}); '
                             f'the paper uses center_norm=10.')
        if self.center_kind not in CENTER_KINDS:
            raise ValueError(f'unknown center_kind {self.center_kind!r}; choose one of {CENTER_KINDS}.')
        self.center_norm = float(self.center_norm)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_kwargs(cls, kwargs: Dict[str, Any]) -> 'HeadConfig':
        """Pop the head fields out of a model's ``**kwargs`` (so the rest can go to the backbone)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: kwargs.pop(k) for k in names if k in kwargs})


def distance_logits(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``h_i = -||z - mu_i||^2 / 2`` computed in float32 whatever the autocast state.

    Args:
        z: Features, ``(N, d)``.
        centers: Centers, ``(L, d)``.

    Returns:
        Logits, ``(N, L)`` float32.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.float()
        mu = centers.float()
        # ||z||^2 - 2 z.mu + ||mu||^2, (N, 1) - (N, L) + (1, L); clamp guards the tiny negative rounding
        sq = (z * z).sum(1, keepdim=True) - 2.0 * (z @ mu.t()) + (mu * mu).sum(1).unsqueeze(0)
        return -0.5 * sq.clamp_min(0.0)


class CenterClassifier(nn.Module):
    """Distance logits to fixed (MM / random) or trainable (L-GM) class centers."""

    def __init__(self, num_classes: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trainable = cfg.head == 'lgm'
        centers = mm_centers(num_classes, cfg.feature_dim, cfg.center_norm, kind=cfg.center_kind,
                             seed=cfg.center_seed)
        if self.trainable:
            self.means = nn.Parameter(centers)  # L-GM means start from MM centers, then train
        else:
            self.register_buffer('centers', centers, persistent=False)

    @property
    def mu(self) -> torch.Tensor:
        return self.means if self.trainable else self.centers

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return distance_logits(z, self.mu)

    def extra_repr(self) -> str:
        mu = self.mu
        return f'num_classes={mu.shape[0]}, feature_dim={mu.shape[1]}, trainable={self.trainable}'


class MMHead(nn.Module):
    """``(N, in_features) -> z (N, feature_dim) -> logits (N, num_classes)``.

    ``num_classes = 0`` leaves only the feature layer (``forward`` returns ``z``), as timm's ``reset_classifier(0)``.
    """

    def __init__(self, in_features: int, num_classes: int, cfg: HeadConfig, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or (num_classes != 0 and num_classes < 2):
            raise ValueError(f'num_classes must be >= 2 (or 0 for a feature extractor), got {num_classes!r}.')
        self.cfg = cfg
        self.in_features = in_features
        self.fc1 = nn.Linear(in_features, cfg.feature_dim)
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        if self.cfg.head == 'linear':
            return nn.Linear(self.cfg.feature_dim, num_classes)
        return CenterClassifier(num_classes, self.cfg)

    def reset(self, num_classes: int) -> None:
        """Replace the classifier for ``num_classes`` classes (centers are rebuilt, never loaded)."""
        if not isinstance(num_classes, int) or (num_classes != 0 and num_classes < 2):
            raise ValueError(f'num_classes must be >= 2 (or 0 for a feature extractor), got {num_classes!r}.')
        device = self.fc1.weight.device
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes).to(device)

    @property
    def centers(self) -> Optional[torch.Tensor]:
        """The class centers the logits measure distance to, or None for a linear head."""
        return self.classifier.mu if isinstance(self.classifier, CenterClassifier) else None

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        z = self.fc1(self.drop(x))  # (N, feature_dim)
        return z if pre_logits else self.classifier(z)


class PrunedHead(nn.Module):
    """What ``prune_intermediate_layers`` leaves of an :class:`MMHead`: no parameters, features pass through."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg  # kept so model_args() still describes the head the weights came from
        self.classifier = nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x


def drop_head(model: nn.Module, width: int) -> None:
    """Replace ``model.head`` (an :class:`MMHead`) by a :class:`PrunedHead`: the model then outputs ``width`` features.

    Shared by the models' ``prune_intermediate_layers``: timm's contract is ``num_classes`` 0 and ``num_features`` /
    ``head_hidden_size`` the width of the last map kept.
    """
    model.head = PrunedHead(model.head.cfg)
    model.num_classes = 0
    model.num_features = model.head_hidden_size = width
