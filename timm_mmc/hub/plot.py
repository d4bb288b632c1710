"""A release's ``results/robust_accuracy.png``: :func:`timm_mmc.plot.plot_robustness` of its report."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..plot import plot_robustness
from .common import EVAL_FILE, PLOT_FILE, dataset_info, norm_dataset, read_report

__all__ = ['write_plot']


def write_plot(folder: os.PathLike, name: Optional[str] = None) -> Optional[Path]:
    """Plot robust accuracy against eps from ``results/eval.json`` into ``results/robust_accuracy.png``.

    Args:
        folder: The release folder.
        name: The release's name in the title (default the folder's; an export writes into a temporary folder).

    Returns:
        The PNG path, or None (and an earlier plot removed: it must not outlive its results) when the report has no
        Linf result.
    """
    folder = Path(folder)
    rep = read_report(folder / EVAL_FILE)
    path = folder / PLOT_FILE
    if not rep.worst_case and not any(c.eps is not None for c in rep.columns.values()):
        path.unlink(missing_ok=True)
        return None
    info = dataset_info(norm_dataset(rep.dataset) or '')
    note = ', JPEG q75 copy' if info['caveat'] == 'jpeg' else ''
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_robustness(rep, path, title=f'{name or folder.name}: robust accuracy on {info["pretty"]}{note}')
