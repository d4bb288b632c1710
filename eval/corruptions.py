"""General-purpose (non-adversarial) corruptions: Gaussian noise and random rotation, seeded."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ['gaussian_noise', 'random_rotation']


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``x + sigma * N(0, 1)`` clipped to [0, 1] (``sigma`` in pixel units, 0.05 in the paper)."""
    if sigma < 0:
        raise ValueError(f'noise sigma must be >= 0 (got {sigma}).')
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return (x + sigma * noise).clamp(0, 1)


def random_rotation(x: torch.Tensor, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate every image by an angle uniform in ``[-max_degrees, max_degrees]`` (bilinear, black corners)."""
    n = x.shape[0]
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    cos, sin = angles.cos(), angles.sin()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False).clamp(0, 1)
