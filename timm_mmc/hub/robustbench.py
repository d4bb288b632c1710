"""``results/robustbench.json``: a release's results in the fields of a RobustBench ``model_info`` entry.

Written from the same report as the card. Accuracies are percentages with two decimals as strings, as RobustBench
writes them. ``autoattack_acc`` is filled only by AutoAttack *standard* at eps 8/255 (the RobustBench Linf CIFAR
protocol) run on every image ``clean_acc`` counts; the fields RobustBench does not have (``n_examples``,
``autoattack_composite``, ``worst_case_acc``, ...) say how our figure differs from a leaderboard entry (fewer test
points, AutoAttack on the survivors of our attacks).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from ..fileio import atomic_write_text
from ..report import AttackResult, EvalReport, fmt_eps, percent
from .common import (EVAL_FILE, ROBUSTBENCH_FILE, folder_config, head_key, norm_dataset, read_report, training_files,
                     wrapped_backbone_text)

__all__ = ['model_info', 'folder_model_info', 'write_robustbench']

EPS = 8 / 255  # the RobustBench Linf threat model on CIFAR
_PAPER = dict(link='https://arxiv.org/abs/1905.10626',
              name='Rethinking Softmax Cross-Entropy Loss for Adversarial Robustness',
              authors='Tianyu Pang, Kun Xu, Yinpeng Dong, Chao Du, Ning Chen, Jun Zhu', venue='ICLR 2020')


def _pct(v: Optional[float]) -> Optional[str]:
    return None if v is None else percent(v, 2)  # RobustBench writes percentages as strings; null when not measured


def _architecture(arch: str, model_args: Dict[str, Any]) -> str:
    wrapped = wrapped_backbone_text(arch, model_args)
    if wrapped:
        return f'{wrapped} + {head_key(model_args)} head'
    depth = ''.join(ch for ch in arch.split('_')[0] if ch.isdigit())
    kind = 'pre-activation bottleneck' if 'v2' in arch.split('_')[0] else 'basic-block'
    return f'ResNet-{depth} ({kind}) + {head_key(model_args)} head'


def _no_autoattack_acc(rep: EvalReport, aa: Optional[AttackResult]) -> Optional[str]:
    """Why ``rep`` gives no RobustBench ``autoattack_acc``, for the footnote; None where it gives one."""
    if aa is None:
        return 'no AutoAttack run. '
    if aa.version != 'standard':
        return f'AutoAttack {aa.version} only, not the standard version: no autoattack_acc. '
    if aa.n != rep.n:
        return (f'AutoAttack standard on only the first {aa.n} of the {rep.n} images clean_acc counts: no '
                f'autoattack_acc (its figure on those {aa.n}: {percent(aa.accuracy, 2)}%). ')
    return None


def model_info(rep: EvalReport, arch: str, model_args: Dict[str, Any], train_args: Dict[str, Any]) -> Dict[str, Any]:
    """The RobustBench ``model_info`` fields of a release, from its report, config and training arguments."""
    aa = rep.find_attack(family='autoattack', eps=EPS)
    missing = _no_autoattack_acc(rep, aa)
    worst = rep.worst_at(EPS)
    composite = None
    if aa is not None:
        composite = (f'AutoAttack {aa.version}' + (' on the points every cheaper Linf attack of the suite left '
                                                    'standing (a worst case of those attacks and AutoAttack)'
                                                    if aa.skip_after else '')
                     + f', on {aa.n} of the {rep.n} evaluated test images')
    return dict(
        _PAPER, additional_data=False, number_forward_passes=1, dataset=norm_dataset(rep.dataset),
        threat_model='Linf', architecture=_architecture(arch, model_args), eps=fmt_eps(EPS),
        clean_acc=_pct(rep.clean_accuracy), reported=None,
        autoattack_acc=_pct(aa.accuracy) if missing is None else None,
        footnote=('Trained and evaluated by timm-mmc (not the authors\' model); ' + (missing or '')
                  + ('MM-head logits must be scaled for APGD-CE (eval/aa.py ScaledLogits).' if rep.logits == 'distance'
                     else 'Linear head, so APGD-CE needs no logit scaling.')),
        n_examples=rep.n, split=rep.split, autoattack_version=aa.version if aa else None,
        autoattack_n=aa.n if aa else None, autoattack_composite=composite,
        worst_case_acc=_pct(worst.accuracy) if worst else None, adversarial_training=train_args.get('adv', 'none'),
        weights_sha256=rep.checkpoint_sha256, source=EVAL_FILE)


def folder_model_info(folder: os.PathLike) -> Dict[str, Any]:
    """:func:`model_info` of a release folder, from its ``results/eval.json``, ``config.json`` and ``training/``."""
    folder = Path(folder)
    cfg, _ = folder_config(folder)
    return model_info(read_report(folder / EVAL_FILE), cfg['architecture'], dict(cfg.get('model_args') or {}),
                      training_files(folder)[0])


def write_robustbench(folder: os.PathLike) -> Path:
    """Write ``results/robustbench.json`` of a release folder from its ``results/eval.json``."""
    return atomic_write_text(Path(folder) / ROBUSTBENCH_FILE, json.dumps(folder_model_info(folder), indent=2) + '\n')
