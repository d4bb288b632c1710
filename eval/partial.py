"""An unfinished evaluation: the state that ``python -m eval.robustness --resume`` continues from.

A full suite on 10,000 images runs for hours on a CPU. While it runs, every process writes what it has measured after
each attack into ``OUT/STEM.partial/``, so a killed evaluation loses only the attack it was in. ``--resume`` reads it
back, runs the attacks still to do and writes the report as one run would have; the folder is removed once the report
is written. Every attack has its own seed, so a resumed evaluation gives the same figures as an uninterrupted one.

Layout (one pair of files per process, each pair written atomically)::

    STEM.partial/
        rank0.json          {"format": 4, "identity": {...}, "done": [attack names, in suite order],
                             "times": {...}, "warnings": [...], "extra": {...}, "elapsed_s": 512.3,
                             "machines": {attack name: "cpu: AMD EPYC (AVX2)", ...}}
        rank0.safetensors   positions, clean, zero_grad/OBJECTIVE, attacks/NAME/KEY (per-sample tensors)

``identity`` holds everything that changes a figure: the options that name the attacks and the data (those the suite
fills in when left out, as they resolved; not those only absent attack families read), the sha256 of the weights (and
of the transfer source's), the evaluated indices, the device type and GPU, the number of processes and the package
versions. A resume whose identity differs is refused with the keys that differ; the runner then checks that the clean
predictions are the saved ones and takes the finished attacks and the zero-gradient flags as they are
(:func:`eval.runner.run_suite`). The processor is not part of it: the same clean predictions on another CPU make an
honest continuation, so ``machines`` records where each attack ran and :func:`machine_note` words it for the report.
This module is the only reader and writer of the folder.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch

from timm_mmc import atomic_write_set

from .runner import Records

__all__ = ['PARTIAL_FORMAT', 'PartialError', 'PartialState', 'partial_dir', 'identity_of', 'save', 'load', 'remove',
           'identity_changes', 'resume', 'machine_note']

PARTIAL_FORMAT = 4  # 2: the suite's options as resolved in the identity, and where each attack ran; 3: the
# example counts and AutoAttack budget as run (--cw-n 1000 on 500 examples is 500); 4: without the options of
# families the suite lacks (--spsa-n on the quick suite)

# options of the command line that change no figure of an attack: a resume may give them differently (the device's
# type is part of the identity; flip TTA is measured after the attacks, in the resumed part)
RUN_ONLY_OPTIONS = ('resume', 'overwrite', 'no_progress', 'threads', 'out', 'name', 'device', 'tta_flip')


class PartialError(ValueError):
    """A partial state that cannot be resumed; the message names the problem and the fix."""


@dataclass
class PartialState:
    """What one process had measured when its evaluation stopped.

    Attributes:
        identity: What the evaluation was (:func:`identity_of`); a resume must match it.
        records: The per-sample records of the finished attacks (``records.attacks`` holds exactly ``done``).
        done: Names of the finished attacks, a prefix of the suite's order.
        elapsed_s: Seconds the earlier parts of the evaluation ran, in all.
        machines: The processor each finished attack ran on, by attack name.
    """
    identity: Dict[str, Any]
    records: Records
    done: List[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    machines: Dict[str, str] = field(default_factory=dict)


def partial_dir(out_dir: Path, stem: str) -> Path:
    """Where an evaluation named ``stem`` keeps its unfinished state: ``out_dir/stem.partial``."""
    return Path(out_dir) / f'{stem}.partial'


def _plain(value: Any) -> Any:
    """A command-line value as JSON writes it (enums by value, tuples as lists)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def identity_of(options: Dict[str, Any], leave_out: Iterable[str] = (), **resolved: Any) -> Dict[str, Any]:
    """The identity of an evaluation: its options (:data:`RUN_ONLY_OPTIONS` left out) and what they resolved to.

    Args:
        options: ``vars(args)`` of the command line.
        leave_out: Keys no attack of the suite reads (``spsa_n`` in a suite without SPSA), left out of both.
        resolved: What options resolved to (these replace an option of the same name: ``cw_n=25`` for an absent
            ``--cw-n``) and facts found after parsing (the weights' sha256, the indices, the device type, the
            processes).
    """
    skip = set(RUN_ONLY_OPTIONS) | set(leave_out)
    ident = {k: _plain(v) for k, v in sorted(options.items()) if k not in skip}
    ident.update({k: _plain(v) for k, v in resolved.items() if k not in skip})
    return json.loads(json.dumps(ident))  # exactly what a file read back gives, so the two compare equal


def identity_changes(saved: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    """The keys whose values differ between a saved identity and the current one, as ``key: saved -> now``."""
    out = []
    for k in sorted(set(saved) | set(now)):
        if saved.get(k) != now.get(k):
            a, b = (_short(d.get(k, '(absent)')) for d in (saved, now))
            out.append(f'{k}: {a} -> {b}')
    return out


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + '...'


def _files(folder: Path, rank: int) -> Dict[str, Path]:
    return {'json': folder / f'rank{rank}.json', 'tensors': folder / f'rank{rank}.safetensors'}


def save(folder: Path, rank: int, identity: Dict[str, Any], records: Records, elapsed_s: float,
         machines: Dict[str, str]) -> None:
    """Write this process's finished attacks (all of ``records.attacks``) into ``folder``, replacing its earlier
    pair; ``machines`` names the processor each of them ran on."""
    from safetensors.torch import save as to_bytes
    tensors = {'positions': records.positions, 'clean': records.clean}
    tensors.update({f'zero_grad/{k}': v for k, v in records.zero_grad.items()})
    for name, parts in records.attacks.items():
        tensors.update({f'attacks/{name}/{k}': v for k, v in parts.items()})
    meta = dict(format=PARTIAL_FORMAT, identity=identity, done=list(records.attacks), times=records.times,
                warnings=records.warnings, extra=records.extra, elapsed_s=elapsed_s,
                machines={k: machines[k] for k in records.attacks})
    text = json.dumps(meta, indent=1)  # extra facts that JSON cannot hold would not fit the report either: a bug
    folder.mkdir(parents=True, exist_ok=True)
    paths = _files(folder, rank)
    atomic_write_set({paths['tensors']: to_bytes({k: v.detach().cpu().clone() for k, v in tensors.items()}),
                      paths['json']: text.encode()})


def load(folder: Path, rank: int) -> PartialState:
    """Read back what :func:`save` wrote for process ``rank``.

    Raises:
        PartialError: The files are missing, torn or of another format; the message says to start over.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    paths = _files(folder, rank)
    fix = f'start the evaluation over with --overwrite (it removes {folder}).'
    if not paths['json'].is_file() or not paths['tensors'].is_file():
        raise PartialError(f'{folder} holds no state of process {rank}; {fix}')
    try:
        meta = json.loads(paths['json'].read_text())
        tensors = load_file(str(paths['tensors']))
    except (OSError, ValueError, SafetensorError) as e:
        raise PartialError(f'{folder} cannot be read ({e}); {fix}') from None
    if not isinstance(meta, dict) or meta.get('format') != PARTIAL_FORMAT:
        raise PartialError(f'{paths["json"]} is not a partial state of format {PARTIAL_FORMAT}; {fix}')
    try:
        done = list(meta['done'])
        rec = Records(tensors['positions'], tensors['clean'], times=dict(meta['times']),
                      warnings=list(meta['warnings']), extra=dict(meta['extra']))
        identity, elapsed_s = dict(meta['identity']), float(meta['elapsed_s'])
        machines = {str(k): str(v) for k, v in dict(meta['machines']).items()}
    except (KeyError, TypeError, ValueError) as e:
        raise PartialError(f'{folder} lacks part of its state ({e!r}); {fix}') from None
    rec.zero_grad = {k.split('/', 1)[1]: v for k, v in tensors.items() if k.startswith('zero_grad/')}
    for name in done:
        prefix = f'attacks/{name}/'
        parts = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not parts:
            raise PartialError(f'{paths["tensors"]} lacks the records of {name}; {fix}')
        rec.attacks[name] = parts
    return PartialState(identity=identity, records=rec, done=done, elapsed_s=elapsed_s, machines=machines)


def resume(folder: Path, rank: int, world: int, identity: Dict[str, Any], device: torch.device) -> PartialState:
    """What this process had finished, for ``--resume``: its records, the seconds the earlier parts ran and where each
    finished attack ran.

    Every process keeps the same number of finished attacks (the fewest any of them had), so that each one takes part
    in the same collectives after the resume.

    Raises:
        PartialError: The state cannot be read or belongs to another evaluation; the message names what differs.
    """
    problem, state = None, None
    try:
        state = load(folder, rank)
        changed = identity_changes(state.identity, identity)
        if changed:
            raise PartialError(f'--resume: {folder} belongs to another evaluation ({"; ".join(changed)}); give the '
                               f'options it had, or start over with --overwrite.')
    except PartialError as e:
        problem = e
    keep = -1 if problem else len(state.done)
    if world > 1:  # every process learns of a problem any of them has, instead of waiting for it in a collective
        import torch.distributed as dist
        t = torch.tensor([keep], device=device if device.type == 'cuda' else 'cpu')
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        keep = int(t.item())
    if problem:
        raise problem
    if keep < 0:
        raise PartialError(f'--resume: another process cannot resume from {folder} (its own message says why); start '
                           f'over with --overwrite.')
    state.done = state.done[:keep]
    state.records.attacks = {k: state.records.attacks[k] for k in state.done}
    state.machines = {k: state.machines[k] for k in state.done if k in state.machines}
    return state


def machine_note(machines: Dict[str, str], here: str, names: Sequence[str]) -> Optional[str]:
    """The report's warning when a resumed evaluation's attacks ran on more than one processor, else None.

    Args:
        machines: Where the attacks finished before the last resume ran, by name (:attr:`PartialState.machines`).
        here: The processor of the last part; it ran every attack ``machines`` does not name.
        names: Every attack of the suite, in order.
    """
    where: Dict[str, List[str]] = {}
    for name in names:
        where.setdefault(machines.get(name, here), []).append(name)
    if len(where) < 2:
        return None
    parts = '; '.join(f'{", ".join(group)} on {machine}' for machine, group in where.items())
    return (f'resumed on another machine, so the attacks ran on {len(where)} processors: {parts}. The clean '
            f'predictions agreed on each; an uncut run could differ in the last digits of an attack.')


def remove(folder: Path) -> None:
    """Remove an evaluation's partial state (after its report is written, to start over, or after a failed check)."""
    shutil.rmtree(folder, ignore_errors=True)
