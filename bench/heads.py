"""Training-step time of resnet32_mmc vs resnet32_sce (batch 128, CPU, channels_last), side by side.

    python bench/heads.py [--steps 30] [--warmup 5] [--precision auto]

``--precision auto`` (the default, as in the recipes) is bf16 where the CPU has it natively and fp32 elsewhere:
emulated bf16 takes ~8 s a step on an AVX2-only CPU.

The two models are timed in interleaved rounds so drift (other load, thermal) hits both alike; the figure is the
median step time. Target: MMC / SCE <= 1.02 (the MM head is a 256 x 10 distance computation).
"""
import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import timm  # noqa: E402

import timm_mmc  # noqa: E402,F401
from _common import machine_line  # noqa: E402
from timm_mmc.machine import resolve_precision  # noqa: E402


def make_step(name: str, batch: int, precision: str):
    torch.manual_seed(0)
    model = timm.create_model(name).to(memory_format=torch.channels_last).train()
    loss_fn = timm_mmc.build_loss(timm_mmc.default_loss_for_head(model.head_config.head), 10, 256)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    ctx = (lambda: torch.autocast('cpu', dtype=torch.bfloat16)) if precision == 'bf16' else nullcontext

    def step() -> float:
        t = time.perf_counter()
        with ctx():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=30)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--precision', choices=('auto', 'bf16', 'fp32'), default='auto')
    args = p.parse_args()
    args.precision, _ = resolve_precision(args.precision, torch.device('cpu'))  # auto: bf16 where native, else fp32
    steps = {n: make_step(n, args.batch, args.precision) for n in ('resnet32_sce', 'resnet32_mmc')}
    times = {n: [] for n in steps}
    for _ in range(args.warmup):
        for s in steps.values():
            s()
    for _ in range(args.steps):
        for n, s in steps.items():
            times[n].append(s())
    med = {n: statistics.median(t) for n, t in times.items()}
    print(machine_line())
    print(f'batch {args.batch}, {args.precision}, channels_last, {args.steps} interleaved steps after '
          f'{args.warmup} warm-up')
    for n, m in med.items():
        print(f'{n:14s} median step {m * 1000:7.1f} ms  ({args.batch / m:6.0f} img/s)')
    print(f'ratio mmc / sce: {med["resnet32_mmc"] / med["resnet32_sce"]:.3f}  (target <= 1.02)')


if __name__ == '__main__':
    main()
