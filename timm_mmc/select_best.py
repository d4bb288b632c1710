"""``--select-best``: keep the best held-out epoch's weights in the run folder's ``best/`` as a run goes, and hand
them to the export checked against the run's records.

:func:`timm_mmc.adversarial.best_epoch` is the rule; this module applies it to a running training's records and
weights. The rule only ever moves to the newest epoch or stays, so one ``best/`` suffices, and it is written after
the epoch's checkpoint, which holds the same weights: a kill between the two is mended by :meth:`BestKeeper.restore`
on the resume.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch.nn as nn

from .adversarial import best_epoch, selection_rule
from .config import TrainConfig
from .io import config_metadata
from .runfolder import EpochRecord, RunError, RunFolder
from .train_parts import TrainingFailed

__all__ = ['BestKeeper']


class BestKeeper:
    """The best epoch's weights of one run (``best/``), by its held-out records.

    Args:
        cfg: The run's options (``select_tolerance``, ``select_on``).
        run: The run folder.
        log: Where progress lines go.
        main_process: Whether this process writes files (one process of a distributed run does).
    """

    def __init__(self, cfg: TrainConfig, run: RunFolder, log: Callable[[str], None], main_process: bool) -> None:
        self.tolerance, self.on = cfg.select_tolerance, cfg.select_on
        self.run, self.log, self.main_process = run, log, main_process

    def _best(self, history: List[EpochRecord]):
        return best_epoch(history, self.tolerance, self.on)

    def keep(self, history: List[EpochRecord], epoch: int, model: nn.Module, ema: Optional[nn.Module]) -> None:
        """Write ``epoch``'s weights (``model`` or its weight average ``ema``) to ``best/`` when the records choose
        it."""
        best = self._best(history)
        if best is None or best.epoch != epoch:
            return
        if self.main_process:
            chosen = ema if best.weights == 'ema' else model
            self.run.save_best(chosen.state_dict(), best.to_dict(), metadata=config_metadata(chosen))
        robust = f'robust {best.robust_acc:.4f}, ' if best.robust_acc is not None else ''
        self.log(f'best so far: epoch {epoch} ({best.weights} weights), held-out {robust}clean {best.clean_acc:.4f}')

    def restore(self, history: List[EpochRecord], model: nn.Module, ema: Optional[nn.Module]) -> None:
        """On a resume from the end of the newest recorded epoch (whose weights ``model`` and ``ema`` are): if the
        records choose that epoch and ``best/`` does not hold it (a kill between the checkpoint and ``best/``), write
        it now."""
        best = self._best(history) if history else None
        if best is None or best.epoch != history[-1].epoch:
            return
        try:
            held = self.run.load_best()[1]
        except RunError:
            held = None
        if held != best.to_dict():
            self.keep(history, best.epoch, model, ema)

    def selected(self, history: List[EpochRecord], model: nn.Module) -> Tuple[nn.Module, Dict[str, Any]]:
        """A copy of ``model`` with the best epoch's weights from ``best/``, and what they are (for the summary).

        Raises:
            TrainingFailed: No held-out figure to choose by, an unreadable ``best/``, or one the records disagree with.
        """
        best = self._best(history)
        if best is None:
            raise TrainingFailed(f'--select-best found no held-out {self.on} accuracy in the records; nothing to '
                                 f'choose.')
        try:
            weights, info = self.run.load_best()
        except RunError as e:
            raise TrainingFailed(str(e)) from e
        if info != best.to_dict():
            raise TrainingFailed(f'{str(self.run.path / "best")!r} holds {info}, but the records choose '
                                 f'{best.to_dict()}; the run folder was changed by hand. Start over with --overwrite.')
        chosen = copy.deepcopy(model)
        chosen.load_state_dict(weights)
        return chosen, dict(best.to_dict(), rule=selection_rule(self.tolerance, self.on), tolerance=self.tolerance,
                            select_on=self.on)
