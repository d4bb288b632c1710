"""Adversarial training's parts: the inner attack, robust accuracy during training, and which epoch is exported.

* :func:`training_attack`: the inner attack a run asks for (``pgd``, ``fgsm``, ``nfgsm``) on the head's objective.
* :func:`pgd_accuracy`: clean and PGD-10 accuracy (worst case over objectives) of a model on uint8 images, sharded
  over processes.
* :func:`best_epoch`: the (epoch, weights) with the best accuracy on the held-out training images, robust (adversarial
  training) or clean (standard training), or the latest within a tolerance of it, read off the run's per-epoch
  records, so that a resumed run picks exactly what an uncut one would.
* :func:`ema_beats_last`: without ``--select-best``, whether the weight average or the last weights are exported.
* :func:`collapse_warning`: the line the log prints when robust accuracy falls far below its best (catastrophic
  overfitting, Wong et al. 2020; robust overfitting, Rice et al. 2020).

Accuracy chosen on during training is never measured on the test split: ``--holdout N`` sets N training images aside
(:func:`timm_mmc.data.hold_out`), and ``--select-best`` exports the best epoch on them (``--select-on``).
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .attacks import NFGSM, PGD, FGSMRandomStart
from .config import SELECT_ON, TrainConfig
from .runfolder import EpochRecord

__all__ = ['training_attack', 'pgd_accuracy', 'robust_objectives', 'BestEpoch', 'best_epoch', 'selection_rule',
           'collapse_warning', 'COLLAPSE_DROP', 'ROBUST_EVAL', 'SELECT_ON']

ROBUST_EVAL = dict(eps=8 / 255, alpha=2 / 255, steps=10)  # the PGD-10 of the paper's tables, untargeted, keep-best
COLLAPSE_DROP = 0.10  # robust accuracy this far (absolute) below its best so far marks a collapse in the log

Attack = Union[PGD, NFGSM]


def training_attack(cfg: TrainConfig, model: nn.Module, objective: str, targeted: bool, num_classes: int,
                    seed: int) -> Attack:
    """The inner attack of adversarial training that ``cfg.adv`` names, on the head's own ``objective``."""
    common = dict(loss=objective, targeted=targeted, num_classes=num_classes, seed=seed)
    if cfg.adv == 'pgd':
        return PGD(model, eps=cfg.eps, alpha=cfg.adv_step, steps=cfg.adv_steps, keep_best=False, **common)
    if cfg.adv == 'nfgsm':
        return NFGSM(model, eps=cfg.eps, noise=cfg.adv_noise, **common)
    if cfg.adv == 'fgsm':
        return FGSMRandomStart(model, eps=cfg.eps, **common)
    raise ValueError(f'no inner attack for --adv {cfg.adv!r}.')


def robust_objectives(own: str) -> Tuple[str, ...]:
    """The objectives :func:`pgd_accuracy` takes the worst of: the head's own (``HeadSpec.objective``), then the
    logit margin (the own one alone can be blunt: for MM heads ``margin`` finds errors that ``mm`` misses)."""
    return tuple(dict.fromkeys((own, 'margin')))


def pgd_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, objectives: Sequence[str], seed: int,
                 autocast: Callable[[], AbstractContextManager], device: torch.device, channels_last: bool,
                 rank: int = 0, world: int = 1, batch: int = 250) -> torch.Tensor:
    """Clean and PGD-10 (:data:`ROBUST_EVAL`) correct counts of ``model`` on this process's share of ``images``.

    An image counts as robust only if it survives PGD-10 on every one of ``objectives`` (the per-sample worst case):
    the head's own objective alone can be blunt (for MM heads ``margin`` finds errors that ``mm`` misses).

    Args:
        images: ``(N, C, H, W)`` uint8; process ``rank`` of ``world`` takes every ``world``-th image.
        labels: ``(N,)`` class indices.
        objectives: Attack objectives (:data:`timm_mmc.attacks.OBJECTIVES`).

    Returns:
        ``[clean correct, robust correct, images seen]`` as a float tensor on ``device`` (sum it over processes).
    """
    was_training = model.training
    model.eval()
    idx = torch.arange(rank, len(images), world)
    counts = torch.zeros(3, device=device)
    for i in range(0, len(idx), batch):
        j = idx[i:i + batch]
        x = images[j].to(device).float().div_(255)
        y = labels[j].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            counts[0] += ok.sum()
            for objective in objectives:
                x_adv = PGD(model, loss=objective, keep_best=True, seed=seed + i, **ROBUST_EVAL).perturb(x, y)
                with torch.no_grad():
                    ok &= model(x_adv).argmax(1) == y
        counts[1] += ok.sum()
        counts[2] += len(j)
    model.train(was_training)
    return counts


@dataclass(frozen=True)
class BestEpoch:
    """The weights ``--select-best`` exports: an epoch, which weights of it, and their held-out accuracies."""
    epoch: int
    weights: str  # 'last' or 'ema'
    robust_acc: Optional[float]  # None in epochs without PGD-10 (standard training ranked on clean accuracy)
    clean_acc: float

    def to_dict(self) -> Dict[str, Any]:
        return dict(epoch=self.epoch, weights=self.weights, robust_acc=self.robust_acc, clean_acc=self.clean_acc)


def _candidates(rec: EpochRecord, on: str) -> List[BestEpoch]:
    out = []
    for weights, robust, clean in (('last', rec.robust_acc, rec.heldout_clean_acc),
                                   ('ema', rec.robust_acc_ema, rec.heldout_clean_acc_ema)):
        if clean is not None and (robust is not None or on == 'clean'):
            out.append(BestEpoch(rec.epoch, weights, robust, clean))
    return out


def best_epoch(history: List[EpochRecord], tolerance: float = 0.0, on: str = 'robust') -> Optional[BestEpoch]:
    """The (epoch, weights) ``--select-best`` exports, over every epoch and both weights.

    ``on`` names the held-out accuracy that ranks them: ``robust`` (PGD-10, ties to clean; adversarial training) or
    ``clean`` (standard training, whose weight average peaks before the end; a PGD-10 figure breaks no tie there, as
    only some epochs have one and ``--robust-every`` must not decide which weights are exported).
    With ``tolerance`` 0: the best; ties then go to the earlier epoch and the last weights. With ``tolerance`` > 0:
    the latest epoch whose ranking accuracy is within ``tolerance`` of that best (of its two weights the one with the
    better other accuracy), so that a difference the held-out sample cannot resolve does not cost what later epochs
    gain. Both rules only ever move to the newest epoch or stay, so a run can keep one ``best/`` as it goes. None when
    nothing was measured on held-out images.
    """
    if on not in SELECT_ON:
        raise ValueError(f'--select-on must be one of {SELECT_ON} (got {on!r}).')
    cands = [c for rec in history for c in _candidates(rec, on)]
    if not cands:
        return None

    def score(c: BestEpoch) -> float:
        return c.clean_acc if on == 'clean' else c.robust_acc

    def other(c: BestEpoch) -> float:
        return 0.0 if on == 'clean' else c.clean_acc

    top = max(cands, key=lambda c: (score(c), other(c)))  # max keeps the first: earlier epoch, last weights
    if tolerance <= 0:
        return top
    near = [c for c in cands if score(c) >= score(top) - tolerance - 1e-12]
    return max(near, key=lambda c: (c.epoch, other(c), score(c)))


def ema_beats_last(last: EpochRecord, heldout: bool) -> bool:
    """Whether a run without ``--select-best`` exports its weight average rather than its last weights: the better
    clean accuracy at the last epoch, on the held-out images when the run has them (then the test split chooses
    nothing), else on the test split; the last weights when either figure is missing or they tie."""
    ema, plain = (last.heldout_clean_acc_ema, last.heldout_clean_acc) if heldout else (last.test_acc_ema, last.test_acc)
    return ema is not None and plain is not None and ema > plain


def selection_rule(tolerance: float = 0.0, on: str = 'robust') -> str:
    """:func:`best_epoch`'s rule in words, for the run's summary and card."""
    metric, then = ('clean', 'the earlier epoch') if on == 'clean' else ('PGD-10', 'clean')
    if tolerance <= 0:
        return f'best {metric} accuracy on the held-out training images, then {then}'
    return (f'latest epoch within {100 * tolerance:.1f} points of the best {metric} accuracy on the held-out training '
            f'images, then {then}')


def collapse_warning(history: List[EpochRecord]) -> Optional[str]:
    """A warning when the newest epoch's robust accuracy (last weights) fell :data:`COLLAPSE_DROP` below the best
    before it, else None."""
    measured = [(h.epoch, h.robust_acc) for h in history if h.robust_acc is not None]
    if len(measured) < 2:
        return None
    (epoch, now), (peak_epoch, peak) = measured[-1], max(measured[:-1], key=lambda m: m[1])
    if now > peak - COLLAPSE_DROP:
        return None
    return (f'warning: robust accuracy collapsed in epoch {epoch}: {100 * now:.1f}% against {100 * peak:.1f}% in epoch '
            f'{peak_epoch} (catastrophic or robust overfitting). With --select-best the best epoch is still the one '
            f'exported; otherwise lower --lr, raise --adv-noise (N-FGSM) or train with --adv pgd.')
