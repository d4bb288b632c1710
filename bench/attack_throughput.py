"""PGD-10 throughput against its limit, and the wall time of the ``paper`` suite + AutoAttack ``fast``.

    python bench/attack_throughput.py [--model resnet32_mmc] [--batch 250] [--rounds 5] [--threads N]
    python bench/attack_throughput.py --suite-n 100 --dataset ../shared/data/cifar10 [--checkpoint model.safetensors]

Part 1 (always): PGD-10 (margin objective, random start, keep-best, run-time ball check) in images/s beside the limit
measured in the same run on the same model and batch: 10 input-gradient steps (forward + ``torch.autograd.grad``) and
1 forward. Rounds are interleaved so background load hits both alike; the figures are medians. Target ratio >= 0.9.

Part 2 (with ``--suite-n N``): the ``paper`` suite + AutoAttack ``fast`` (as ``--suite full`` without transfer) on the
first N test images through the same code as ``python -m eval.robustness``; prints the wall time per attack and a
linear extrapolation to 1000 images (every attack's cost is per attacked point; slices such as ``--cw-n 100`` stay
fixed). Target: <= 30 min for 1000 images of a ResNet-32.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_line  # noqa: E402
from timm_mmc.attacks import PGD  # noqa: E402


def limit_time(model, x: torch.Tensor) -> float:
    """Seconds for what PGD-10 cannot do without: 10 gradients with respect to the input, then 1 forward."""
    t = time.perf_counter()
    for _ in range(10):
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xa).sum(), xa)
    with torch.no_grad():
        model(x)
    return time.perf_counter() - t


def pgd_time(attack: PGD, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one ``attack.perturb(x, y)``."""
    t = time.perf_counter()
    attack.perturb(x, y)
    return time.perf_counter() - t


def pgd_vs_limit(model, batch: int, rounds: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, loss='margin', random_start=True, keep_best=True)
    limit_time(model, x), pgd_time(attack, x, y)  # warm-up
    t_lim, t_pgd = [], []
    for _ in range(rounds):
        t_lim.append(limit_time(model, x))
        t_pgd.append(pgd_time(attack, x, y))
    lim, pg = statistics.median(t_lim), statistics.median(t_pgd)
    print(f'limit (10 input-gradient steps + 1 forward): {batch / lim:8.1f} images/s  (median of {rounds}, '
          f'{lim:.2f} s per batch of {batch})')
    print(f'PGD-10 (margin, random start, keep best)   : {batch / pg:8.1f} images/s  ({pg:.2f} s)')
    print(f'ratio PGD-10 / limit: {lim / pg:.3f}  (target >= 0.9)')


def suite_time(args) -> None:
    from eval.robustness import main
    argv = ['--model', args.model, '--dataset', args.dataset, '--split', 'test', '--n-examples', str(args.suite_n),
            '--suite', 'full', '--aa-version', 'fast', '--out', args.out, '--name', f'bench_{args.suite_n}',
            '--batch-size', str(args.batch), '--no-progress', '--overwrite']  # a bench run replaces its own report
    if args.checkpoint:
        argv += ['--checkpoint', args.checkpoint]
    elif not args.model.startswith(('hf-hub:', 'local-dir:')) and '--pretrained' not in args.suite_args:
        print('note: no --checkpoint, so the suite runs on random weights, whose images mostly start misclassified: '
              'the attacks do less work than on trained weights')
        argv += ['--random-weights']
    argv += args.suite_args
    t = time.perf_counter()
    code = main(argv)
    wall = time.perf_counter() - t
    if code:
        raise SystemExit(code)
    import json
    rep = json.loads((Path(args.out) / f'bench_{args.suite_n}.json').read_text())
    n = rep['n']
    est = 0.0
    print(f'\npaper suite + AutoAttack fast on {n} images: wall {wall:.0f} s')
    for k, v in rep['attacks'].items():
        # an attack on every evaluated point costs in proportion to n; a fixed slice (C&W, SPSA, AA) does not grow
        scale = 1000 / n if v['n'] >= n else 1.0
        est += v['time_s'] * scale
        print(f'  {k:26s} {v["time_s"]:7.1f} s  n={v["n"]:5d}  -> 1000 images: {v["time_s"] * scale:7.1f} s')
    rest = wall - sum(v['time_s'] for v in rep['attacks'].values())  # loading, clean pass, gradient diagnostics
    est += rest * 1000 / n
    print(f'  {"(load, clean, diagnostics)":26s} {rest:7.1f} s')
    print(f'estimated wall time for 1000 images: {est / 60:.1f} min (linear in n for attacks on every point; slices '
          f'fixed: C&W {rep["options"]["cw_n"]}, SPSA {rep["options"]["spsa_n"]}; target <= 30 min)')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='resnet32_mmc')
    p.add_argument('--checkpoint')
    p.add_argument('--batch', type=int, default=250)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int)
    p.add_argument('--suite-n', type=int, help='also time the paper suite + AA fast on this many images.')
    p.add_argument('--dataset', default=None, help='data set for --suite-n (e.g. ../shared/data/cifar10).')
    p.add_argument('--out', default='/tmp/attack_throughput')
    p.add_argument('suite_args', nargs='*', help='extra eval.robustness flags after --, e.g. -- --cw-n 50')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    from timm_mmc.io import load_model
    model = load_model(args.model, checkpoint=args.checkpoint).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    print(f'model {args.model}{" + " + args.checkpoint if args.checkpoint else ""}, batch {args.batch}')
    pgd_vs_limit(model, args.batch, args.rounds)
    if args.suite_n:
        if not args.dataset:
            p.error('--suite-n needs --dataset (e.g. ../shared/data/cifar10).')
        suite_time(args)


if __name__ == '__main__':
    main()
