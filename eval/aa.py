"""AutoAttack (Croce & Hein, ICML 2020) through the ``pyautoattack`` package, made safe for MM heads.

Max-Mahalanobis logits ``h_i = -||z - mu_i||^2 / 2`` have margins of ~100-200. Cross-entropy on them saturates: the
softmax of every wrong class underflows, so the input gradient of APGD-CE is *exactly* zero in float32 and APGD-CE
silently does nothing (AutoAttack only checks for zero gradients on its DLR losses). Multiplying the logits by a
positive constant changes neither the prediction nor the (scale-invariant) DLR losses, but brings CE back into its
working range. :func:`timm_mmc.choose_logit_scale` picks the constant from the clean margins;
:class:`timm_mmc.ScaledLogits` applies it (both in :mod:`timm_mmc.attacks`, for AutoAttack and RobustBench users
outside this evaluation too; re-exported here).

``pyautoattack`` API notes: keyword-only constructor arguments, ``attacks=`` only with ``version='custom'``,
``run_standard_evaluation(x, y, batch_size=...)`` returns ``(x_adv, y_adv)``, and messages (including its warnings:
randomised or dynamic defense, zero gradients, Square beating APGD) go to the ``auto-attack`` logger, which is silent
unless configured. :func:`run_autoattack` captures them for the report.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
import torch.nn as nn

from timm_mmc import ScaledLogits, check_linf_batch, choose_logit_scale, predict

if TYPE_CHECKING:
    from pyautoattack import AutoAttack

__all__ = ['AA_VERSIONS', 'ScaledLogits', 'choose_logit_scale', 'run_autoattack', 'resolved_budget', 'AAOutcome']

AA_VERSIONS = ('standard', 'rand', 'fast')


@dataclass
class AAOutcome:
    """What :func:`run_autoattack` returns.

    Attributes:
        x_adv: AutoAttack's adversarial examples (clean images where it found none).
        robust: Per sample, whether the model still classifies ``x_adv`` correctly.
        attacks: The attacks AutoAttack ran, in order.
        log: AutoAttack's own log lines (DEBUG and up).
        warnings: AutoAttack's warnings (logger WARNING records and Python warnings).
    """
    x_adv: torch.Tensor
    robust: torch.Tensor
    attacks: List[str]
    log: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []
        self.warnings: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.lines.append(f'{record.levelname}: {msg}')
        if record.levelno >= logging.WARNING:
            self.warnings.append(msg)


def _set_iters(attack, n_iter: int) -> None:
    """Change an APGD attack's iteration count after construction (its schedule is derived in ``__init__``)."""
    attack.n_iter = attack.n_iter_orig = n_iter
    attack.n_iter_2 = max(int(0.22 * n_iter), 1)
    attack.n_iter_min = max(int(0.06 * n_iter), 1)
    attack.size_decr = max(int(0.03 * n_iter), 1)


def _configure(model: nn.Module, eps: float, version: str, seed: int, device: torch.device, n_iter: Optional[int],
               n_target_classes: Optional[int], num_classes: Optional[int],
               attacks: Optional[List[str]]) -> AutoAttack:
    """The ``AutoAttack`` object :func:`run_autoattack` runs (arguments as there)."""
    from pyautoattack import AutoAttack
    if version == 'custom':
        if not attacks:
            raise ValueError("version='custom' needs attacks=[...], e.g. ['apgd-ce'].")
    elif attacks is not None:
        raise ValueError(f"attacks= only goes with version='custom' (got version={version!r}).")
    elif version not in AA_VERSIONS:
        raise ValueError(f'unknown AutoAttack version {version!r}; choose one of {AA_VERSIONS}.')
    if version == 'custom':
        aa = AutoAttack(model, norm='Linf', eps=eps, version='custom', attacks=list(attacks), seed=seed,
                        device=device)
        aa.apgd.n_restarts = 1
    elif version == 'fast':
        aa = AutoAttack(model, norm='Linf', eps=eps, version='custom', attacks=['apgd-ce', 'apgd-t'], seed=seed,
                        device=device)
        aa.apgd.n_restarts = 1
        aa.apgd_targeted.n_restarts = 1
        aa.apgd_targeted.n_target_classes = 3 if n_target_classes is None else n_target_classes
    else:
        aa = AutoAttack(model, norm='Linf', eps=eps, version=version, seed=seed, device=device)
        if n_target_classes is not None:
            aa.apgd_targeted.n_target_classes = n_target_classes
            aa.fab.n_target_classes = n_target_classes
    if num_classes is not None:
        aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, num_classes - 1)
        aa.fab.n_target_classes = min(aa.fab.n_target_classes, num_classes - 1)
    if n_iter is not None:
        _set_iters(aa.apgd, n_iter)
        _set_iters(aa.apgd_targeted, n_iter)
    return aa


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, version: str = 'standard',
                   seed: int = 0, batch_size: int = 250, n_iter: Optional[int] = None,
                   n_target_classes: Optional[int] = None, num_classes: Optional[int] = None,
                   attacks: Optional[List[str]] = None) -> AAOutcome:
    """Run AutoAttack (Linf) and check its output.

    Args:
        model: Maps [0, 1] images to logits; pass a :class:`ScaledLogits` for MM heads.
        x: Images in [0, 1].
        y: Labels.
        eps: Linf radius in pixel units.
        version: ``standard`` (APGD-CE, APGD-T, FAB-T, Square), ``rand`` (APGD-CE and APGD-DLR with EOT), or
            ``fast`` (custom: APGD-CE with one restart and APGD-T, a CPU budget).
        seed: AutoAttack's seed.
        batch_size: AutoAttack's batch size.
        n_iter: APGD iterations (default 100, AutoAttack's).
        n_target_classes: APGD-T target classes (default 9 for ``standard``, 3 for ``fast``); capped at C - 1.
        num_classes: Classes of the model (caps the target classes).
        attacks: With ``version='custom'``, the AutoAttack attacks to run (e.g. ``['apgd-ce']``).

    Raises:
        ValueError: Unknown version.
        CheckError: AutoAttack returned points outside the eps-ball or [0, 1].
    """
    aa = _configure(model, eps, version, seed, x.device, n_iter, n_target_classes, num_classes, attacks)
    logger = logging.getLogger('auto-attack')
    handler = _Capture()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    x_adv = x_adv.detach()
    check_linf_batch(x_adv, x, eps)
    robust = predict(model, x_adv, batch_size) == y
    found = handler.warnings + [str(w.message) for w in caught]
    return AAOutcome(x_adv, robust, list(aa.attacks_to_run), handler.lines, found)


def resolved_budget(version: str, n_iter: Optional[int] = None, n_target_classes: Optional[int] = None,
                    num_classes: Optional[int] = None) -> Tuple[int, Optional[int]]:
    """The APGD iterations and APGD-T target classes :func:`run_autoattack` runs with these arguments, AutoAttack's own
    defaults filled in: ``--aa-n-iter 100`` is no change from none. Built, not run (AutoAttack's constructor only
    stores the model).

    Args:
        version: As :func:`run_autoattack` takes it (not ``custom``).
        n_iter: As :func:`run_autoattack` takes it.
        n_target_classes: As :func:`run_autoattack` takes it.
        num_classes: As :func:`run_autoattack` takes it.

    Returns:
        ``(APGD iterations, APGD-T target classes)``; the classes are None where no targeted attack runs (``rand``).
    """
    aa = _configure(nn.Identity(), 8 / 255, version, 0, torch.device('cpu'), n_iter, n_target_classes, num_classes,
                    None)
    targeted = {'apgd-t', 'fab-t'} & set(aa.attacks_to_run)
    return aa.apgd.n_iter, aa.apgd_targeted.n_target_classes if targeted else None
