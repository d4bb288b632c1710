"""Training runs side by side, one row a run: what it changed, how long it took where, and what it reached.

``python -m timm_mmc.hub runs runs/a runs/b hub_cards/resnet32_mmc.cifar10 --base resnet32_mmc`` prints the figures
``docs/recipes.md``'s table of runs quotes, each read from the run's own files (``args.yaml``, ``metrics.jsonl``,
``summary.json``) through their owner, :class:`~timm_mmc.runfolder.RunFolder`. A release folder (its ``training/``)
works alike, a folder of runs (``runs``) gives each run in it, and a run still going is shown as far as it got.
"changed" lists the options that set the run's weights and differ from ``--base`` (a recipe) or, without it, from the
first run given; how a run was measured and where it wrote (:data:`~timm_mmc.config.RESUME_MUTABLE`) does not count.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import DEFERS_TO_RUN, RESUME_MUTABLE, ConfigError, TrainConfig, parse_config, resolve_recipe
from ..runfolder import ARGS_FILE, RunError, RunFolder
from .common import TRAINING_DIR, HubError

__all__ = ['runs_table']

# TrainConfig fields that set no weight: what a resume may change, and where the data lives (args.yaml also records
# what it is, by digest)
_NOT_COMPARED = RESUME_MUTABLE | {'dataset', 'cache_dir'}


def _run_files(path: Path) -> Optional[Path]:
    """The folder holding a run's files: the run folder itself, or a release folder's ``training/``; None if neither."""
    return next((cand for cand in (path, path / TRAINING_DIR) if (cand / ARGS_FILE).is_file()), None)


def _expand(paths: Sequence[os.PathLike]) -> List[Tuple[str, Path]]:
    """``(name, folder with the run's files)`` of every run given: a run or release folder, or a folder of them
    (``runs/``: each run in it, by name)."""
    found = []
    for path in map(Path, paths):
        own = _run_files(path)
        inside = [] if own or not path.is_dir() else \
            [(sub.name, files) for sub in sorted(path.iterdir()) if sub.is_dir() and (files := _run_files(sub))]
        if not (own or inside):
            raise HubError(f'{str(path)!r} holds no {ARGS_FILE}, nor do its folders; pass run folders (--output of '
                           f'timm_mmc/train.py), release folders, or a folder of them.')
        found += [(path.name or str(path), own)] if own else inside
    return found


def _options(args: Dict[str, Any]) -> Dict[str, Any]:
    """The options that set a run's weights; one its ``args.yaml`` lacks (a run from before the option existed) is
    the default it trained with."""
    defaults = {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k not in _NOT_COMPARED}
    return {k: args.get(k, v) for k, v in defaults.items()}


def _base_options(recipe: str) -> Dict[str, Any]:
    try:
        cfg = parse_config(['-c', str(resolve_recipe(recipe))])  # resolved first: its error, not train's usage
    except ConfigError as e:
        raise HubError(f'--base: {e}') from e
    return _options(dataclasses.asdict(cfg))


def _changed(options: Dict[str, Any], base: Dict[str, Any]) -> str:
    """``name value (base value)`` for every option that differs; a base value that leaves the choice to the run
    (:data:`~timm_mmc.config.DEFERS_TO_RUN`: a loss from the head, a precision from the machine) differs from no
    choice a run records."""
    diff = [f'{k} {options[k]} ({base[k]})' for k in options
            if k in base and options[k] != base[k] and base[k] != DEFERS_TO_RUN.get(k, object())]
    return ', '.join(diff) or 'none'


def _pct(v: Optional[float]) -> str:
    return '-' if v is None else f'{100 * v:.2f}'


def _row(name: str, folder: Path, options: Dict[str, Any], base: Dict[str, Any]) -> str:
    run = RunFolder(folder)
    records, summary = run.history(), run.summary()
    last = records[-1] if records else None
    tested = [r for r in records if r.test_acc is not None]
    if summary is not None:  # finished: what it exported
        epochs, wall, cpu, paused = str(summary.epochs), summary.wall_time_s, summary.cpu_time_s, summary.paused_time_s
        clean, last_w, ema = _pct(summary.test_acc), _pct(summary.test_acc_last), _pct(summary.test_acc_ema)
    else:  # still going (or cut): as far as it got, the test split's figures of its last measured epoch
        epochs = f'{last.epoch if last else 0} of {options.get("epochs")}'
        wall, cpu, paused = (last.elapsed_s, last.cpu_s, last.paused_s) if last else (None, None, None)
        clean = '- (running)'
        last_w, ema = (_pct(tested[-1].test_acc), _pct(tested[-1].test_acc_ema)) if tested else ('-', '-')
        if tested and tested[-1] is not last:
            last_w, ema = f'{last_w} (epoch {tested[-1].epoch})', f'{ema} (epoch {tested[-1].epoch})'
    cells = [f'`{name}`', _changed(options, base), epochs,
             '-' if wall is None else f'{wall / 60:.1f}' + (f' ({paused / 60:.1f} paused)' if paused else ''),
             '-' if cpu is None else f'{cpu / 60:.0f}',
             (summary.hardware if summary and summary.hardware else '-'), clean, last_w, ema,
             _pct(last.train_acc) if last else '-']
    return '| ' + ' | '.join(cells) + ' |'


def runs_table(folders: Sequence[os.PathLike], base: Optional[str] = None) -> str:
    """One Markdown row a run: its name, the options it changed (against the recipe ``base``, else the first run),
    epochs, wall minutes (and how many of them the process stood still), CPU minutes, machine, and the clean accuracy
    on the test split of the exported weights, the last weights and the weight average, and the last epoch's train
    accuracy (%).

    Raises:
        HubError: No runs, a folder with no run in or under it, an unreadable file, or an unknown ``base`` recipe.
    """
    if not folders:
        raise HubError('pass one run folder or more.')
    found = _expand(folders)
    try:
        options = [_options(RunFolder(d).read_args()) for _, d in found]
        reference = _base_options(base) if base else options[0]
        name = f'against {base}' if base else f'against {found[0][0]}'
        lines = [f'| run | changed ({name}) | epochs | wall min | CPU min | machine | clean, exported | last weights '
                 f'| weight average | train |', '| --- ' * 10 + '|']
        lines += [_row(n, d, o, reference) for (n, d), o in zip(found, options)]
    except RunError as e:
        raise HubError(str(e)) from e
    return '\n'.join(lines)
