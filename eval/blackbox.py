"""Momentum iterative method (Dong et al., CVPR 2018) and the transfer (black-box) setting.

Adversarial examples are crafted on a *source* model with white-box PGD or MIM and evaluated on the target. They lie
in the target's threat model (same eps, same [0, 1] box) so they count towards the per-sample worst case.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from timm_mmc import check_eps, check_linf_batch, objective, project_linf, resolve_targets

__all__ = ['MIM']


class MIM:
    """Linf momentum iterative method, configured once.

    Args:
        model: The model the gradients come from (the source model in a transfer attack).
        eps: Linf radius in pixel units.
        steps: Iterations.
        alpha: Step size; ``eps / steps`` when None (the MIM paper's choice).
        decay: Momentum decay ``mu``.
        loss: Objective name in :data:`timm_mmc.attacks.OBJECTIVES` (maximised).
        targeted: Attack towards a target class.
        num_classes: Needed for random targets.
        seed: Seed of the random targets.
        check: Verify every returned batch lies in the ball and in [0, 1].
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 10, alpha: Optional[float] = None,
                 decay: float = 1.0, loss: str = 'ce', targeted: bool = False, num_classes: Optional[int] = None,
                 seed: int = 0, check: bool = True) -> None:
        check_eps(eps)
        self.model = model
        self.eps, self.steps = float(eps), steps
        self.alpha = float(alpha) if alpha is not None else self.eps / steps
        self.decay = decay
        self.loss_fn = objective(loss)
        self.targeted, self.num_classes, self.check = targeted, num_classes, check
        self.generator = torch.Generator().manual_seed(seed)

    def perturb(self, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Adversarial examples for ``(x, y)`` (the last iterate, as MIM transfers best that way)."""
        x = x.detach()
        target = resolve_targets(self.targeted, target, y, self.num_classes, self.generator, 'MIM')
        x_adv = x.clone()
        g = torch.zeros_like(x)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            losses = self.loss_fn(self.model(x_adv).float(), y, target)
            (grad,) = torch.autograd.grad(losses.sum(), x_adv)
            with torch.no_grad():
                norm = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
                g = self.decay * g + grad / norm
                x_adv = project_linf(x_adv.detach() + self.alpha * g.sign(), x, self.eps)
        x_adv = x_adv.detach()
        if self.check:
            check_linf_batch(x_adv, x, self.eps)
        return x_adv
