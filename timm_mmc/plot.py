"""The robustness plot: accuracy against the Linf budget, drawn from an evaluation report.

One function for every PNG the project writes (``eval.robustness``'s ``NAME.png`` and a release's
``results/robust_accuracy.png``). Only measured points are drawn: markers at the eps values the report has (ticks
there only), a thin dotted guide between the points of one series, ``n`` in every label, the suite's worst case in
black, AutoAttack as a large star drawn on top, so that it stays visible where it equals the worst case.
"""
from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .report import Column, EvalReport, fmt_eps

__all__ = ['series_label', 'robustness_figure', 'robustness_png', 'plot_robustness']

_MARKERS = ('o', 'v', '^', 's', 'D', 'P', 'X', '<', '>', 'h', 'p', '8')


def series_label(c: Column, transfer_from: Optional[str] = None) -> str:
    """A column's series, named by its attributes (eps aside): ``PGD-10 untargeted, worst of mm/margin``."""
    tu = 'targeted' if c.targeted else 'untargeted'
    if c.family == 'pgd':
        text = f'PGD-{c.steps} {tu}'
        if len(c.objectives) > 1:
            text += f', worst of {"/".join(c.objectives)}'
        elif c.objectives:
            text += f', {c.objectives[0]}'
    elif c.family == 'transfer':
        src = f' from {Path(str(transfer_from).split(":", 1)[-1]).name}' if transfer_from else ''
        text = f'transfer {str(c.method).upper()}-{c.steps}{src}'
    elif c.family == 'spsa':
        text = f'SPSA-{c.steps} {tu}'
    elif c.family == 'autoattack':
        text = f'AutoAttack {c.version}'
    else:
        text = c.family
    return text


def _series(rep: EvalReport) -> Dict[Tuple[str, int], List[Column]]:
    """Linf columns grouped by label and n, in suite order."""
    groups: Dict[Tuple[str, int], List[Column]] = {}
    for c in rep.columns.values():
        if c.eps is not None and c.family != 'autoattack':
            groups.setdefault((series_label(c, rep.transfer_from), c.n), []).append(c)
    return groups


def robustness_figure(rep: EvalReport, title: Optional[str] = None) -> Any:
    """The plot of ``rep`` as a matplotlib ``Figure`` (Agg canvas; no global pyplot state).

    Args:
        rep: The evaluation report.
        title: First title line; default the model spec's last part. The second line names data, split and n.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    measured = {0.0}
    if rep.clean_accuracy is not None:
        ax.plot([0.0], [100 * rep.clean_accuracy], marker='*', ms=11, color='tab:green', linestyle='none',
                label=f'clean (n={rep.n})', zorder=4)
    for i, ((label, n), cols) in enumerate(sorted(_series(rep).items())):
        pts = sorted((c.eps * 255, 100 * c.accuracy) for c in cols)
        measured.update(p[0] for p in pts)
        ax.plot(*zip(*pts), marker=_MARKERS[i % len(_MARKERS)], ms=6, mfc='none', linestyle=':', linewidth=0.8,
                alpha=0.9, label=f'{label} (n={n})', zorder=3)
    for on_slice in (False, True):
        table = rep.worst_case_slice if on_slice else rep.worst_case
        if not table:
            continue
        pts = sorted((w.eps * 255, 100 * w.accuracy) for w in table.values())
        n = next(iter(table.values())).n
        measured.update(p[0] for p in pts)
        label = 'worst case over the suite' + (', first points where every attack ran' if on_slice else '')
        ax.plot(*zip(*pts), marker='s', ms=12 if on_slice else 7, color='black', mfc='none' if on_slice else 'black',
                linestyle='--' if on_slice else '-', linewidth=1.0 if on_slice else 2.0, label=f'{label} (n={n})',
                zorder=4)
    for c in rep.find_columns(family='autoattack'):
        measured.add(c.eps * 255)
        survivors = ' on the survivors of the cheaper attacks' if rep.attacks[c.attacks[0]].skip_after else ''
        ax.plot([c.eps * 255], [100 * c.accuracy], marker='*', ms=16, color='tab:red', mec='black', mew=0.8,
                linestyle='none', label=f'AutoAttack {c.version}{survivors} (n={c.n})', zorder=6)
    ticks = sorted(measured)
    ax.set_xticks(ticks)
    ax.set_xticklabels(['0' if t == 0 else fmt_eps(t / 255) for t in ticks])
    ax.set_xlim(-0.06 * max(ticks[-1], 1) - 0.5, ticks[-1] * 1.06 + 0.5)
    ax.set_xlabel('Linf eps (pixel units of images in [0, 1]); markers at measured budgets only')
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    name = title or Path(rep.model.split(':', 1)[-1]).name
    sub = f'{Path(rep.dataset).name or rep.dataset}, split {rep.split}, n={rep.n}'
    ax.set_title('\n'.join(textwrap.wrap(name, 70) + [sub]), fontsize=9)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def robustness_png(rep: EvalReport, title: Optional[str] = None) -> bytes:
    """:func:`robustness_figure` as PNG bytes (no time stamp or software tag: the same report gives the same bytes)."""
    buf = io.BytesIO()
    robustness_figure(rep, title).savefig(buf, format='png', bbox_inches='tight', metadata={'Software': None})
    return buf.getvalue()


def plot_robustness(rep: EvalReport, path: os.PathLike, title: Optional[str] = None) -> Path:
    """Draw ``rep`` into a PNG at ``path``, written atomically. Returns ``path``."""
    from .fileio import atomic_write_bytes

    return atomic_write_bytes(path, robustness_png(rep, title))
