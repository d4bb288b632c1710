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
    specs: Building a suite: options, typed per-family attack configurations, the attacks cheapest first.
    runner: Running a suite into per-sample records (merged across processes).
    summary: Records into the report's dataclasses: accuracies, columns, the worst case, diagnostics.
    suite: The public names of the three above.
    report: The report's files: JSON (schema :mod:`timm_mmc.report`), Markdown in the paper's layout, the plot.
    robustness: The command line.
"""
from .threat import AttackFamily, ThreatModel

__all__ = ['AttackFamily', 'ThreatModel']
