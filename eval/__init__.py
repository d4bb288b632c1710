"""Honest adversarial-robustness evaluation for timm models (``python -m eval.robustness``).

Attacks are objects configured once with ``perturb(x, y)`` working in [0, 1] pixel space; every adversarial batch is
checked at run time; robustness is claimed only from the per-sample worst case over a whole suite.

Modules:
    threat: Threat-model and attack-family enums.
    cw: Carlini & Wagner L2 (minimal distortion).
    spsa: SPSA (gradient-free, Uesato et al. 2018), batched over images.
    blackbox: Momentum iterative method (MIM) and transfer from a source model.
    corruptions: Gaussian noise and random rotation.
    aa: AutoAttack through ``pyautoattack`` with non-saturating scaled logits and captured warnings.
    suite: Suites, the cheapest-first runner, per-sample worst case, gradient-masking diagnostics.
    report: The JSON report (dataclasses), the Markdown tables in the paper's layout, the plot.
    robustness: The command line.
"""
from .threat import AttackFamily, ThreatModel

__all__ = ['AttackFamily', 'ThreatModel']
