"""The README's results table: one row per release folder, every figure read from the folder's files.

Columns are picked by attributes of the report's entries (family, steps, targeting, eps, objective), never by their
names, so a renamed attack cannot silently turn a cell into ``-``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..report import EvalReport, percent
from ..runfolder import RunSummary
from .common import EVAL_FILE, HubError, read_report, training_files

__all__ = ['RESULTS_COLUMNS', 'results_table']

RESULTS_COLUMNS = ('release', 'training', 'clean, 10k test', 'n', 'clean', 'PGD-10 un 8, authors\' objective',
                   'PGD-10 un 8, margin', 'PGD-50 un 8 (worst over objectives)', 'AutoAttack 8',
                   'worst case 8', 'worst case 16', 'C&W un L2, paper\'s mean (n)')
EPS8, EPS16 = 8 / 255, 16 / 255


def _pct(v: Optional[float]) -> str:
    return percent(v, 1)


ADV_NAMES = {'fgsm': 'FGSM-RS', 'nfgsm': 'N-FGSM'}


def _training(args: Dict[str, Any], summary: RunSummary) -> str:
    parts = [f'{args["epochs"]} ep' + (f' {args["schedule"]}' if args.get('schedule') else '')
             ] if args.get('epochs') else []
    parts += ['from earlier weights (--init-from)'] if args.get('init_from') else []  # the epochs are this run's only
    parts += [str(args['precision'])] if args.get('precision') else []
    adv = str(args.get('adv') or 'none')
    if adv != 'none':
        kind = '' if args.get('adv_targeted') is None else (' targeted' if args['adv_targeted'] else ' untargeted')
        name = ADV_NAMES.get(adv) or (f'PGD-{args["adv_steps"]}' if adv == 'pgd' and args.get('adv_steps') else
                                      adv.upper())
        parts.append(f'{name} AT{kind}')
    if summary.selected:
        on = ' clean' if summary.select_on == 'clean' else ''
        parts.append(f'best held-out{on} epoch ({summary.selected.get("epoch")})')
    if summary.wall_time_s is not None:
        paused = (f' ({summary.paused_time_s / 60:.0f} of them paused)'
                  if round((summary.paused_time_s or 0) / 60) else '')  # a pause under half a minute reads as none
        parts.append(f'{summary.wall_time_s / 60:.0f} min{paused}')
    return ', '.join(parts) or '-'


def _accuracy(entry: Optional[Any]) -> Optional[float]:
    return None if entry is None else entry.accuracy


def _worst8(rep: EvalReport, aa_n: Optional[int]) -> str:
    """The headline: the worst case at 8/255, and on AutoAttack's prefix where AutoAttack judged a prefix only."""
    w8 = _pct(_accuracy(rep.worst_at(EPS8)))
    if w8 != '-' and aa_n is not None and aa_n != rep.n:
        sl = rep.worst_at(EPS8, on_slice=True)
        if sl is not None and sl.n == aa_n:
            w8 += f'; {_pct(sl.accuracy)} on the first {aa_n}'
        else:
            w8 += f' (AutoAttack on the first {aa_n} only)'
    return w8 if w8 == '-' else f'**{w8}**'


def _row(folder: Path, rep: EvalReport) -> str:
    args, summary = training_files(folder)
    pgd10 = dict(family='pgd', steps=10, targeted=False, eps=EPS8)
    aa = rep.find_attack(family='autoattack', eps=EPS8)
    aa_text = '-' if aa is None else \
        f'{_pct(aa.accuracy)} ({aa.version}, {f"first {aa.n}" if aa.n != rep.n else f"all {aa.n}"})'
    cw = rep.find_attack(family='cw', targeted=False)
    cw_text = '-' if cw is None or cw.l2_paper is None else f'{cw.l2_paper:.3f} ({cw.n})'  # failures as 0
    cells = [f'[`{folder.name}`](hub_cards/{folder.name})', _training(args, summary),
             percent(summary.test_acc, 2),  # 10k images: 0.01 is one image, and 89.99 must not read as 90.0
             str(rep.n), _pct(rep.clean_accuracy),
             _pct(_accuracy(rep.find_attack(**pgd10, objective=rep.own_objective))),
             _pct(_accuracy(rep.find_attack(**pgd10, objective='margin'))),
             _pct(_accuracy(rep.find_column(family='pgd', steps=50, targeted=False, eps=EPS8))), aa_text,
             _worst8(rep, aa.n if aa else None), _pct(_accuracy(rep.worst_at(EPS16))), cw_text]
    return '| ' + ' | '.join(cells) + ' |'


def results_table(folders: Sequence[os.PathLike]) -> str:
    """One Markdown row per release folder, every figure read from its ``training/`` and ``results/eval.json``.

    Accuracies in %, one decimal; eps in /255. "authors' objective" is the head's own attack objective recorded in
    the report (the MMC paper's adaptive loss for MM heads, cross-entropy for a linear head). The C&W figure is the
    paper's averaging (failures and clean errors counted as 0 distortion), comparable with its Table B. ``-`` where
    the evaluation did not run that attack.

    Raises:
        HubError: A folder that is not a release (no ``results/eval.json``) or a bad report.
    """
    rows = ['| ' + ' | '.join(RESULTS_COLUMNS) + ' |', '|' + ' --- |' * len(RESULTS_COLUMNS)]
    for folder in map(Path, folders):
        if not (folder / EVAL_FILE).is_file():
            raise HubError(f'{str(folder)!r} has no {EVAL_FILE}; pass release folders (hub_cards/<name>).')
        rows.append(_row(folder, read_report(folder / EVAL_FILE)))
    return '\n'.join(rows)
