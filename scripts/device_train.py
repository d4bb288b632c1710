"""Train recipes side by side on a lent GPU machine within a fixed wall-time budget, and pack the run folders.

    PYTHONPATH=$PWD python scripts/device_train.py --data .devdata/cifar10 --out "$OUT" --budget-s 480 \
        -c gpu/resnet32_mmc_at -c gpu/resnet32_sce_at

The machine is lent for minutes and starts bare, so one command does everything:

1. decode the data set once into a folder of per-split ``.npz`` files with pyarrow and Pillow (``timm_mmc.data``;
   such machines have no ``datasets``);
2. a probe: every recipe for two epochs on the first ``--probe-images`` training images (the second is timed: the
   first pays the warm-up), all of them at once, as the real runs will share the machine;
3. the epochs that fit what is left of the budget, from the probe's measured epoch and start-up times (one number for
   every recipe, so that they stay comparable; at most ``--max-epochs``);
4. the runs, side by side, each logging to ``OUT/NAME.log``; a run still going at the deadline is stopped (its last
   checkpoint resumes with ``--resume``);
5. each run folder packed as ``OUT/NAME.tar.gz`` (finished or not) and what the script measured and chose in
   ``OUT/device_train.json``.

Rehearse it on the CPU with a tiny budget first (``tests/test_device_script.py`` does, with ``--extra``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from timm_mmc.config import TrainConfig, parse_config
from timm_mmc.data import DataError
from timm_mmc.npz import parquet_to_npz_folder
from timm_mmc.runfolder import METRICS_FILE, read_metrics

END_MARGIN_S = 25.0  # the last epoch's export, the final test pass and the packing


def _name(recipe: str) -> str:
    return Path(recipe).stem


def _launch(recipe: str, data: Path, out: Path, args: Sequence[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'timm_mmc.train', '-c', recipe, '--dataset', str(data), '--output', str(out),
           '--no-progress', *args]
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
            for name, proc in jobs.items():
                if name not in done:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    done[name] = dict(rc=proc.returncode, wall_s=time.time() - start, stopped=True)
        time.sleep(1.0)
    return done


def _epoch_estimate(run: Path, n_train: int, probe_train: int, wall_s: float) -> Dict[str, float]:
    """From a two-epoch probe: seconds for one full epoch (the second epoch's training scaled to ``n_train`` images,
    its evaluations as measured) and for a run's fixed costs (start-up, the first epoch's warm-up, the end)."""
    first, second = read_metrics(run / METRICS_FILE)[-2:]
    epoch_s = second.elapsed_s - first.elapsed_s
    train_s = probe_train / second.img_per_s
    eval_s = max(epoch_s - train_s, 0.0)
    return dict(img_per_s=second.img_per_s, eval_s=eval_s, epoch_s=n_train / second.img_per_s + eval_s,
                startup_s=max(wall_s - second.elapsed_s, 0.0) + max(first.elapsed_s - epoch_s, 0.0))


def _pack(run: Path, out: Path) -> None:
    tmp = out.with_name(out.name + '.part')
    with tarfile.open(tmp, 'w:gz') as tar:
        tar.add(run, arcname=run.name)
    os.replace(tmp, out)


def _probe(recipes: Dict[str, str], cfgs: Dict[str, TrainConfig], data: Path, n_images: int, probe_images: int,
           work: Path, out: Path, extra: Sequence[str], deadline: float
           ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, int]]:
    """Two epochs of every recipe side by side: per recipe that ran, :func:`_epoch_estimate`; and every return code.
    A recipe whose probe fails is left out (and said so): one broken recipe must not cost the others the lease."""
    jobs = {n: _launch(c, data, work / 'probe' / n, [*extra, '--epochs', '2', '--train-limit',
                                                      str(min(probe_images, n_images))],
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='scripts/device_train.py', description=__doc__.split('\n')[0])
    p.add_argument('-c', '--config', action='append', required=True, help='a recipe name or YAML; repeat for more')
    p.add_argument('--data', required=True, help='local data set folder in the Hub parquet layout')
    p.add_argument('--out', required=True, help='where logs, packed run folders and device_train.json go')
    p.add_argument('--work', default='/tmp/device_train', help='scratch folder: decoded data, probe and run folders')
    p.add_argument('--budget-s', type=float, required=True, help='wall seconds for the whole script, probe included')
    p.add_argument('--probe-images', type=int, default=12800, help='training images of the two-epoch probe')
    p.add_argument('--max-epochs', type=int, default=200, help='at most this many epochs (the paper trains 200)')
    p.add_argument('--extra', default='', help='flags added to every training command (a tiny rehearsal: '
                                               '"--train-limit 256 --holdout 32 --batch-size 32")')
    args = p.parse_args(argv)
    t0 = time.time()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    extra = args.extra.split()
    recipes = {_name(c): c for c in args.config}
    if len(recipes) != len(args.config):
        p.error('two recipes share a name; their run folders and logs would collide.')
    cfgs = {n: parse_config(['-c', c, *extra]) for n, c in recipes.items()}  # bad recipes fail here, before the work
    report: Dict[str, object] = dict(
        recipes=args.config, extra=extra, budget_s=args.budget_s, python=platform.python_version(),
        torch=torch.__version__, device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')
    print(f'device_train: {report["device"]}, torch {torch.__version__}, recipes {", ".join(cfgs)}', flush=True)

    try:
        data = parquet_to_npz_folder(args.data, work / 'data')
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    n_images = int(np.load(data / 'train.npz')['labels'].shape[0])
    report['data_s'] = time.time() - t0
    print(f'data: {n_images} training images decoded in {report["data_s"]:.0f} s', flush=True)

    start = time.time()
    probe, report['probe_rc'] = _probe(recipes, cfgs, data, n_images, args.probe_images, work, out, extra,
                                       deadline=t0 + args.budget_s)
    if not probe:
        (out / 'device_train.json').write_text(json.dumps(report, indent=1))
        return 1
    report['probe'] = probe
    report['probe_s'] = time.time() - start
    left = args.budget_s - (time.time() - t0) - max(v['startup_s'] for v in probe.values()) - END_MARGIN_S
    epochs = max(1, min(args.max_epochs, math.floor(left / max(v['epoch_s'] for v in probe.values()))))
    report['epochs'] = epochs
    print(f'probe ({report["probe_s"]:.0f} s): ' + '; '.join(
        f'{n} {v["img_per_s"]:.0f} img/s, {v["epoch_s"]:.1f} s an epoch, start-up {v["startup_s"]:.0f} s'
        for n, v in probe.items()) + f'; {left:.0f} s left for epochs -> {epochs} epochs', flush=True)

    runs = {n: work / 'runs' / n for n in probe}
    jobs = {n: _launch(recipes[n], data, runs[n], [*extra, '--epochs', str(epochs), '--keep-checkpoints', '1'],
                       out / f'{n}.log') for n in probe}
    report['runs'] = _run_all(jobs, deadline=t0 + args.budget_s)
    for n, run in runs.items():
        if run.exists():
            _pack(run, out / f'{n}.tar.gz')
        print(f'{n}: rc {report["runs"][n]["rc"]}, {report["runs"][n]["wall_s"] / 60:.1f} min'
              f'{", stopped at the deadline" if report["runs"][n]["stopped"] else ""}', flush=True)
    report['total_s'] = time.time() - t0
    (out / 'device_train.json').write_text(json.dumps(report, indent=1))
    return 0 if all(r['rc'] == 0 for r in report['runs'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
