"""A training run's learning curve as a Markdown table, read from its ``metrics.jsonl`` through the run folder's owner.

``python -m timm_mmc.hub curve runs/resnet32_mmc.cifar10 --every 5`` prints what ``docs/recipes.md`` quotes: one row
every ``every`` epochs, plus the last epoch and the best epoch of the weight average on the test split, with only the
columns the run measured; when the run exported a held-out choice (``--select-best``, read from its ``summary.json``),
that epoch is there too, marked ``(exported)``. A release folder (its ``training/``) works alike.
``--against OTHER`` (:func:`compare_curves`) sets runs side by side instead: train accuracy and the test split's
accuracy of the last weights and of the weight average, each run's column beside the others', at the epochs where
every run measured the test split.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from ..runfolder import METRICS_FILE, EpochRecord, RunError, RunSummary, read_metrics
from .common import TRAINING_DIR, HubError

__all__ = ['metrics_path', 'learning_curve', 'compare_curves']

Column = Tuple[str, Callable[[EpochRecord], Optional[float]], int]  # header, value as printed, decimals


def _percent(get: Callable[[EpochRecord], Optional[float]]) -> Callable[[EpochRecord], Optional[float]]:
    return lambda r: None if get(r) is None else 100 * get(r)


COLUMNS: Sequence[Column] = (
    ('lr', lambda r: r.lr, 4),
    ('train', _percent(lambda r: r.train_acc), 2),
    ('test, last weights', _percent(lambda r: r.test_acc), 2),
    ('test, weight average', _percent(lambda r: r.test_acc_ema), 2),
    ('robust, last weights', _percent(lambda r: r.robust_acc), 1),
    ('held-out clean, last', _percent(lambda r: r.heldout_clean_acc), 2),
    ('held-out clean, weight average', _percent(lambda r: r.heldout_clean_acc_ema), 2),
    ('held-out robust, weight average', _percent(lambda r: r.robust_acc_ema), 1),
    ('elapsed min', lambda r: None if r.elapsed_s is None else r.elapsed_s / 60, 1),
)


def metrics_path(folder: os.PathLike) -> Path:
    """``metrics.jsonl`` of a run folder, of a release folder (``training/``), or the file itself.

    Raises:
        HubError: None of the three is there.
    """
    p = Path(folder)
    for cand in (p, p / METRICS_FILE, p / TRAINING_DIR / METRICS_FILE):
        if cand.is_file():
            return cand
    raise HubError(f'{str(p)!r} holds no {METRICS_FILE}; pass a run folder (--output of timm_mmc/train.py), a '
                   f'release folder, or the file.')


def _exported_epoch(summary: Path) -> Optional[int]:
    """The epoch a ``--select-best`` run exported, from the ``summary.json`` beside its metrics (None without one)."""
    if not summary.is_file():
        return None
    try:
        selected = RunSummary.read(summary).selected
    except RunError as e:
        raise HubError(str(e)) from e
    return selected.get('epoch') if selected else None


def _records(folder: os.PathLike) -> Tuple[Path, List[EpochRecord]]:
    path = metrics_path(folder)
    try:
        records: List[EpochRecord] = read_metrics(path)
    except RunError as e:
        raise HubError(str(e)) from e
    if not records:
        raise HubError(f'{str(path)!r} has no epoch records yet; the run writes one after each epoch.')
    return path, records


def learning_curve(folder: os.PathLike, every: int = 5) -> str:
    """The run's curve: epochs 1, every ``every``-th, the best weight-average epoch and the last, as Markdown.

    Accuracies are percent (clean on the test split as the run measured it); a line below the table names the
    robust attack, as the run recorded it.

    Raises:
        HubError: No records, an unreadable file, or ``every`` below 1.
    """
    if every < 1:
        raise HubError(f'--every must be >= 1 (got {every}).')
    path, records = _records(folder)
    columns = [c for c in COLUMNS if any(c[1](r) is not None for r in records)]
    averaged = [r for r in records if r.test_acc_ema is not None]
    best = max(averaged, key=lambda r: r.test_acc_ema).epoch if averaged else None
    exported = _exported_epoch(path.with_name('summary.json'))
    keep = {records[0].epoch, records[-1].epoch, best, exported} | {r.epoch for r in records if r.epoch % every == 0}
    headers = [c[0] for c in columns]
    lines = ['| epoch | ' + ' | '.join(headers) + ' |', '| --- ' * (len(columns) + 1) + '|']
    for r in records:
        if r.epoch not in keep:
            continue
        cells = ['-' if (v := get(r)) is None else f'{v:.{d}f}' for _, get, d in columns]
        if r.epoch == best and len(averaged) > 1:
            i = headers.index('test, weight average')
            cells[i] = f'**{cells[i]}** (best)'
        epoch = str(r.epoch) + (' (exported)' if r.epoch == exported else '') + (' (collapse)' if r.collapse else '')
        lines.append(f'| {epoch} | ' + ' | '.join(cells) + ' |')
    attack = next((r.robust_attack for r in reversed(records) if r.robust_attack), None)
    if attack:
        lines += ['', f'robust: {attack}']
    return '\n'.join(lines)


def compare_curves(folders: Sequence[os.PathLike], every: int = 5) -> str:
    """Runs side by side, as Markdown: train accuracy, then the test split's accuracy of the last weights, then of the
    weight average, one column a run in the order given (named by folder), at every ``every``-th epoch where every run
    measured the test split, and at the last such epoch. A run still going is compared as far as it got.

    Raises:
        HubError: Fewer than two runs, a run without records, ``every`` below 1, or no epoch all runs measured.
    """
    if len(folders) < 2:
        raise HubError('comparing needs two runs or more.')
    if every < 1:
        raise HubError(f'--every must be >= 1 (got {every}).')
    runs = [{r.epoch: r for r in _records(f)[1] if r.test_acc is not None} for f in folders]
    common = sorted(set.intersection(*(set(r) for r in runs)))
    if not common:
        raise HubError('the runs have no epoch in which all of them measured the test split (--test-every).')
    epochs = [e for e in common if e % every == 0 or e == common[-1]]
    names = [Path(f).name or str(f) for f in folders]
    headers = [f'{what}, {name}' for what in ('train', 'test, last', 'test, weight average') for name in names]
    lines = ['| epoch | ' + ' | '.join(headers) + ' |', '| --- ' * (len(headers) + 1) + '|']
    for e in epochs:
        cells = [_percent(get)(run[e]) for get in (lambda r: r.train_acc, lambda r: r.test_acc,
                                                    lambda r: r.test_acc_ema) for run in runs]
        lines.append(f'| {e} | ' + ' | '.join('-' if v is None else f'{v:.2f}' for v in cells) + ' |')
    return '\n'.join(lines)
