"""The run folder: the one module that writes and reads what a training run leaves on disk.

    runs/NAME/
        args.yaml         the resolved options the run started with; never rewritten by a resume
        resumes.jsonl     one record per resume: the step it continued from and the options it changed
        metrics.jsonl     one record per epoch
        checkpoints/
            step_00001170/    a complete checkpoint (written to .tmp_step_... and renamed into place):
                model.safetensors      the model and the loss's parameters
                optimizer.safetensors  the optimizer's tensors (momentum buffers)
                state.json             optimizer hyper-parameters, scheduler, counters, history
                ema.safetensors        the weight average, when the run keeps one
            latest                 names the newest complete checkpoint
        best/             with --select-best: the weights of the best epoch on the held-out images so far
            model.safetensors, best.json   (written to .tmp_best and renamed into place)
        model.safetensors, config.json   timm's ``save_for_hf`` export of the final weights
        summary.json      the run's result (the release tooling reads it)

Nothing here is read with pickle: tensors come from safetensors, everything else from JSON or YAML (``safe_load``),
so a file planted in a run folder cannot run code when the run is resumed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

import torch
import yaml

from .config import ConfigError, TrainConfig, merge_resumed
from .fileio import atomic_write_text

if TYPE_CHECKING:  # the run folder records what data a run saw; it never loads any
    from .data import ImageSplit

__all__ = ['RunFolder', 'RunError', 'TrainerState', 'EPOCH_SUMS', 'Checkpoint', 'RunSummary', 'ARGS_FILE',
           'SUMMARY_FILE', 'METRICS_FILE', 'resolve_resume', 'EpochRecord', 'read_metrics']

ARGS_FILE = 'args.yaml'  # the resolved options; RunFolder.read_args reads it
SUMMARY_FILE = 'summary.json'  # a RunSummary, written last by the export; RunFolder.summary reads it
_EXPORT_FILES = ('model.safetensors', 'config.json', SUMMARY_FILE)
METRICS_FILE = 'metrics.jsonl'  # one EpochRecord a line; read_metrics reads it
RUN_FILES = (ARGS_FILE, 'resumes.jsonl', METRICS_FILE, 'checkpoints', 'best') + _EXPORT_FILES


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message says how to fix it."""


def _mistyped(values: Dict[str, Any], kinds: Dict[str, Any]) -> Optional[str]:
    """The first key whose value is neither None nor of its kind in ``kinds`` (default: a number); a JSON true or
    false counts only where the kind is bool. None when every value is as a run writes it."""
    for key, value in values.items():
        want = kinds.get(key, (int, float))
        if value is not None and (not isinstance(value, want) or (isinstance(value, bool) and want is not bool)):
            return key
    return None


@dataclass
class EpochRecord:
    """One line of ``metrics.jsonl``: what an epoch measured. Written by :meth:`RunFolder.write_metrics` (and inside
    every checkpoint), read by :func:`read_metrics`; what a run did not measure is None (older runs lack fields)."""
    epoch: int
    train_loss: Optional[float] = None
    train_acc: Optional[float] = None
    test_acc: Optional[float] = None  # clean accuracy on the test split, last weights
    robust_acc: Optional[float] = None  # PGD-10 of the last weights, on held-out images or the first test images
    test_acc_ema: Optional[float] = None  # the weight average's clean test accuracy
    img_per_s: Optional[float] = None  # over the epoch's training steps, by wall time (a pause in them lowers it)
    lr: Optional[float] = None
    elapsed_s: Optional[float] = None  # wall time since the run began (resumes included)
    cpu_s: Optional[float] = None  # the main process's CPU time since then (all threads; pauses and other jobs not
    # counted); None in runs from before it was recorded, and in runs cut then and resumed after
    paused_s: Optional[float] = None  # how much of elapsed_s the main process stood still (kill -STOP, Ctrl-Z); None
    # like cpu_s in runs from before it was recorded
    robust_attack: Optional[str] = None  # which attack robust_acc is, and on what
    heldout_clean_acc: Optional[float] = None  # --holdout: clean accuracy there, last weights / weight average
    heldout_clean_acc_ema: Optional[float] = None
    robust_acc_ema: Optional[float] = None  # --holdout: PGD-10 of the weight average there
    grad_norm: Optional[float] = None  # the gradient's norm (before any --grad-clip), mean over the epoch's steps,
    grad_norm_max: Optional[float] = None  # and its largest; None in an epoch resumed from a run before they were kept
    collapse: bool = False  # the robust accuracy fell COLLAPSE_DROP below its best before (a warning was logged)

    # the fields two runs of one config and seed may differ in
    TIMINGS = ('img_per_s', 'elapsed_s', 'cpu_s', 'paused_s')
    _ALWAYS = ('epoch', 'train_loss', 'train_acc', 'test_acc', 'robust_acc', 'test_acc_ema', 'img_per_s', 'lr',
               'elapsed_s')

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object: the fields every epoch has, and the others only when measured."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k in self._ALWAYS or (v is not None and v is not False)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> 'EpochRecord':
        """A record from its JSON object; :class:`RunError` (naming ``where``) for anything a run does not write."""
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not isinstance(data.get('epoch'), int) or isinstance(data['epoch'], bool):
            raise RunError(f'{where} holds a line that is not an epoch record: {str(data)[:80]}')
        values = {k: v for k, v in data.items() if k in known}
        key = _mistyped(values, dict(epoch=int, robust_attack=str, collapse=bool))
        if key is not None:
            raise RunError(f'{where}: epoch {data["epoch"]} has {key} = {values[key]!r}, not what a run writes there.')
        return cls(**values)


# what an epoch adds up as it goes (checkpoints carry it, so a resumed epoch's record is the uninterrupted one's):
# loss and correct summed over images, images seen, seconds, steps, the gradient norms' sum and largest
EPOCH_SUMS = dict(loss=0.0, correct=0.0, seen=0.0, time=0.0, steps=0, grad_norm=0.0, grad_norm_max=0.0)


@dataclass
class TrainerState:
    """The counters and records a checkpoint carries besides tensors (JSON)."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: List[EpochRecord] = field(default_factory=list)
    sums: Dict[str, float] = field(default_factory=lambda: dict(EPOCH_SUMS))
    model: str = ''
    num_classes: int = 0

    def to_dict(self) -> Dict[str, Any]:
        """JSON form: the counters as they are, each epoch's record through :meth:`EpochRecord.to_dict`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dict(out, history=[h.to_dict() for h in self.history], sums=dict(self.sums))

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str) -> 'TrainerState':
        """Inverse of :meth:`to_dict`; a bad epoch record raises :class:`RunError` naming ``where``."""
        state = cls(**d)
        state.history = [EpochRecord.from_dict(h, where) for h in state.history]
        return state


@dataclass
class Checkpoint:
    """What one checkpoint holds, as read back."""
    path: Path
    state: TrainerState
    model: Dict[str, torch.Tensor]
    optimizer: Dict[str, Any]  # a torch optimizer state_dict
    scheduler: Dict[str, Any]  # a torch lr_scheduler state_dict without its lr functions
    ema: Optional[Dict[str, torch.Tensor]]


@dataclass
class RunSummary:
    """``summary.json``: what a finished run exported. Written by :meth:`RunFolder.export`, read by :meth:`read`
    (the release tooling's one way in; releases of older versions lack some fields, which then read as None)."""
    model: Optional[str] = None
    test_acc: Optional[float] = None  # clean accuracy of the exported weights on the test split, at training time
    weights: Optional[str] = None  # 'last' or 'ema'
    selected: Optional[Dict[str, Any]] = None  # --select-best: epoch, weights, held-out robust / clean, rule, tolerance
    weights_chosen_on: Optional[str] = None  # without --select-best, which split chose the weight average or the last
    # weights at the end: 'test', 'heldout' with --holdout, or 'recipe' where --export-weights fixed them before
    # training (None in releases from before it was recorded: 'test')
    test_acc_last: Optional[float] = None  # the last epoch's figures of both weights
    test_acc_ema: Optional[float] = None
    robust_acc: Optional[float] = None  # the last PGD-10 measured during training (robust_attack: which, on what)
    robust_attack: Optional[str] = None
    robust_epoch: Optional[int] = None  # the epoch it was measured at
    # 'last': training's PGD-10 attacks the last weights, which need not be the exported ones (python -m
    # eval.robustness measures those); None in summaries written before it was recorded
    robust_weights: Optional[str] = None
    epochs: Optional[int] = None
    wall_time_s: Optional[float] = None
    cpu_time_s: Optional[float] = None  # the main process's CPU time, all threads (see EpochRecord.cpu_s)
    paused_time_s: Optional[float] = None  # how much of wall_time_s the main process stood still (EpochRecord.paused_s)
    hardware: Optional[str] = None
    world_size: Optional[int] = None
    versions: Optional[Dict[str, str]] = None
    dataset: Optional[str] = None

    @property
    def select_on(self) -> Optional[str]:
        """What ``--select-best`` ranked the exported epoch by ('robust' or 'clean'); None when nothing was selected.
        Releases from before ``--select-on`` existed ranked by robust accuracy."""
        return self.selected.get('select_on', 'robust') if self.selected else None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, path: os.PathLike) -> 'RunSummary':
        """Read a ``summary.json``; :class:`RunError` if it is not a JSON object or a field has the wrong type."""
        try:
            data = json.loads(Path(path).read_text(encoding='utf-8'))
        except (OSError, ValueError) as e:
            raise RunError(f'cannot read {str(path)!r} ({type(e).__name__}: {e}).') from e
        if not isinstance(data, dict):
            raise RunError(f'{str(path)!r} is not a JSON object.')
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        key = _mistyped(values, dict(model=str, weights=str, weights_chosen_on=str, robust_attack=str, hardware=str,
                                     dataset=str, epochs=int, world_size=int, selected=dict, versions=dict,
                                     robust_epoch=int, robust_weights=str))
        if key is not None:
            raise RunError(f'{str(path)!r}: {key} is {values[key]!r}, not what a run writes there.')
        return cls(**values)


def _flatten_optimizer(sd: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Split an optimizer state_dict into safetensors-ready tensors and JSON-ready values."""
    tensors, scalars = {}, {}
    for pid, st in sd['state'].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f'{pid}.{k}'] = v.detach().contiguous().cpu()
            else:
                scalars[f'{pid}.{k}'] = v
    return tensors, dict(param_groups=sd['param_groups'], scalars=scalars)


def _unflatten_optimizer(tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta['scalars'].items()):
        pid, name = key.split('.', 1)
        state.setdefault(int(pid), {})[name] = v
    return dict(state=state, param_groups=meta['param_groups'])


class RunFolder:
    """One training run's folder (see the module docstring for the layout)."""

    def __init__(self, path: os.PathLike) -> None:
        self.path = Path(path)
        self.ckpt_root = self.path / 'checkpoints'

    # -- before any work ------------------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        return self.path.is_dir() and any((self.path / f).exists() for f in RUN_FILES)

    def check_usable(self, resume: bool, overwrite: bool) -> None:
        """Refuse a folder that is a file, unwritable, or holds a run that neither --resume nor --overwrite names."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise RunError(f'--output {str(out)!r} is a file; name a folder.')
        if resume and overwrite:
            raise RunError('--resume and --overwrite contradict each other; pass one.')
        if self.holds_run() and not (resume or overwrite):
            raise RunError(f'--output {str(out)!r} already holds a run; pass --resume to continue it, '
                           f'--overwrite to replace it, or choose another folder.')
        if resume and not self.complete_checkpoints():
            raise RunError(f'--resume: {str(out)!r} holds no complete checkpoint to continue from; drop --resume to '
                           f'start a new run there.')
        probe = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path('.'))
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise RunError(f'--output {str(out)!r} cannot be written ({str(probe)!r} is not writable); choose a folder '
                           f'you can write to.')

    def read_args(self) -> Dict[str, Any]:
        try:
            with open(self.path / ARGS_FILE) as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise RunError(f'cannot read {str(self.path / "args.yaml")!r} ({type(e).__name__}: {e}); the run cannot be '
                           f'resumed, start over with --overwrite.') from e
        if not isinstance(data, dict):
            raise RunError(f'{str(self.path / "args.yaml")!r} is not a mapping; start over with --overwrite.')
        return data

    def check_same_data(self, train: ImageSplit, test: ImageSplit) -> None:
        """A resumed run must see the data it started on: the digests of the pixels and labels in ``args.yaml``
        (``train_digest``, ``test_digest``). Runs started before the digests were recorded compare the whole source
        string where it names a sha256; older ones name a loader fingerprint instead, and are not checked.

        Raises:
            RunError: Other data than the run started on.
        """
        old = self.read_args()
        for split, data in (('train', train), ('test', test)):
            was_digest, was = old.get(f'{split}_digest'), old.get(f'{split}_source')
            if isinstance(was_digest, str):
                same = was_digest == data.digest
            else:
                same = not (isinstance(was, str) and ' sha256 ' in was and was != data.source)
            if not same:
                raise RunError(f'the data changed since {str(self.path)!r} started: its {split} split was {was!r}, '
                               f'now {data.source!r} (digest {data.digest}). Resume on the data the run started on, or '
                               f'start over with --overwrite.')

    def prepare(self, overwrite: bool, resolved: Dict[str, Any]) -> None:
        """A new run: clear the run files when overwriting, then write ``args.yaml``."""
        if overwrite and self.path.is_dir():
            for f in RUN_FILES:
                p = self.path / f
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / ARGS_FILE, yaml.safe_dump(resolved, sort_keys=False))

    def record_resume(self, step: int, changed: Dict[str, Tuple[Any, Any]], checkpoint: str) -> None:
        rec = dict(resumed_at_step=step, checkpoint=checkpoint,
                   changed={k: dict(was=a, now=b) for k, (a, b) in sorted(changed.items())})
        old = (self.path / 'resumes.jsonl').read_text() if (self.path / 'resumes.jsonl').is_file() else ''
        atomic_write_text(self.path / 'resumes.jsonl', old + json.dumps(rec) + '\n')

    def write_metrics(self, history: List[EpochRecord]) -> None:
        atomic_write_text(self.path / METRICS_FILE, ''.join(json.dumps(h.to_dict()) + '\n' for h in history))

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def complete_checkpoints(self) -> List[Path]:
        """Complete checkpoints, newest first (``latest`` first when it names a complete one)."""
        done = sorted((p for p in self.ckpt_root.glob('step_*') if (p / 'state.json').is_file()), reverse=True)
        latest = self.ckpt_root / 'latest'
        if latest.is_file():
            named = self.ckpt_root / latest.read_text().strip()
            if named in done:
                done.remove(named)
                done.insert(0, named)
        return done

    def save_checkpoint(self, state: TrainerState, model: Dict[str, torch.Tensor], optimizer: Dict[str, Any],
                        scheduler: Dict[str, Any], ema: Optional[Dict[str, torch.Tensor]], keep: int,
                        before_rename: Optional[Callable[[], None]] = None,
                        metadata: Optional[Dict[str, str]] = None) -> Path:
        """Write a complete checkpoint atomically (temporary folder, then rename), then point ``latest`` at it.
        ``metadata`` goes into the weights files (:func:`timm_mmc.io.config_metadata`: what model they are)."""
        from safetensors.torch import save_file
        name = f'step_{state.global_step:08d}'
        tmp = self.ckpt_root / f'.tmp_{name}'
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.items()}, str(tmp / 'model.safetensors'),
                  metadata=metadata)
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        save_file(opt_tensors, str(tmp / 'optimizer.safetensors'))
        if ema is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, str(tmp / 'ema.safetensors'),
                      metadata=metadata)
        sched = {k: v for k, v in scheduler.items() if k != 'lr_lambdas'}
        if before_rename is not None:
            before_rename()
        atomic_write_text(tmp / 'state.json', json.dumps(dict(trainer=state.to_dict(), optimizer=opt_meta,
                                                              scheduler=sched)))
        final = self.ckpt_root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(self.ckpt_root / 'latest', name)
        for old in sorted(self.complete_checkpoints())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def finished(self) -> bool:
        """Whether the run ended: ``summary.json`` is the last file its export writes."""
        return (self.path / SUMMARY_FILE).is_file()

    def export_unfinished(self) -> bool:
        """Whether the folder holds the trainer's checkpoints and no ``summary.json``: a run still training, or one
        whose export was cut, so that a ``model.safetensors`` there need not be the run's final weights."""
        return bool(self.complete_checkpoints()) and not self.finished()

    def summary(self) -> Optional[RunSummary]:
        """What the run exported (``summary.json``); None before its export."""
        return RunSummary.read(self.path / SUMMARY_FILE) if self.finished() else None

    def history(self) -> List[EpochRecord]:
        """The epochs ``metrics.jsonl`` recorded, oldest first; empty before the first epoch ends."""
        return read_metrics(self.path / METRICS_FILE) if (self.path / METRICS_FILE).is_file() else []

    def last_epoch(self) -> int:
        """The last epoch ``metrics.jsonl`` recorded; 0 when none."""
        records = self.history()
        return records[-1].epoch if records else 0

    def checkpoint_step(self) -> int:
        """The optimizer step a ``--resume`` would continue from (the newest complete checkpoint's); 0 when none."""
        for path in self.complete_checkpoints():
            try:
                return int(json.loads((path / 'state.json').read_text())['trainer']['global_step'])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return 0

    @staticmethod
    def read_checkpoint(path: Path, with_ema: bool) -> Checkpoint:
        """Read one checkpoint; any unreadable or missing part raises :class:`RunError`."""
        from safetensors.torch import load_file
        try:
            meta = json.loads((path / 'state.json').read_text())
            state = TrainerState.from_dict(meta['trainer'], f'{str(path)!r}')
            model = load_file(str(path / 'model.safetensors'))
            optimizer = _unflatten_optimizer(load_file(str(path / 'optimizer.safetensors')), meta['optimizer'])
            ema = load_file(str(path / 'ema.safetensors')) if with_ema else None
            scheduler = dict(meta['scheduler'])
        except FileNotFoundError as e:
            raise RunError(f'checkpoint {str(path)!r} lacks {Path(e.filename).name} (written by an older timm_mmc '
                           f'or without --ema-decay)') from e
        except Exception as e:  # safetensors, JSON and key errors alike: the checkpoint is unusable
            raise RunError(f'checkpoint {str(path)!r} is unreadable ({type(e).__name__}: {e})') from e
        return Checkpoint(path, state, model, optimizer, scheduler, ema)

    def load_latest(self, with_ema: bool, log: Callable[[str], None]) -> Checkpoint:
        """The newest checkpoint that reads back whole, falling back to older ones and saying so."""
        problems = []
        for path in self.complete_checkpoints():
            try:
                ckpt = self.read_checkpoint(path, with_ema)
            except RunError as e:
                problems.append(str(e))
                log(f'warning: {e}; falling back to the previous complete checkpoint.')
                continue
            return ckpt
        raise RunError(f'no usable checkpoint in {str(self.ckpt_root)!r}: {"; ".join(problems) or "none written"}. '
                       f'Start over with --overwrite.')

    # -- the best epoch (--select-best) ----------------------------------------------------------------------------
    def save_best(self, weights: Dict[str, torch.Tensor], info: Dict[str, Any],
                  metadata: Optional[Dict[str, str]] = None) -> None:
        """Replace ``best/`` atomically by these weights and what they are (``info``: epoch, which weights, ...;
        ``metadata``: what model they are, as in :meth:`save_checkpoint`)."""
        from safetensors.torch import save_file
        tmp, final = self.path / '.tmp_best', self.path / 'best'
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / 'model.safetensors'),
                  metadata=metadata)
        atomic_write_text(tmp / 'best.json', json.dumps(info))
        old = self.path / '.old_best'
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def load_best(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """The weights in ``best/`` and their ``best.json``; :class:`RunError` if missing or unreadable."""
        from safetensors.torch import load_file
        folder = self.path / 'best'
        if not (folder / 'best.json').is_file() and (self.path / '.old_best' / 'best.json').is_file():
            folder = self.path / '.old_best'  # a kill between the two renames of save_best
        try:
            return load_file(str(folder / 'model.safetensors')), json.loads((folder / 'best.json').read_text())
        except Exception as e:
            raise RunError(f'the best epoch\'s weights in {str(folder)!r} are unreadable ({type(e).__name__}: {e}); '
                           f'start over with --overwrite.') from e

    # -- the end ----------------------------------------------------------------------------------------------
    def export(self, model: torch.nn.Module, model_args: Dict[str, Any], class_names: List[str],
               summary: RunSummary) -> None:
        """timm's ``save_for_hf`` (``model.safetensors`` + ``config.json``) and ``summary.json``, each atomically.

        ``summary.json`` marks a finished export: it is removed before the weights and config are replaced and written
        after them, so a kill part-way leaves a run that is not finished (a ``--resume`` exports again), never a
        summary beside weights it does not describe."""
        from timm.models import save_for_hf
        tmp = self.path / '.export_tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        save_for_hf(model, tmp, model_args=model_args, safe_serialization=True,
                    model_config=dict(label_names=list(class_names)))
        (self.path / SUMMARY_FILE).unlink(missing_ok=True)
        for f in ('model.safetensors', 'config.json'):
            os.replace(tmp / f, self.path / f)
        shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_text(self.path / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2))


def read_metrics(path: os.PathLike) -> List[EpochRecord]:
    """The per-epoch records of a ``metrics.jsonl`` (a run folder's, or a release's ``training/`` copy).

    Raises:
        RunError: The file is unreadable, or a line is not an epoch record as a run writes it.
    """
    try:
        lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise RunError(f'cannot read the training records {str(path)!r} ({type(e).__name__}: {e}).') from e
    return [EpochRecord.from_dict(r, repr(str(path))) for r in lines]


def resolve_resume(cfg: TrainConfig, given: Set[str]) -> Tuple[TrainConfig, Dict[str, Tuple[Any, Any]]]:
    """The options of a resumed run: its ``args.yaml`` merged with this command's by :func:`config.merge_resumed`.

    Returns:
        The config to resume with, and ``{option: (was, now)}`` for the options this command changed.

    Raises:
        RunError: The run's options are unreadable or no longer make a valid config, or the command changes one that
            would rewrite its history.
    """
    folder = RunFolder(cfg.output)
    try:
        return merge_resumed(cfg, given, folder.read_args(), str(folder.path / ARGS_FILE))
    except ConfigError as e:
        raise RunError(str(e)) from e
