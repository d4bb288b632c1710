"""Training objectives, all taking ``(logits, target, features)`` and returning a scalar mean.

* ``sce``: softmax cross-entropy (optional label smoothing).
* ``mmlda``: cross-entropy on the MM distance logits (Pang et al., ICML 2018).
* ``mmc``: ``-h_y = ||z - mu_y||^2 / 2``, no softmax (Pang et al., ICLR 2020, eq. 6; the paper writes the 1/2).
* ``center``: SCE + ``lambda * ||z - c_y||^2 / 2`` with trainable centers (Wen et al., ECCV 2016).
* ``lgm``: L-GM (Wan et al., CVPR 2018): CE with the true-class distance enlarged by ``(1 + alpha)``, plus
  ``lambda`` times the likelihood term ``||z - mu_y||^2 / 2``.

``build_loss(name, ...)`` makes one by name; ``default_loss_for_head(head)`` is the loss a head is meant for.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .heads import head_spec

__all__ = ['LOSSES', 'build_loss', 'default_loss_for_head', 'SCELoss', 'MMCLoss', 'CenterLoss', 'LGMLoss']


class SCELoss(nn.Module):
    """Softmax cross-entropy; also the MMLDA loss when fed MM distance logits."""
    needs_features = False

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, features: Optional[torch.Tensor] = None):
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)


class MMCLoss(nn.Module):
    """``mean(-h_y)``: the squared distance to the true center (halved). Logits must be MM distance logits."""
    needs_features = False

    def forward(self, logits: torch.Tensor, target: torch.Tensor, features: Optional[torch.Tensor] = None):
        return -logits.float().gather(1, target[:, None]).mean()


class CenterLoss(nn.Module):
    """SCE plus ``lambda_c * ||z - c_y||^2 / 2`` with trainable centers ``c`` (give them to the optimiser)."""
    needs_features = True

    def __init__(self, num_classes: int, feature_dim: int, lambda_c: float = 0.01) -> None:
        super().__init__()
        self.lambda_c = lambda_c
        self.centers = nn.Parameter(torch.zeros(num_classes, feature_dim))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, features: Optional[torch.Tensor] = None):
        if features is None:
            raise ValueError('center loss needs the features z: call it with features=model pre-logits.')
        ce = F.cross_entropy(logits.float(), target)
        pull = (features.float() - self.centers[target]).pow(2).sum(1).mean() / 2
        return ce + self.lambda_c * pull


class LGMLoss(nn.Module):
    """L-GM on distance logits ``h = -d / 2``: margin ``h_y -> (1 + alpha) h_y`` in CE, plus ``lambda * d_y / 2``."""
    needs_features = False

    def __init__(self, alpha: float = 0.1, lambda_lkd: float = 0.01) -> None:
        super().__init__()
        self.alpha = alpha
        self.lambda_lkd = lambda_lkd

    def forward(self, logits: torch.Tensor, target: torch.Tensor, features: Optional[torch.Tensor] = None):
        logits = logits.float()
        onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        margin_logits = logits * (1.0 + self.alpha * onehot)  # h_y is <= 0, so this lowers it
        likelihood = -logits.gather(1, target[:, None]).mean()
        return F.cross_entropy(margin_logits, target) + self.lambda_lkd * likelihood


def _sce(num_classes: int, feature_dim: int, label_smoothing: float = 0.0, **_: float) -> nn.Module:
    return SCELoss(label_smoothing)


def _mmlda(num_classes: int, feature_dim: int, **_: float) -> nn.Module:
    return SCELoss()


def _mmc(num_classes: int, feature_dim: int, **_: float) -> nn.Module:
    return MMCLoss()


def _center(num_classes: int, feature_dim: int, lambda_c: float = 0.01, **_: float) -> nn.Module:
    return CenterLoss(num_classes, feature_dim, lambda_c)


def _lgm(num_classes: int, feature_dim: int, alpha: float = 0.1, lambda_lkd: float = 0.01, **_: float) -> nn.Module:
    return LGMLoss(alpha, lambda_lkd)


LOSSES: Dict[str, Callable[..., nn.Module]] = {
    'sce': _sce, 'mmlda': _mmlda, 'mmc': _mmc, 'center': _center, 'lgm': _lgm}

# which head each loss expects its logits from
LOSS_HEADS = {'sce': ('linear',), 'center': ('linear',), 'mmlda': ('mmc', 'mmlda'), 'mmc': ('mmc', 'mmlda'),
              'lgm': ('lgm',)}


def default_loss_for_head(head: str) -> str:
    """The objective a head kind is trained with unless told otherwise (from :data:`timm_mmc.heads.HEADS`)."""
    return head_spec(head).loss


def build_loss(name: str, num_classes: int, feature_dim: int, head: Optional[str] = None, **kwargs: float) -> nn.Module:
    """Make a loss by name.

    Args:
        name: One of :data:`LOSSES`.
        num_classes: Number of classes (center loss sizes its centers with it).
        feature_dim: Width of the feature ``z``.
        head: The model's head kind; if given, the pairing is checked (e.g. ``mmc`` needs distance logits).
        **kwargs: Loss hyper-parameters (``label_smoothing``, ``lambda_c``, ``alpha``, ``lambda_lkd``).
    """
    if name not in LOSSES:
        raise ValueError(f'unknown loss {name!r}; choose one of {tuple(LOSSES)}.')
    if head is not None and head not in LOSS_HEADS[name]:
        raise ValueError(f'loss {name!r} needs a model with head in {LOSS_HEADS[name]}, but the model has head '
                         f'{head!r}; pick a matching model (e.g. '
                         f'resnet32_{LOSS_HEADS[name][0].replace("linear", "sce")}) or leave the loss at its default.')
    return LOSSES[name](num_classes, feature_dim, **kwargs)
