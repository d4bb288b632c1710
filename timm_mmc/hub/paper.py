"""The paper's published figures that the card shows beside ours, labelled as the paper's, never as ours.

They live in ``timm_mmc/cards/paper_results.yaml`` with their citation; a row is matched to a release by data set,
architecture, head variant (MMC rows need MM centers of norm 10) and adversarial training, and a figure to one of our
columns by attributes (family, steps, targeting, eps), never by names.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ..report import Column
from .common import PAPER_RESULTS_PATH, head_key, read_yaml

__all__ = ['paper_rows', 'paper_value', 'adv_kind']

_ARCH = {'resnet32': 'resnet32', 'resnet32v2': 'resnet32', 'resnet110': 'resnet110'}
_CAVEAT = ('the paper\'s "ResNet-32" is the authors\' pre-activation bottleneck network (our resnet32v2); this model '
           'is He et al.\'s basic-block ResNet-32, so the comparison is architecture-approximate')


def adv_kind(train_args: Dict[str, Any]) -> str:
    """``none``, ``targeted`` or ``untargeted`` (PGD adversarial training), or the method (``fgsm``) otherwise."""
    adv = str(train_args.get('adv', 'none') or 'none').lower()
    if adv in ('none', 'false', 'no', ''):
        return 'none'
    if adv == 'pgd':
        return 'targeted' if train_args.get('adv_targeted') in (True, 'true', 'random', 'targeted') else 'untargeted'
    return adv


def paper_rows(dataset: str, arch: str, model_args: Dict[str, Any], train_args: Dict[str, Any]
               ) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]], Dict[str, Any], Optional[str]]:
    """The paper rows (PGD table, AutoAttack study) matching a release, the sources, and an architecture caveat."""
    if not PAPER_RESULTS_PATH.is_file():
        return None, None, {}, None
    paper = read_yaml(PAPER_RESULTS_PATH)
    depth_name = arch.partition('_')[0]
    caveat = _CAVEAT if depth_name == 'resnet32' else None
    method = head_key(model_args)
    if method in ('mmc', 'mmc_rand') and abs(float(model_args.get('center_norm', 0)) - 10.0) > 1e-9:
        method = None  # the paper's rows are MMC-10
    adv = adv_kind(train_args)
    key = dict(dataset=dataset, arch=_ARCH.get(depth_name), method=method)
    fits = (lambda r: all(r.get(k) == v for k, v in key.items()))
    pgd = next((r for r in paper.get('pgd_rows', []) if fits(r) and r.get('adv') == adv), None)
    aa = next((r for r in paper.get('autoattack_rows', []) if fits(r)
               and (r.get('adv') == adv or (r.get('adv') == 'any' and adv != 'none'))), None)
    if pgd is not None:
        pgd = dict(pgd, columns=[tuple(c) for c in paper['pgd_columns']],
                   spsa_columns=[tuple(c) for c in paper.get('spsa_columns', [])],
                   noise_sigma=paper.get('noise_sigma'), rotation_degrees=paper.get('rotation_degrees'))
    return pgd, aa, paper.get('sources', {}), caveat


def _at(c: Column, columns: Any, values: Any) -> Optional[str]:
    """The value of the paper's column with this column's steps, targeting and eps (in /255)."""
    for (steps, targeted, e), value in zip(columns, values or []):
        if steps == c.steps and targeted == c.targeted and c.eps is not None and abs(c.eps * 255 - e) < 0.05:
            return value
    return None


def paper_value(c: Column, config: Dict[str, Any], pgd: Optional[Dict[str, Any]], aa: Optional[Dict[str, Any]]) -> str:
    """The paper's figure for one of our columns with the table it is from, or ``-`` where the paper has none.

    Args:
        c: Our column.
        config: The settings of its (first) attack (noise sigma, rotation degrees).
        pgd: The matched PGD-table row.
        aa: The matched AutoAttack row.
    """
    if pgd is not None:
        value, table = None, pgd['table_b']
        if c.family == 'pgd':
            value, table = _at(c, pgd['columns'], pgd['pgd']), pgd['table']
        elif c.family == 'spsa':
            value = _at(c, pgd['spsa_columns'], pgd.get('spsa'))
        elif c.family == 'noise' and config.get('sigma') == pgd.get('noise_sigma'):
            value = pgd.get('noise')
        elif c.family == 'rotation' and config.get('max_degrees') == pgd.get('rotation_degrees'):
            value = pgd.get('rotation')
        if value is not None:
            return f'{value} ({table})'
    if c.family == 'autoattack' and aa is not None and c.eps is not None and abs(c.eps * 255 - aa['eps']) < 0.05:
        return f'{aa["autoattack"]} (AutoAttack)'
    return '-'
