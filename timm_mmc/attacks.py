"""White-box Linf attacks in [0, 1] pixel space, shared by adversarial training and :mod:`eval`.

Objectives are per-sample and *maximised* by the attacker. For Max-Mahalanobis heads the logits are
``h_i = -||z - mu_i||^2 / 2``, so the authors' adaptive objectives (Pang et al., ICLR 2020, section 5) are read off
the logits: untargeted, push ``z`` away from ``mu_y`` (maximise ``-h_y``); targeted, pull ``z`` to ``mu_t``
(maximise ``h_t``). Cross-entropy on these logits saturates (margins of ~100 give exactly zero gradients in float32)
so it must never be the only objective; ``margin`` (Carlini & Wagner's logit margin) works for every head.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['OBJECTIVES', 'objective', 'PGD', 'FGSMRandomStart', 'check_linf_batch', 'random_targets',
           'resolve_targets']

Objective = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit over the classes other than ``cls``, per sample."""
    masked = logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), float('-inf'))
    return masked.max(1).values


def _ce(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(logits, y, reduction='none')
    return -F.cross_entropy(logits, target, reduction='none')


def _mm(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    if target is None:
        return -logits.gather(1, y[:, None]).squeeze(1)  # ||z - mu_y||^2 / 2, grow it
    return logits.gather(1, target[:, None]).squeeze(1)  # -||z - mu_t||^2 / 2, grow it (shrink the distance)


def _margin(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    if target is None:
        return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)
    return logits.gather(1, target[:, None]).squeeze(1) - _other_max(logits, target)


OBJECTIVES: Dict[str, Objective] = {'ce': _ce, 'mm': _mm, 'margin': _margin}


def objective(name: str) -> Objective:
    """Per-sample attack objective by name (``ce``, ``mm``, ``margin``)."""
    if name not in OBJECTIVES:
        raise ValueError(f'unknown attack objective {name!r}; choose one of {tuple(OBJECTIVES)}.')
    return OBJECTIVES[name]


def random_targets(y: torch.Tensor, num_classes: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A uniformly random class different from ``y`` for every sample."""
    offset = torch.randint(1, num_classes, y.shape, generator=generator, device='cpu').to(y.device)
    return (y + offset) % num_classes


def resolve_targets(targeted: bool, target: Optional[torch.Tensor], y: torch.Tensor, num_classes: Optional[int],
                    generator: torch.Generator, attack: str) -> Optional[torch.Tensor]:
    """The targets an attack uses: None when untargeted, else ``target`` or seeded random classes != y."""
    if not targeted:
        return None
    if target is None:
        if num_classes is None:
            raise ValueError(f'a targeted {attack} without explicit targets needs num_classes.')
        target = random_targets(y, num_classes, generator)
    return target


def check_linf_batch(x_adv: torch.Tensor, x: torch.Tensor, eps: float, tol: float = 1e-5) -> None:
    """Raise if an adversarial batch leaves the Linf ball of radius ``eps`` around ``x`` or the box [0, 1]."""
    if x_adv.shape != x.shape:
        raise RuntimeError(f'adversarial batch has shape {tuple(x_adv.shape)}, clean batch {tuple(x.shape)}.')
    if not torch.isfinite(x_adv).all():
        raise RuntimeError('adversarial batch holds NaN or inf.')
    dist = (x_adv.float() - x.float()).abs().amax().item() if x.numel() else 0.0
    if dist > eps + tol:
        raise RuntimeError(f'adversarial batch leaves the eps-ball: max |x_adv - x| = {dist:.6g} > eps = {eps:.6g}.')
    lo, hi = x_adv.min().item(), x_adv.max().item()
    if lo < -tol or hi > 1 + tol:
        raise RuntimeError(f'adversarial batch leaves [0, 1]: min {lo:.6g}, max {hi:.6g}.')


def _check_eps(eps: float, alpha: float, steps: int) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 <= eps <= 1):
        raise ValueError(f'eps must lie in [0, 1] in pixel units (got {eps!r}); 8/255 is {8 / 255:.5f}.')
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f'step size must be > 0 (got {alpha!r}); the paper uses 2/255.')
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f'steps must be an int >= 1 (got {steps!r}).')


class PGD:
    """Projected gradient descent in the Linf ball (Madry et al., ICLR 2018), configured once.

    Args:
        model: Maps images in [0, 1] to logits.
        eps: Radius in pixel units (8/255 = 0.0314).
        alpha: Step size.
        steps: Number of gradient steps.
        loss: Objective name in :data:`OBJECTIVES`.
        random_start: Start from a uniform point in the ball.
        targeted: Attack towards ``target`` (given to :meth:`perturb`, or random targets != y).
        num_classes: Needed for random targets.
        keep_best: Return, per sample, the first iterate that fools the model (else the last iterate). Evaluation
            wants this; training does not.
        seed: Seed of the random start and random targets.
        check: Verify every returned batch lies in the ball and in [0, 1].
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
                 loss: str = 'margin', random_start: bool = True, targeted: bool = False,
                 num_classes: Optional[int] = None, keep_best: bool = True, seed: int = 0, check: bool = True) -> None:
        _check_eps(eps, alpha, steps)
        self.model = model
        self.eps, self.alpha, self.steps = float(eps), float(alpha), steps
        self.loss_name = loss
        self.loss_fn = objective(loss)
        self.random_start = random_start
        self.targeted = targeted
        self.num_classes = num_classes
        self.keep_best = keep_best
        self.check = check
        self.generator = torch.Generator().manual_seed(seed)
        self.last_zero_grad_fraction = 0.0  # share of samples whose input gradient was exactly zero at step 1

    def _fooled(self, logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y

    def perturb(self, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Adversarial examples for the batch ``(x, y)`` (``x`` in [0, 1])."""
        x = x.detach()
        target = resolve_targets(self.targeted, target, y, self.num_classes, self.generator, 'PGD')
        if self.eps == 0:
            return x.clone()
        if self.random_start:
            noise = torch.rand(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
            x_adv = (x + (2 * noise - 1) * self.eps).clamp(0, 1)
        else:
            x_adv = x.clone()
        best = x_adv.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for step in range(self.steps):
            x_adv.requires_grad_(True)
            logits = self.model(x_adv)
            if self.keep_best:
                fooled = self._fooled(logits.detach(), y, target) & ~done
                best[fooled] = x_adv.detach()[fooled]
                done |= fooled
            losses = self.loss_fn(logits.float(), y, target)
            (grad,) = torch.autograd.grad(losses.sum(), x_adv)
            if step == 0:
                self.last_zero_grad_fraction = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
            with torch.no_grad():
                x_adv = x_adv.detach() + self.alpha * grad.sign()
                x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)
        if self.keep_best:
            with torch.no_grad():
                last_fooled = self._fooled(self.model(x_adv), y, target)
            keep_last = ~done | last_fooled  # fooled at the end, or never fooled before: keep the last iterate
            best[keep_last] = x_adv[keep_last]
            x_adv = best
        x_adv = x_adv.detach()
        if self.check:
            check_linf_batch(x_adv, x, self.eps)
        return x_adv


class FGSMRandomStart(PGD):
    """FGSM from a random start with step ``1.25 eps``.

    Wong, Rice and Kolter, "Fast is better than free: revisiting adversarial training", ICLR 2020.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, loss: str = 'ce', targeted: bool = False,
                 num_classes: Optional[int] = None, seed: int = 0, alpha_ratio: float = 1.25) -> None:
        super().__init__(model, eps=eps, alpha=alpha_ratio * eps if eps > 0 else 1.0, steps=1, loss=loss,
                         random_start=True, targeted=targeted, num_classes=num_classes, keep_best=False, seed=seed)
