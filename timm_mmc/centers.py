"""Max-Mahalanobis centers: fixed class means of equal norm whose minimal pairwise distance is maximal.

Pang, Du and Zhu, "Max-Mahalanobis Linear Discriminant Analysis Networks", ICML 2018 (arXiv:1802.09308).
For ``L`` classes in ``R^d`` with all centers of norm ``C``, maximising the minimal pairwise distance is the same
as minimising the maximal pairwise cosine. Three regimes:

* ``d >= L - 1``: the regular simplex is optimal, every pairwise cosine is exactly ``-1 / (L - 1)``. It is built in
  closed form from the Helmert basis of the hyperplane orthogonal to ``(1, ..., 1)`` (float64, deterministic).
* ``L - 1 > d`` and ``L <= 2d``: by Rankin's bound the best maximal cosine is ``0``; the cross-polytope
  ``+-e_1, ..., +-e_k`` attains it.
* ``L > 2d``: no closed form. A seeded, deterministic projected gradient descent on the sphere minimises a
  soft maximum (log-sum-exp) of the pairwise cosines; :func:`max_pairwise_cosine` reports what was achieved.

``kind="random"`` gives seeded Gaussian directions scaled to the same norm: the "MMC (rand)" baseline of
Pang et al., "Rethinking Softmax Cross-Entropy Loss for Adversarial Robustness", ICLR 2020 (arXiv:1905.10626).
"""
from __future__ import annotations

import math

import torch

__all__ = ['mm_centers', 'max_pairwise_cosine', 'CENTER_KINDS']

CENTER_KINDS = ('mm', 'random')


def _check(num_classes: int, dim: int, norm: float, kind: str) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f'num_classes must be an int >= 2 (got {num_classes!r}); a classifier needs two classes.')
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f'feature_dim must be an int >= 1 (got {dim!r}); pass e.g. feature_dim=256.')
    if not (isinstance(norm, (int, float)) and math.isfinite(norm) and norm > 0):
        raise ValueError(f'center_norm must be a finite number > 0 (got {norm!r}); the paper uses 10 ("MMC-10").')
    if kind not in CENTER_KINDS:
        raise ValueError(f'unknown center kind {kind!r}; choose one of {CENTER_KINDS}.')


def _simplex(num_classes: int, dim: int) -> torch.Tensor:
    """Unit-norm regular simplex of ``num_classes`` vertices embedded in the first ``L - 1`` axes of ``R^dim``."""
    L = num_classes
    # Helmert rows k = 1..L-1: (1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1)), an orthonormal basis of 1^perp.
    helmert = torch.zeros(L - 1, L, dtype=torch.float64)
    for k in range(1, L):
        helmert[k - 1, :k] = 1.0
        helmert[k - 1, k] = -float(k)
        helmert[k - 1] /= math.sqrt(k * (k + 1))
    # e_i - mean has coordinates helmert[:, i] in that basis, norm sqrt((L - 1) / L)
    verts = helmert.t() * math.sqrt(L / (L - 1))  # (L, L-1), unit rows
    out = torch.zeros(L, dim, dtype=torch.float64)
    out[:, :L - 1] = verts
    return out


def _cross_polytope(num_classes: int, dim: int) -> torch.Tensor:
    """``e_0, -e_0, e_1, -e_1, ...``: pairwise cosines in {0, -1}, valid while ``num_classes <= 2 * dim``."""
    out = torch.zeros(num_classes, dim, dtype=torch.float64)
    for i in range(num_classes):
        out[i, i // 2] = 1.0 if i % 2 == 0 else -1.0
    return out


def _optimised(num_classes: int, dim: int, seed: int, steps: int = 2000) -> torch.Tensor:
    """Spread ``num_classes`` unit vectors in ``R^dim`` by minimising a log-sum-exp of pairwise cosines."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
    w = w / w.norm(dim=1, keepdim=True)
    off_diag = ~torch.eye(num_classes, dtype=torch.bool)
    lr = 0.05
    for step in range(steps):
        w.requires_grad_(True)
        cos = w @ w.t()
        temp = 10.0 + 90.0 * step / max(steps - 1, 1)  # sharpen the soft max as we go
        loss = torch.logsumexp(temp * cos[off_diag], dim=0) / temp
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w = w - lr * grad / (grad.norm() + 1e-12) * math.sqrt(num_classes)
            w = w / w.norm(dim=1, keepdim=True)
        lr = 0.05 * (1 - step / steps) + 1e-4
    return w.detach()


def mm_centers(
        num_classes: int,
        dim: int,
        norm: float = 10.0,
        kind: str = 'mm',
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Build ``num_classes`` class centers in ``R^dim``, each of Euclidean norm ``norm``.

    Args:
        num_classes: Number of classes ``L`` (>= 2).
        dim: Feature dimension ``d`` (>= 1).
        norm: Norm ``C`` of every center (the paper's "MMC-10" is ``C = 10``).
        kind: ``'mm'`` for Max-Mahalanobis centers, ``'random'`` for random directions of the same norm.
        seed: Seed for ``kind='random'`` and for the optimised regime ``L > 2d``; unused otherwise.
        dtype: Returned dtype. The construction itself runs in float64.

    Returns:
        Tensor of shape ``(num_classes, dim)``.

    Raises:
        ValueError: On a configuration that cannot give valid centers.
    """
    _check(num_classes, dim, norm, kind)
    if kind == 'random':
        gen = torch.Generator().manual_seed(seed)
        unit = torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
        unit = unit / unit.norm(dim=1, keepdim=True)
    elif dim >= num_classes - 1:
        unit = _simplex(num_classes, dim)
    elif num_classes <= 2 * dim:
        unit = _cross_polytope(num_classes, dim)
    else:
        unit = _optimised(num_classes, dim, seed)
    if max_pairwise_cosine(unit) > 1 - 1e-6:
        raise ValueError(f'feature_dim {dim} is too small for {num_classes} classes: two of the centers coincide, so '
                         f'those classes could never be told apart. Use a larger feature_dim: '
                         f'>= {max(2, (num_classes + 1) // 2)} guarantees distinct centers, >= {num_classes - 1} gives '
                         f'the regular simplex (the paper: 256).')
    return (unit * float(norm)).to(dtype)


def max_pairwise_cosine(centers: torch.Tensor) -> float:
    """Largest cosine between two distinct centers (lower is better spread)."""
    c = centers.double()
    c = c / c.norm(dim=1, keepdim=True)
    cos = c @ c.t()
    cos.fill_diagonal_(-2.0)
    return float(cos.max())
