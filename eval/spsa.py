"""SPSA (Uesato et al., "Adversarial Risk and the Dangers of Evaluating Against Weak Attacks", ICML 2018).

A gradient-free Linf attack: the gradient of the margin objective is estimated from ``n_samples`` forward passes at
``x +- delta * v`` with Rademacher ``v`` (``n_samples / 2`` antithetic pairs), then Adam takes a step and the iterate
is projected back to the eps-ball and to [0, 1]. It needs no gradient of the model, so it is blind to gradient
masking: SPSA beating white-box PGD is a red flag.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from timm_mmc import (BestAdversarial, adam_update, check_eps, check_linf_batch, objective,
                      project_linf, resolve_targets, uniform_start)

__all__ = ['SPSA']


class SPSA:
    """SPSA with Adam, batched over images, configured once.

    Args:
        model: Maps images in [0, 1] to logits.
        eps: Linf radius in pixel units.
        steps: Iterations.
        n_samples: Function evaluations per iteration and image (even: ``n_samples / 2`` +- pairs).
        delta: Finite-difference step.
        lr: Adam learning rate.
        targeted: Attack towards a target class.
        num_classes: Needed for random targets.
        random_start: Start from a uniform point in the ball.
        loss: Objective name in :data:`timm_mmc.attacks.OBJECTIVES` (maximised); ``margin`` by default.
        max_forward: Largest batch of probe images sent through the model at once.
        seed: Seed of the probes, random start and random targets.
        check: Verify every returned batch lies in the ball and in [0, 1].
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 10, n_samples: int = 128,
                 delta: float = 0.01, lr: float = 0.01, targeted: bool = False, num_classes: Optional[int] = None,
                 random_start: bool = True, loss: str = 'margin', max_forward: int = 2048, seed: int = 0,
                 check: bool = True) -> None:
        check_eps(eps)
        if n_samples < 2 or n_samples % 2:
            raise ValueError(f'n_samples must be even and >= 2 (got {n_samples}).')
        self.model = model
        self.eps, self.steps, self.n_samples, self.delta, self.lr = float(eps), steps, n_samples, delta, lr
        self.targeted, self.num_classes, self.random_start = targeted, num_classes, random_start
        self.loss_fn = objective(loss)
        self.max_forward = max_forward
        self.check = check
        self.generator = torch.Generator().manual_seed(seed)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        out = []
        for i in range(0, x.shape[0], self.max_forward):
            xi = x[i:i + self.max_forward]
            yi = y[i:i + self.max_forward]
            ti = None if target is None else target[i:i + self.max_forward]
            out.append(self.loss_fn(self.model(xi).float(), yi, ti))
        return torch.cat(out)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Adversarial examples for ``(x, y)``; per sample the first misclassified iterate (the target or not), else
        the last."""
        x = x.detach().float()
        target = resolve_targets(self.targeted, target, y, self.num_classes, self.generator, 'SPSA')
        if self.eps == 0:
            return x.clone()
        n, shape = x.shape[0], x.shape[1:]
        x_adv = uniform_start(x, self.eps, self.generator) if self.random_start else x.clone()
        m = torch.zeros_like(x)
        v = torch.zeros_like(x)
        best = BestAdversarial(x_adv)
        half = self.n_samples // 2
        rep_y = y.repeat_interleave(2 * half)
        rep_t = None if target is None else target.repeat_interleave(2 * half)
        for step in range(1, self.steps + 1):
            best.update(x_adv, self.model(x_adv).argmax(1) != y)  # any wrong class, targeted or not
            signs = torch.randint(0, 2, (n, half, *shape), generator=self.generator).to(x.device).float() * 2 - 1
            probes = torch.cat([x_adv[:, None] + self.delta * signs, x_adv[:, None] - self.delta * signs], 1)
            losses = self._loss(probes.flatten(0, 1), rep_y, rep_t).view(n, 2 * half)
            diff = (losses[:, :half] - losses[:, half:]) / (2 * self.delta)  # (n, half)
            grad = (diff.view(n, half, *([1] * len(shape))) * signs).mean(1)  # ascent direction estimate
            delta, m, v = adam_update(grad, m, v, step, self.lr)
            x_adv = x_adv + delta
            x_adv = project_linf(x_adv, x, self.eps)
        x_adv = best.finish(x_adv, self.model(x_adv).argmax(1) != y)
        if self.check:
            check_linf_batch(x_adv, x, self.eps)
        return x_adv
