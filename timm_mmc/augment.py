"""Batch augmentation on the training batch's device: random crop and flip, cutout, mixup.

Every draw comes from a CPU generator over the global batch, so a process of a distributed run augments its slice
exactly as a single process would (``offset`` / ``total``), and a resumed run repeats the draws.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ['augment_batch', 'mixup_batch']


def augment_batch(x: torch.Tensor, pad: int = 4, flip: bool = True, generator: Optional[torch.Generator] = None,
                  offset: int = 0, total: Optional[int] = None, cutout: int = 0) -> torch.Tensor:
    """Random ``pad``-pixel reflect-pad crop, horizontal flip and cutout of a float batch, on the batch's device.

    Args:
        x: ``(N, C, H, W)`` float images.
        pad: Padding of the random crop (4 for CIFAR).
        flip: Random horizontal flip with probability 1/2.
        generator: CPU generator for reproducible draws.
        offset: Index of ``x[0]`` within the global batch (distributed training: each process augments its slice
            with the draws a single process would have made for those images).
        total: Size of the global batch (default ``N``).
        cutout: Side of a square set to zero at a random centre of each image, clipped at the border (DeVries &
            Taylor 2017, arXiv:1708.04552); 0 leaves the images whole. Drawn after the crop and flip draws, so
            turning it on does not change them.
    """
    n, _, h, w = x.shape
    total = n if total is None else total
    shifts = torch.randint(0, 2 * pad + 1, (2, total), generator=generator)[:, offset:offset + n]
    flips = (torch.rand(total, generator=generator) < 0.5)[offset:offset + n]
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), mode='reflect')
        dy, dx = shifts
        rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (N, H)
        cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (N, W)
        idx_n = torch.arange(n, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)
    if cutout > 0:
        cy, cx = torch.randint(0, h, (total,), generator=generator), torch.randint(0, w, (total,), generator=generator)
        cy, cx = cy[offset:offset + n].to(x.device), cx[offset:offset + n].to(x.device)
        ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        half = cutout // 2
        in_y = (ys[None] >= (cy - half)[:, None]) & (ys[None] < (cy - half + cutout)[:, None])  # (N, H)
        in_x = (xs[None] >= (cx - half)[:, None]) & (xs[None] < (cx - half + cutout)[:, None])  # (N, W)
        x = x * ~(in_y[:, None, :, None] & in_x[:, None, None, :])
    return x.contiguous()


def mixup_batch(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018, arXiv:1710.09412): blend each image with its pair, ``lam * x + (1 - lam) * x_pair``.

    Images ``2k`` and ``2k + 1`` are each other's pair (the batch order is already a random draw), so a process that
    holds an even-sized slice of the global batch makes the pairs a single process would make; an odd batch's last
    image is its own pair.

    Args:
        x: ``(N, C, H, W)`` float images.
        y: ``(N,)`` labels.
        lam: 0-dim weight of each image itself, in [0, 1].

    Returns:
        The blended images and the pair's labels ``y_pair``; the loss is ``lam * L(y) + (1 - lam) * L(y_pair)``.
    """
    n = x.shape[0]
    pair = torch.arange(n, device=x.device) ^ 1
    pair[pair >= n] = n - 1
    return lam * x + (1 - lam) * x[pair], y[pair]
