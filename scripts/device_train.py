"""Train recipes side by side on a lent GPU machine within a fixed wall-time budget, and pack the run folders.

    PYTHONPATH=$PWD python scripts/device_train.py --data .devdata/cifar10 --out "$OUT" --budget-s 480 \
        -c gpu/resnet32_mmc_at -c gpu/resnet32_sce_at

The machine is lent for minutes and starts bare, so one command does everything:

1. decode the data set once into a folder of per-split ``.npz`` files with pyarrow and Pillow (``timm_mmc.data``;
   such machines have no ``datasets``);
2. a probe: every recipe for two epochs on the first ``--probe-images`` training images (the second is timed: the
   first pays the warm-up), all of them at once, as the real runs will share the machine. Recipes of unequal cost
   share it unequally: once the cheaper probes end, the dearest one's second epoch runs partly alone and is timed
   too fast, so a mix of cheap and dear recipes (N-FGSM beside PGD-10) can be sized past the deadline (its run is
   then stopped and packed, to resume); probe such a mix with ``--epochs`` fixed instead;
3. the epochs that fit what is left of the budget, from the probe's measured epoch and start-up times (one number for
   every recipe, so that they stay comparable; at most ``--max-epochs``);
4. the runs, side by side, each logging to ``OUT/NAME.log``; a run still going at the deadline is stopped (its last
   checkpoint resumes with ``--resume``);
5. each run folder packed as ``OUT/NAME.tar.gz`` (finished or not) and what the script measured and chose in
   ``OUT/device_train.json``.

A run longer than one lease: ``--epochs N`` fixes its length and skips the probe (step 2); the runs train until the
deadline and are packed. The next lease carries that ``OUT`` folder back and passes it as ``--resume-from``: each run
is unpacked and continues from its last checkpoint (``--resume``, bit-exact), keeping its own length and options
(pass the same ``--data``, ``--extra`` and ``--work`` as the first lease: the run checks that nothing else changed,
and another ``--data`` is refused before the decode by its parquet files' sha256 in ``device_train.json``)::

    PYTHONPATH=$PWD python scripts/device_train.py --data .devdata/cifar10 --out "$OUT" --budget-s 520 \
        --resume-from .devruns -c gpu/resnet32_mmc_at_pgd

Rehearse it on the CPU with a tiny budget first (``tests/test_device_script.py`` does, with ``--extra``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

_STARTED = time.time()  # before the heavy imports: --budget-s is the whole command's wall time

import numpy as np  # noqa: E402
import torch  # noqa: E402

from timm_mmc.config import ConfigError, TrainConfig, parse_config  # noqa: E402
from timm_mmc.data import DataError  # noqa: E402
from timm_mmc.io import file_sha256  # noqa: E402
from timm_mmc.npz import parquet_to_npz_folder  # noqa: E402
from timm_mmc.runfolder import RunError, RunFolder, resolve_resume  # noqa: E402
from timm_mmc.status import ExitStatus  # noqa: E402

END_MARGIN_S = 25.0  # the last epoch's export, the final test pass and the packing
STOP_GRACE_S = 15.0  # how long the stopped runs together get to finish their checkpoint before SIGKILL


def _name(recipe: str) -> str:
    return Path(recipe).stem


def _train_args(recipe: Optional[str], data: Path, out: Path, extra: Sequence[str]) -> List[str]:
    """``timm_mmc.train``'s arguments: a new run from ``recipe``, or (``recipe`` None) the run in ``out`` continued
    with the options in its ``args.yaml`` (``--dataset`` must then be the path it started on: the same ``--work``)."""
    return [*(['-c', recipe] if recipe else ['--resume']), '--dataset', str(data), '--output', str(out),
            '--no-progress', *extra]


def _launch(train_args: Sequence[str], log: Path) -> subprocess.Popen:
    """One training run in its own process group, logging to ``log`` (its first line is the command)."""
    cmd = [sys.executable, '-m', 'timm_mmc.train', *train_args]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(log, 'w') as fh:  # the child keeps its own copy of the descriptor
        fh.write(' '.join(cmd) + '\n')
        fh.flush()
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _run_all(jobs: Dict[str, subprocess.Popen], deadline: float) -> Dict[str, Dict[str, float]]:
    """Wait for every job until ``deadline``; stop the ones still going. Per job: return code and wall seconds."""
    start, done = time.time(), {}
    while len(done) < len(jobs):
        for name, proc in jobs.items():
            if name not in done and proc.poll() is not None:
                done[name] = dict(rc=proc.returncode, wall_s=time.time() - start, stopped=False)
        if time.time() > deadline:
            going = {name: proc for name, proc in jobs.items() if name not in done}
            for proc in going.values():  # every run told at once, then one shared grace period
                os.killpg(proc.pid, signal.SIGTERM)
            grace_end = time.time() + STOP_GRACE_S
            for name, proc in going.items():
                try:
                    proc.wait(timeout=max(grace_end - time.time(), 0.1))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                done[name] = dict(rc=proc.returncode, wall_s=time.time() - start, stopped=True)
        time.sleep(1.0)
    return done


def _data_files(data: Path) -> Dict[str, str]:
    """The sha256 of every parquet file of the data set, by path inside it: what a later lease compares before the
    decode, so that another data set costs no lease time (``train --resume`` would refuse it only after the decode)."""
    return {f.relative_to(data).as_posix(): file_sha256(f) for f in sorted(Path(data).rglob('*.parquet'))}


def _check_same_data(earlier_out: Path, files: Dict[str, str]) -> None:
    """Refuse data files other than those the earlier lease (its ``device_train.json``) trained on.

    Raises:
        ValueError: The files differ; the message names the fix.
    """
    report = earlier_out / 'device_train.json'
    before = json.loads(report.read_text()).get('data_files') if report.is_file() else None
    if before is not None and before != files:  # an earlier lease's report without the field: train checks later
        changed = sorted(k for k in set(before) | set(files) if before.get(k) != files.get(k))
        raise ValueError(f'--data is not the data set the runs in {str(earlier_out)!r} trained on (these parquet '
                         f'files differ: {", ".join(changed)}); pass the --data of the lease that started them.')


def _epoch_estimate(run: Path, n_train: int, probe_train: int, wall_s: float) -> Dict[str, float]:
    """From a two-epoch probe: seconds for one full epoch (the second epoch's training scaled to ``n_train`` images,
    its evaluations as measured) and for a run's fixed costs (start-up, the first epoch's warm-up, the end).

    Time the probe stood still (``paused_s``: a frozen container, a ``kill -STOP``) is left out of every figure, since
    the run it sizes will not repeat it; its training speed is left as measured, a pause inside the steps lowering it.
    """
    first, second = RunFolder(run).history()[-2:]
    active_first, active_second = (r.elapsed_s - (r.paused_s or 0.0) for r in (first, second))  # seconds not paused
    epoch_s = active_second - active_first
    eval_s = max(epoch_s - probe_train / second.img_per_s, 0.0)
    return dict(img_per_s=second.img_per_s, eval_s=eval_s, epoch_s=n_train / second.img_per_s + eval_s,
                startup_s=max(wall_s - second.elapsed_s, 0.0) + max(active_first - epoch_s, 0.0))


def _pack(run: Path, out: Path) -> None:
    tmp = out.with_name(out.name + '.part')
    with tarfile.open(tmp, 'w:gz') as tar:
        tar.add(run, arcname=run.name)
    os.replace(tmp, out)


def _member_ok(member: tarfile.TarInfo, name: str) -> bool:
    """A regular file or folder inside run ``name``: no link, device, absolute path or ``..``."""
    parts = Path(member.name).parts
    return ((member.isfile() or member.isdir()) and bool(parts) and parts[0] == name and '..' not in parts
            and not Path(member.name).is_absolute())


def _unpack(packed: Path, dest: Path, name: str) -> Path:
    """Unpack a run folder that :func:`_pack` wrote on an earlier lease into ``dest / name``, replacing what is there.

    The archive is data: only regular files and folders under ``name/`` are accepted, never links, devices or paths
    that leave ``dest``; the whole gzip stream is read first, so that a damaged copy fails its checksum instead of
    unpacking changed bytes (tarfile stops at the archive's end marker and never reaches the gzip trailer).

    Args:
        packed: ``NAME.tar.gz`` from an earlier lease's ``OUT`` folder.
        dest: The folder that holds the run folders (``WORK/runs``).
        name: The run's name (the recipe's file stem).

    Returns:
        The unpacked run folder.

    Raises:
        ValueError: The archive cannot be read, is damaged or holds anything else; the message names the fix.
    """
    fix = 'pass the OUT folder of an earlier scripts/device_train.py lease, or leave the recipe out'
    if (dest / name).is_symlink():
        raise ValueError(f'{str(dest / name)!r} is a link; remove it or pass another --work.')
    try:
        with gzip.open(packed) as stream:
            while stream.read(1 << 20):
                pass
        with tarfile.open(packed, 'r:gz') as tar:
            members = tar.getmembers()
            bad = next((m.name for m in members if not _member_ok(m, name)), None)
            if bad is not None:
                raise ValueError(f'{str(packed)!r} holds {bad!r}, which is not a file or folder of run {name!r}; '
                                 f'{fix}.')
            if not any(m.isfile() and m.name == f'{name}/args.yaml' for m in members):
                raise ValueError(f'{str(packed)!r} holds no args.yaml for run {name!r}: it is not a packed run folder; '
                                 f'{fix}.')
            if (dest / name).exists():
                shutil.rmtree(dest / name)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise ValueError(f'cannot unpack {str(packed)!r} ({type(e).__name__}: {e}); {fix}.') from e
    return dest / name


def _check_resumable(run: Path, recipe: str, data: Path, extra: Sequence[str]) -> int:
    """What ``train --resume`` would refuse, asked before the lease's work: a changed option (another ``--work`` moves
    the data path, another ``--extra`` or an edited recipe changes the options) or no complete checkpoint. The
    recipe's length is not compared: a lease may have set it (``--epochs``, or the probe), and the run keeps its own.
    Returns the last epoch the run recorded.

    Raises:
        ValueError: The run cannot be continued as asked; the message names the fix.
    """
    try:
        cfg = parse_config(['-c', recipe, *_train_args(None, data, run, [*extra, '--keep-checkpoints', '1'])])
        RunFolder(run).check_usable(resume=True, overwrite=False)
        resolve_resume(cfg, set(cfg.given) - {'epochs'})
    except (ConfigError, RunError) as e:
        raise ValueError(f'the packed run {run.name!r} cannot be continued: {e} Pass the recipe as it was, and the '
                         f'--work and --extra of the lease that started it.') from e
    return RunFolder(run).last_epoch()


def _probe(recipes: Dict[str, str], cfgs: Dict[str, TrainConfig], data: Path, n_images: int, probe_images: int,
           work: Path, out: Path, extra: Sequence[str], deadline: float
           ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, int]]:
    """Two epochs of every recipe side by side: per recipe that ran, :func:`_epoch_estimate`; and every return code.
    A recipe whose probe fails is left out (and said so): one broken recipe must not cost the others the lease."""
    shutil.rmtree(work / 'probe', ignore_errors=True)  # a retry with the same --work starts the probe afresh
    probe_n = {n: min(probe_images, cfgs[n].train_limit or n_images, n_images) for n in recipes}  # --extra may set one
    jobs = {n: _launch(_train_args(c, data, work / 'probe' / n, [*extra, '--epochs', '2', '--train-limit',
                                                                 str(probe_n[n])]),
                       out / f'probe_{n}.log') for n, c in recipes.items()}
    ends = _run_all(jobs, deadline=deadline)
    probe = {}
    for n, cfg in cfgs.items():
        if ends[n]['rc'] != 0:
            print(f'error: the probe of {n} failed (rc {ends[n]["rc"]}); see {out / f"probe_{n}.log"}; it is '
                  f'left out', file=sys.stderr, flush=True)
            continue
        limit = min(cfg.train_limit or n_images, n_images)
        probe[n] = _epoch_estimate(work / 'probe' / n, limit - cfg.holdout, min(probe_images, limit) - cfg.holdout,
                                   ends[n]['wall_s'])
    return probe, {n: e['rc'] for n, e in ends.items()}


def main(argv: Sequence[str] | None = None, started: Optional[float] = None) -> int:
    """Run the command; ``started``: when the command started (the script's start, imports included), from which
    ``--budget-s`` counts (default now)."""
    p = argparse.ArgumentParser(prog='scripts/device_train.py', description=__doc__.split('\n')[0])
    p.add_argument('-c', '--config', action='append', required=True, help='a recipe name or YAML; repeat for more')
    p.add_argument('--data', required=True, help='local data set folder in the Hub parquet layout')
    p.add_argument('--out', required=True, help='where logs, packed run folders and device_train.json go')
    p.add_argument('--work', default='/tmp/device_train', help='scratch folder: decoded data, probe and run folders')
    p.add_argument('--budget-s', type=float, required=True, help='wall seconds for the whole script, probe included')
    p.add_argument('--probe-images', type=int, default=12800, help='training images of the two-epoch probe')
    p.add_argument('--max-epochs', type=int, default=200,
                   help='at most this many epochs, where the probe chooses them (the paper trains 200)')
    p.add_argument('--epochs', type=int, default=None,
                   help='a fixed run length, for a run over several leases: no probe; the runs train until the '
                        'deadline and are packed for --resume-from (default: what fits this lease, by the probe)')
    p.add_argument('--resume-from', default=None,
                   help='the OUT folder of an earlier lease (NAME.tar.gz for every recipe): the runs continue there '
                        'with --resume')
    p.add_argument('--extra', default='', help='flags added to every training command (a tiny rehearsal: '
                                               '"--train-limit 256 --holdout 32 --batch-size 32")')
    args = p.parse_args(argv)
    t0 = started if started is not None else time.time()
    out, work = Path(args.out), Path(args.work)
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        p.error(f'--budget-s must be a number of seconds > 0 (got {args.budget_s}).')
    for flag, value in (('--probe-images', args.probe_images), ('--max-epochs', args.max_epochs)):
        if value < 1:
            p.error(f'{flag} must be >= 1 (got {value}).')
    extra = args.extra.split()
    recipes = {_name(c): c for c in args.config}
    if len(recipes) != len(args.config):
        p.error('two recipes share a name; their run folders and logs would collide.')
    cfgs = {n: parse_config(['-c', c, *extra]) for n, c in recipes.items()}  # bad recipes fail here, before the work
    if args.epochs is not None and args.epochs < 1:
        p.error(f'--epochs must be >= 1 (got {args.epochs}).')
    if args.epochs is not None and args.resume_from:
        p.error('a run continued with --resume-from keeps its own length: drop --epochs.')
    for n, cfg in cfgs.items() if args.epochs is None and not args.resume_from else ():  # the probe will run
        if args.probe_images < cfg.holdout + cfg.batch_size:
            p.error(f'--probe-images {args.probe_images} leaves {n} less than one batch to train on once its '
                    f'{cfg.holdout} held-out images are set aside: pass --probe-images '
                    f'{cfg.holdout + cfg.batch_size} or more (holdout + batch size).')
    packed = {n: Path(args.resume_from) / f'{n}.tar.gz' for n in recipes} if args.resume_from else {}
    missing = [str(f) for f in packed.values() if not f.is_file()]
    if missing:
        p.error(f'--resume-from: no packed run {", ".join(missing)}; pass the OUT folder of the lease that ran these '
                f'recipes, or leave the recipe out.')
    data_files = _data_files(Path(args.data))
    try:  # unpacked and checked before any work, so that a bad archive, other data or a changed option cost nothing
        if args.resume_from:
            _check_same_data(Path(args.resume_from), data_files)
        report_resumed = {n: _check_resumable(_unpack(f, work / 'runs', n), recipes[n], work / 'data', extra)
                          for n, f in packed.items()}
    except ValueError as e:
        p.error(str(e))
    out.mkdir(parents=True, exist_ok=True)  # after every check: a refused command leaves no folder
    report: Dict[str, object] = dict(
        recipes=args.config, extra=extra, budget_s=args.budget_s, data_files=data_files,
        python=platform.python_version(), torch=torch.__version__,
        device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu',
        resumed_from_epoch=report_resumed)
    print(f'device_train: {report["device"]}, torch {torch.__version__}, recipes {", ".join(cfgs)}', flush=True)

    try:
        data = parquet_to_npz_folder(args.data, work / 'data')
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return ExitStatus.BAD_INPUT
    n_images = int(np.load(data / 'train.npz')['labels'].shape[0])
    report['data_s'] = time.time() - t0
    print(f'data: {n_images} training images decoded in {report["data_s"]:.0f} s', flush=True)

    fixed = bool(packed) or args.epochs is not None  # a run over several leases: stopping at the deadline is the plan
    if fixed:
        names, epochs = list(recipes), args.epochs
    else:
        start = time.time()
        probe, report['probe_rc'] = _probe(recipes, cfgs, data, n_images, args.probe_images, work, out, extra,
                                           deadline=t0 + args.budget_s)
        if not probe:
            (out / 'device_train.json').write_text(json.dumps(report, indent=1))
            return ExitStatus.FAILED
        report['probe'] = probe
        report['probe_s'] = time.time() - start
        left = args.budget_s - (time.time() - t0) - max(v['startup_s'] for v in probe.values()) - END_MARGIN_S
        epochs = max(1, min(args.max_epochs, math.floor(left / max(v['epoch_s'] for v in probe.values()))))
        names = list(probe)
        print(f'probe ({report["probe_s"]:.0f} s): ' + '; '.join(
            f'{n} {v["img_per_s"]:.0f} img/s, {v["epoch_s"]:.1f} s an epoch, start-up {v["startup_s"]:.0f} s'
            for n, v in probe.items()) + f'; {left:.0f} s left for epochs -> {epochs} epochs', flush=True)
    report['epochs'] = epochs  # None: each resumed run keeps its own length

    runs = {n: work / 'runs' / n for n in names}
    todo = [n for n in names if not (packed and RunFolder(runs[n]).finished())]  # it may have ended on a past lease
    length = [] if packed else ['--epochs', str(epochs)]  # a continued run keeps its own
    if not packed:  # a retry with the same --work: a new run, not what an earlier attempt left there
        for run in runs.values():
            shutil.rmtree(run, ignore_errors=True)
    steps_before = {n: RunFolder(runs[n]).checkpoint_step() for n in names}  # after the removal: a new run has none
    jobs = {n: _launch(_train_args(None if packed else recipes[n], data, runs[n],
                                   [*extra, *length, '--keep-checkpoints', '1']), out / f'{n}.log') for n in todo}
    # the deadline stops the runs (in fixed mode, by plan): keep the stop, the packing and the report inside the budget
    runs_end = _run_all(jobs, deadline=t0 + args.budget_s - END_MARGIN_S)
    ok = True
    for n, run in runs.items():
        if run.exists():
            _pack(run, out / f'{n}.tar.gz')
        end = runs_end.setdefault(n, dict(rc=0, wall_s=0.0, stopped=False))
        end.update(finished_before=n not in todo, epoch=RunFolder(run).last_epoch(),
                   step=RunFolder(run).checkpoint_step())
        note = ', finished on an earlier lease' if n not in todo else ''
        if end['stopped'] and fixed and end['step'] > steps_before[n]:
            note = ', stopped at the deadline (--resume-from continues it)'
        elif end['stopped']:
            note = (', stopped at the deadline with no new checkpoint: give it a larger --budget-s, or checkpoint '
                    'within epochs (--extra "--checkpoint-every N")' if fixed else ', stopped at the deadline')
            ok = False
        elif end['rc'] != 0:
            note, ok = f', failed: see {out / f"{n}.log"}', False
        print(f'{n}: rc {end["rc"]}, {end["wall_s"] / 60:.1f} min, epoch {end["epoch"]}{note}', flush=True)
    report['runs'] = runs_end
    report['total_s'] = time.time() - t0
    (out / 'device_train.json').write_text(json.dumps(report, indent=1))
    return ExitStatus.OK if ok else ExitStatus.FAILED


if __name__ == '__main__':
    sys.exit(main(started=_STARTED))
