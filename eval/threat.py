"""Enums for threat models and attack families (RobustBench style)."""
from __future__ import annotations

from enum import Enum

from timm_mmc import parse_pixels

__all__ = ['ThreatModel', 'AttackFamily', 'parse_eps']


class ThreatModel(str, Enum):
    """What an attack is allowed to change."""
    LINF = 'Linf'  # ||x_adv - x||_inf <= eps, x_adv in [0, 1]
    L2 = 'L2'  # minimal-distortion L2 (C&W): no budget, the distance is the metric
    CORRUPTION = 'corruption'  # random, not adversarial (noise, rotation)


class AttackFamily(str, Enum):
    """Attack families a user can select with ``--attacks``."""
    PGD = 'pgd'
    CW = 'cw'
    SPSA = 'spsa'
    NOISE = 'noise'
    ROTATION = 'rotation'
    TRANSFER = 'transfer'
    AUTOATTACK = 'autoattack'


def parse_eps(text: str) -> float:
    """Parse an eps in pixel units: ``8/255`` or ``0.0314``; must lie in (0, 1].

    Raises:
        ValueError: Not a number, or outside (0, 1].
    """
    text = str(text).strip()
    try:
        value = parse_pixels(text)
    except ValueError as e:
        raise ValueError(f'eps {e}') from None
    if not (0 < value <= 1):
        raise ValueError(f'eps {text!r} = {value:g} is outside (0, 1]; eps is in pixel units of images in [0, 1] '
                         f'(8/255 = 0.0314; for "8" in /255 units write 8/255).')
    return value
