"""Carlini & Wagner L2 attack (IEEE S&P 2017): minimal L2 distortion, in [0, 1] pixel space.

The image is re-parameterised as ``x' = (tanh(w) + 1) / 2`` so the box constraint holds by construction; Adam
minimises ``||x' - x||^2 + c * f(x')`` with ``f`` the hinge on the logit margin, and a binary search over ``c`` per
sample finds the smallest distortion that still fools the model. The distance is measured to the original ``x``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from timm_mmc import BestAdversarial, adam_update, is_fooled, logit_margin, resolve_targets

__all__ = ['CWL2', 'CWResult']


@dataclass
class CWResult:
    """Per-sample output of :meth:`CWL2.perturb`.

    Attributes:
        x_adv: The smallest-distortion adversarial example found (``x`` itself where the attack failed).
        l2: Its L2 distance to ``x`` (``inf`` where the attack failed).
        success: Whether an adversarial example was found.
    """
    x_adv: torch.Tensor
    l2: torch.Tensor
    success: torch.Tensor


class CWL2:
    """Carlini-Wagner L2, configured once.

    Args:
        model: Maps images in [0, 1] to logits.
        targeted: Attack towards a target class (given to :meth:`perturb`, or random != y).
        num_classes: Needed for random targets.
        binary_steps: Binary-search steps over the constant ``c``.
        max_iter: Adam iterations per binary-search step.
        lr: Adam learning rate.
        initial_const: Starting ``c``.
        confidence: Required logit margin ``kappa``.
        abort_early: Stop a sample's binary-search step when its loss has not fallen by 0.01% over
            ``max_iter // 10`` iterations (per sample; the samples are independent, so this only saves time).
        seed: Seed of the random targets.
    """

    def __init__(self, model: nn.Module, targeted: bool = False, num_classes: Optional[int] = None,
                 binary_steps: int = 9, max_iter: int = 1000, lr: float = 5e-3, initial_const: float = 0.01,
                 confidence: float = 0.0, abort_early: bool = True, seed: int = 0) -> None:
        if binary_steps < 1 or max_iter < 1 or lr <= 0 or initial_const <= 0 or confidence < 0:
            raise ValueError('C&W needs binary_steps >= 1, max_iter >= 1, lr > 0, initial_const > 0, '
                             'confidence >= 0.')
        self.model = model
        self.targeted = targeted
        self.num_classes = num_classes
        self.binary_steps, self.max_iter, self.lr = binary_steps, max_iter, lr
        self.initial_const, self.confidence, self.abort_early = initial_const, confidence, abort_early
        self.generator = torch.Generator().manual_seed(seed)
        self.iterations_run = 0  # Adam steps taken in the last call (all binary steps)
        self.sample_iterations = 0  # Adam steps summed over samples (the cost: one input gradient each)

    def _hinge(self, logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        """``max(0, confidence - margin)``: zero once the logit margin towards success reaches ``confidence``."""
        return (self.confidence - logit_margin(logits, y, target)).clamp_min(0)

    def _success(self, logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        if self.confidence == 0:
            return is_fooled(logits.argmax(1), y, target)
        return self._hinge(logits, y, target) <= 0

    def perturb(self, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> CWResult:
        """Minimal-distortion adversarial examples for ``(x, y)``, ``x`` in [0, 1]."""
        x = x.detach().float()
        n = x.shape[0]
        target = resolve_targets(self.targeted, target, y, self.num_classes, self.generator, 'C&W')
        dims = tuple(range(1, x.dim()))
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), 1e10, device=x.device)
        const = torch.full((n,), self.initial_const, device=x.device)
        best = BestAdversarial(x)  # the fooling iterate of smallest L2 per sample (its score)
        self.iterations_run = 0
        self.sample_iterations = 0
        check_every = max(1, self.max_iter // 10)
        for _ in range(self.binary_steps):
            modifier = torch.zeros_like(x)
            adam_m = torch.zeros_like(x)  # Adam moments, per element (so per sample: rows never interact)
            adam_v = torch.zeros_like(x)
            step_success = torch.zeros(n, dtype=torch.bool, device=x.device)
            prev = torch.full((n,), math.inf, device=x.device)
            active = torch.arange(n, device=x.device)  # samples still optimising in this binary step
            for it in range(self.max_iter):
                if active.numel() == 0:
                    break
                mod_a = modifier[active].requires_grad_(True)
                x_new = (torch.tanh(w0[active] + mod_a) + 1) / 2
                logits = self.model(x_new).float()
                dist_sq = (x_new - x[active]).pow(2).sum(dims)
                ya = y[active]
                ta = None if target is None else target[active]
                loss = dist_sq + const[active] * self._hinge(logits, ya, ta)
                (grad,) = torch.autograd.grad(loss.sum(), mod_a)
                self.iterations_run += 1
                self.sample_iterations += active.numel()
                with torch.no_grad():
                    fooled = self._success(logits, ya, ta)
                    best.update(x_new, fooled, score=dist_sq.sqrt(), rows=active)
                    step_success[active[fooled]] = True
                    # Adam on the active rows only; the others stay where they stopped
                    step, adam_m[active], adam_v[active] = adam_update(grad, adam_m[active], adam_v[active], it + 1,
                                                                       self.lr)
                    modifier[active] = mod_a.detach() - step
                if self.abort_early and it % check_every == 0:
                    # per sample: stop when the loss has not fallen by 0.01% over the last max_iter // 10 steps
                    # (checked at iterations 0, k, 2k, ... as Carlini & Wagner's code does)
                    with torch.no_grad():
                        cur = loss.detach()
                        stalled = cur > prev[active] * 0.9999
                        prev[active] = cur
                        active = active[~stalled]
            with torch.no_grad():  # binary search on c, per sample
                upper = torch.where(step_success, torch.minimum(upper, const), upper)
                lower = torch.where(step_success, lower, torch.maximum(lower, const))
                bounded = upper < 1e9
                const = torch.where(bounded, (lower + upper) / 2, const * 10)
        return CWResult(best.x, best.score, best.found)
