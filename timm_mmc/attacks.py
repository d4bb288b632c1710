"""White-box Linf attacks in [0, 1] pixel space, and the pieces every attack of the project shares.

Objectives are per-sample and *maximised* by the attacker. For Max-Mahalanobis heads the logits are
``h_i = -||z - mu_i||^2 / 2``, so the authors' adaptive objectives (Pang et al., ICLR 2020, section 5) are read off
the logits: untargeted, push ``z`` away from ``mu_y`` (maximise ``-h_y``); targeted, pull ``z`` to ``mu_t``
(maximise ``h_t``). Cross-entropy on these logits saturates (margins of ~100 give exactly zero gradients in float32)
so it must never be the only objective; ``margin`` (Carlini & Wagner's logit margin) works for every head.

Shared by :class:`PGD` here and the attacks of :mod:`eval` (SPSA, MIM, C&W, AutoAttack): :func:`project_linf` (the one
Linf projection), :func:`uniform_start`, :func:`is_fooled`, :class:`BestAdversarial` (the one keep-best rule),
:func:`check_eps`, :func:`check_linf_batch`, :func:`resolve_targets`, :func:`predict`, and :class:`ScaledLogits` with
:func:`choose_logit_scale`, which make AutoAttack's APGD-CE work on MM heads.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .status import RunFailure

__all__ = ['OBJECTIVES', 'objective', 'logit_margin', 'PGD', 'FGSMRandomStart', 'NFGSM', 'CheckError',
           'check_linf_batch', 'check_box', 'check_eps', 'random_targets', 'resolve_targets', 'project_linf',
           'uniform_start', 'is_fooled', 'BestAdversarial', 'predict', 'ScaledLogits', 'choose_logit_scale',
           'adam_update']

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


def logit_margin(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Carlini & Wagner's logit margin towards success, per sample: the best other logit minus the label's
    (untargeted), or the target's logit minus the best other one (targeted). Positive once the attack succeeds."""
    if target is None:
        return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)
    return logits.gather(1, target[:, None]).squeeze(1) - _other_max(logits, target)


OBJECTIVES: Dict[str, Objective] = {'ce': _ce, 'mm': _mm, 'margin': logit_margin}


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


def is_fooled(pred: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per sample: the prediction is the target (targeted, ``target`` given) or is not the label (untargeted)."""
    return pred == target if target is not None else pred != y


def check_eps(eps: float) -> None:
    """Raise ``ValueError`` unless ``eps`` is a finite Linf radius in [0, 1] (pixel units)."""
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 <= eps <= 1):
        raise ValueError(f'eps must lie in [0, 1] in pixel units (got {eps!r}); 8/255 is {8 / 255:.5f}.')


class CheckError(RuntimeError, RunFailure):
    """A run-time invariant of an attack or an evaluation broke (an adversarial batch outside the eps-ball or [0, 1],
    robust accuracy above clean): the figures cannot be trusted, so nothing is reported (exit status 1)."""


def check_box(x_adv: torch.Tensor, tol: float = 1e-5) -> None:
    """Raise :class:`CheckError` if an adversarial batch holds NaN or inf or leaves the box [0, 1] (float tolerance)."""
    if not torch.isfinite(x_adv).all():
        raise CheckError('adversarial batch holds NaN or inf.')
    if x_adv.numel():
        lo, hi = x_adv.min().item(), x_adv.max().item()
        if lo < -tol or hi > 1 + tol:
            raise CheckError(f'adversarial batch leaves [0, 1]: min {lo:.6g}, max {hi:.6g}.')


def check_linf_batch(x_adv: torch.Tensor, x: torch.Tensor, eps: float, tol: float = 1e-5) -> None:
    """Raise :class:`CheckError` if an adversarial batch leaves the Linf ball of radius ``eps`` around ``x`` or the box
    [0, 1]."""
    if x_adv.shape != x.shape:
        raise CheckError(f'adversarial batch has shape {tuple(x_adv.shape)}, clean batch {tuple(x.shape)}.')
    check_box(x_adv, tol)
    dist = (x_adv.float() - x.float()).abs().amax().item() if x.numel() else 0.0
    if dist > eps + tol:
        raise CheckError(f'adversarial batch leaves the eps-ball: max |x_adv - x| = {dist:.6g} > eps = {eps:.6g}.')


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x_adv`` clipped to the Linf ball of radius ``eps`` around ``x``, then to the box [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def uniform_start(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A point drawn uniformly from the Linf ball around ``x`` (noise from the CPU ``generator``), clipped to [0, 1]."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return (x + (2 * noise - 1) * eps).clamp(0, 1)


def adam_update(grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, lr: float, beta1: float = 0.9,
                beta2: float = 0.999, eps: float = 1e-8) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step (Kingma & Ba 2015) as the attacks take it, elementwise, so rows (samples) never interact.

    Args:
        grad: Gradient (or estimate) of the current step.
        m: First moment before the step.
        v: Second moment before the step.
        t: Step number, from 1 (for the bias correction).
        lr: Learning rate.
        beta1: First moment decay.
        beta2: Second moment decay.
        eps: Added to the root of the second moment.

    Returns:
        ``(step, m, v)``: the step (added for ascent, subtracted for descent) and the new moments.
    """
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps), m, v


class BestAdversarial:
    """Per sample, the best adversarial example an attack has met so far: the one keep-best rule of the project.

    Without scores (PGD, SPSA) the first candidate that fools the model is kept; with scores (C&W's L2 distance) the
    fooling candidate of the smallest score. A sample that nothing fooled keeps its starting point.

    Attributes:
        x: The kept examples, ``x_start`` where nothing fooled the model.
        found: Per sample, whether a fooling candidate was kept.
        score: Per sample, the kept candidate's score (``inf`` where none, or where no scores are given).
    """

    def __init__(self, x_start: torch.Tensor) -> None:
        n = x_start.shape[0]
        self.x = x_start.detach().clone()
        self.found = torch.zeros(n, dtype=torch.bool, device=x_start.device)
        self.score = torch.full((n,), math.inf, device=x_start.device)

    def update(self, x_new: torch.Tensor, fooled: torch.Tensor, score: Optional[torch.Tensor] = None,
               rows: Optional[torch.Tensor] = None) -> None:
        """Offer candidates ``x_new`` for the samples ``rows`` (indices; all samples when None).

        Args:
            x_new: Candidates, one per row.
            fooled: Per row, whether the candidate fools the model.
            score: Per row, lower is better (None: the first fooling candidate wins).
            rows: Sample indices of the candidates.
        """
        sel = slice(None) if rows is None else rows
        better = fooled & (~self.found[sel] if score is None else score < self.score[sel])
        idx = better if rows is None else rows[better]
        self.x[idx] = x_new.detach()[better]
        self.found[idx] = True
        if score is not None:
            self.score[idx] = score[better]

    def finish(self, x_last: torch.Tensor, last_fooled: torch.Tensor) -> torch.Tensor:
        """The attack's answer: per sample the last iterate when it fools the model or nothing fooled it before,
        else the kept example."""
        keep_last = ~self.found | last_fooled
        self.x[keep_last] = x_last.detach()[keep_last]
        return self.x


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's predicted classes for ``x``, ``batch_size`` images at a time."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


class ScaledLogits(nn.Module):
    """``model(x) * scale`` with ``scale > 0``: same predictions and DLR, non-saturated cross-entropy.

    Max-Mahalanobis logits have margins of ~100-200, where the cross-entropy's input gradient is exactly zero in
    float32; AutoAttack's APGD-CE (and RobustBench, which runs AutoAttack) must see scaled logits (see
    :func:`choose_logit_scale`).
    """

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f'the logit scale must be > 0 (got {scale}).')
        self.model = model
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float() * self.scale


@torch.no_grad()
def choose_logit_scale(model: nn.Module, x: torch.Tensor, target_margin: float = 10.0, batch_size: int = 256,
                       reduce_max: Optional[Callable[[float], float]] = None) -> Tuple[float, float]:
    """A scale that brings the largest clean top-1 / top-2 logit margin down to ``target_margin``.

    A margin of 10 leaves the wrong-class softmax at ~5e-5, far above float32's underflow (CE gradients vanish from
    margins of ~90 on). Models whose margins are already below ``target_margin`` keep scale 1.

    Args:
        model: Logits in, as attacked.
        x: The clean images the scale is chosen from.
        target_margin: The largest margin after scaling.
        batch_size: Forward batch size.
        reduce_max: Maps this process's largest margin to the largest over every process of a sharded evaluation,
            so that all shards attack the same scaled model (None: one process).

    Returns:
        ``(scale, max_margin)``.
    """
    margins = []
    for i in range(0, x.shape[0], batch_size):
        top2 = model(x[i:i + batch_size]).float().topk(2, dim=1).values
        margins.append(top2[:, 0] - top2[:, 1])
    max_margin = torch.cat(margins).max().item() if margins else 0.0
    if reduce_max is not None:
        max_margin = reduce_max(max_margin)
    scale = min(1.0, target_margin / max_margin) if max_margin > 0 else 1.0
    return scale, max_margin


def _check_pgd(eps: float, alpha: float, steps: int) -> None:
    check_eps(eps)
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
        keep_best: Return, per sample, the first iterate the model misclassifies (else the last iterate); for a
            targeted attack too, as robust accuracy counts any wrong class, not only the target. Evaluation wants
            this; training does not.
        seed: Seed of the random start and random targets.
        check: Verify every returned batch lies in the ball and in [0, 1].
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
                 loss: str = 'margin', random_start: bool = True, targeted: bool = False,
                 num_classes: Optional[int] = None, keep_best: bool = True, seed: int = 0, check: bool = True) -> None:
        _check_pgd(eps, alpha, steps)
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

    def perturb(self, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Adversarial examples for the batch ``(x, y)`` (``x`` in [0, 1])."""
        x = x.detach()
        target = resolve_targets(self.targeted, target, y, self.num_classes, self.generator, 'PGD')
        if self.eps == 0:
            return x.clone()
        x_adv = uniform_start(x, self.eps, self.generator) if self.random_start else x.clone()
        best = BestAdversarial(x_adv) if self.keep_best else None
        for step in range(self.steps):
            x_adv.requires_grad_(True)
            logits = self.model(x_adv)
            if best is not None:
                best.update(x_adv, logits.detach().argmax(1) != y)  # any wrong class breaks the point
            losses = self.loss_fn(logits.float(), y, target)
            (grad,) = torch.autograd.grad(losses.sum(), x_adv)
            if step == 0:
                self.last_zero_grad_fraction = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
            with torch.no_grad():
                x_adv = project_linf(x_adv.detach() + self.alpha * grad.sign(), x, self.eps)
        if best is not None:
            with torch.no_grad():
                x_adv = best.finish(x_adv, self.model(x_adv).argmax(1) != y)
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


class NFGSM:
    """N-FGSM: one signed-gradient step from a noisy point, without projecting back to the eps-ball.

    de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez and Dokania, "Make some noise: reliable and efficient single-step
    adversarial training", NeurIPS 2022. The start is uniform in the Linf ball of radius ``noise * eps`` (they use 2),
    the step is ``step * eps`` (they use 1), and the sum is only clipped to [0, 1], so a training example may lie up to
    ``(noise + step) * eps`` from the clean image. That is the method (the noise is what keeps single-step training from
    overfitting catastrophically), so this is a training augmentation, never an evaluation attack; every batch is
    checked against that wider ball and the box.

    Args:
        model: Maps images in [0, 1] to logits.
        eps: The threat model's radius in pixel units.
        noise: Half-width of the uniform noise, in units of ``eps``.
        step: Step size, in units of ``eps``.
        loss: Objective name in :data:`OBJECTIVES`.
        targeted: Step towards random targets != y instead of away from y.
        num_classes: Needed for random targets.
        seed: Seed of the noise and the targets.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, noise: float = 2.0, step: float = 1.0,
                 loss: str = 'ce', targeted: bool = False, num_classes: Optional[int] = None, seed: int = 0) -> None:
        check_eps(eps)
        if not (math.isfinite(noise) and noise >= 0 and math.isfinite(step) and step > 0):
            raise ValueError(f'N-FGSM needs noise >= 0 and step > 0 in units of eps (got {noise!r}, {step!r}).')
        self.model = model
        self.eps, self.noise, self.step = float(eps), float(noise), float(step)
        self.loss_fn = objective(loss)
        self.targeted = targeted
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def radius(self) -> float:
        """The largest Linf distance of a training example from its clean image."""
        return (self.noise + self.step) * self.eps

    def perturb(self, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Training examples for the batch ``(x, y)`` (``x`` in [0, 1])."""
        x = x.detach()
        target = resolve_targets(self.targeted, target, y, self.num_classes, self.generator, 'N-FGSM')
        x_start = uniform_start(x, self.noise * self.eps, self.generator).requires_grad_(True)
        losses = self.loss_fn(self.model(x_start).float(), y, target)
        (grad,) = torch.autograd.grad(losses.sum(), x_start)
        with torch.no_grad():
            x_adv = (x_start.detach() + self.step * self.eps * grad.sign()).clamp_(0, 1)
        check_linf_batch(x_adv, x, self.radius)
        return x_adv
