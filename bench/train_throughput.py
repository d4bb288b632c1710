"""Training throughput: plain PyTorch loops in every variant, and the project's loop held to the best of them.

    python bench/train_throughput.py [--images 3840] [--dataset PATH] [--skip-compile] [--skip-adversarial]
                                     [--rounds 3]

One process on the whole machine (threads = cores), ResNet-32 with the MMC head unless said otherwise:
* plain loops, each a bare forward / backward / SGD step on the same augmented batches: fp32 and bf16 autocast
  (both channels_last), batch 128 and 256, eager and ``torch.compile`` (inductor, timed after its compile steps);
* the project's loop: ``Trainer.fit`` for two epochs with the CPU recipe's speed settings (``resnet32_mmc``:
  precision, batch, channels_last, compile, cutout, weight average), its own img/s over the second epoch's loop, in
  rounds (``--rounds``, 3) that alternate it with the best plain loop (and the plain loop with the recipe's
  settings): the ratio is of the medians, since one measurement moves by about 10% on these machines;
* with the compile variants: the project's loop eager and compiled, with and without the weight average, in
  alternating rounds (whether the loop keeps the compile's gain);
* SCE against MMC (the head's cost, in alternating rounds), and PGD-10 / PGD-2 / N-FGSM / FGSM-RS adversarial training
  steps.
Targets: project / best plain loop >= 0.95; MMC / SCE step time <= 1.02. Choose the recipe's settings from the table.
"""
import argparse
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line  # noqa: E402

from timm_mmc.config import TrainConfig, resolve_recipe  # noqa: E402
from timm_mmc.augment import augment_batch  # noqa: E402
from timm_mmc.data import write_synthetic_dataset  # noqa: E402
from timm_mmc.train import Trainer  # noqa: E402
from timm_mmc.machine import native_bf16, resolve_precision  # noqa: E402


def recipe_speed_settings() -> Dict[str, object]:
    """The speed-relevant settings of the CPU recipe, so the project's loop is measured as it is released."""
    import yaml
    with open(resolve_recipe('resnet32_mmc')) as f:
        rec = yaml.safe_load(f)
    keys = ('batch_size', 'precision', 'channels_last', 'compile', 'cutout', 'ema_decay')
    return {k: rec[k] for k in keys if k in rec}


def plain(dataset: str, model: str, images: int, precision: str, batch: int, compiled: bool,
          warm_steps: int = 3) -> float:
    """A bare loop: same model, loss, optimizer and augmentation as the project, nothing else."""
    cfg = TrainConfig(model=model, dataset=dataset, output=tempfile.mkdtemp(), epochs=1, batch_size=batch,
                      train_limit=images, test_limit=128, precision=precision, progress=False)
    t = Trainer(cfg)  # only for the identical model, loss, optimizer and data
    net, opt, data = t.net, t.optimizer, t.train_set
    step_fn = torch.compile(net) if compiled else net
    ctx = (lambda: torch.autocast('cpu', dtype=torch.bfloat16)) if precision == 'bf16' else contextlib.nullcontext
    perm = torch.randperm(len(data))
    gen = torch.Generator().manual_seed(0)
    steps = len(data) // batch

    def step(s: int) -> None:
        idx = perm[(s % steps) * batch:(s % steps + 1) * batch]
        x = augment_batch(data.images[idx].float().div_(255), generator=gen).contiguous(
            memory_format=torch.channels_last)
        with ctx():
            loss, _ = step_fn(x, data.labels[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for s in range(warm_steps):  # compile (or allocator warm-up) outside the timing
        step(s)
    t0 = time.perf_counter()
    for s in range(steps):
        step(s)
    return steps * batch / (time.perf_counter() - t0)


def alternating_medians(measure: Dict[str, Callable[[], float]], rounds: int = 3) -> Dict[str, float]:
    """Each measurement's median over ``rounds`` rounds that take them in turn, so that drift (another job, the clock)
    falls on all alike. Measured once each, in sequence, a ratio moved with the order: MMC / SCE 1.120 on the
    AVX512-BF16 machine (2026-12-07), where bench/heads.py had given 1.009 on the AVX2 one; the project's loop eager /
    compiled 479.6 / 450.6 there, and 553.6 / 594.6 in a probe the next session."""
    rates: Dict[str, List[float]] = {k: [] for k in measure}
    for _ in range(rounds):
        for k, fn in measure.items():
            rates[k].append(fn())
    return {k: statistics.median(v) for k, v in rates.items()}


def head_rates(dataset: str, images: int, precision: str, batch: int, rounds: int = 3) -> Tuple[float, float]:
    """The plain loop's img/s with the MMC head and with the SCE head, eager: medians of alternating rounds."""
    med = alternating_medians({m: functools.partial(plain, dataset, m, images, precision, batch, False)
                               for m in ('resnet32_mmc', 'resnet32_sce')}, rounds)
    return med['resnet32_mmc'], med['resnet32_sce']


def project(dataset: str, out: str, model: str, images: int, adv: str = 'none', epochs: int = 2,
            **settings) -> float:
    """img/s of ``Trainer.fit`` over its last epoch: the second of two, so that the first steps' warm-up (and a
    compile) stay out of the figure, as the plain loop leaves out its warm-up steps.

    The lr is low: speed does not depend on it, and at the recipe's 0.02 a one-epoch one-cycle of 10 steps on the
    random labels diverged (its warm-up is 2 steps), which the trainer stops as a non-finite loss.
    """
    cfg = TrainConfig(model=model, dataset=dataset, output=out, epochs=epochs, robust_every=0, progress=False,
                      overwrite=True, train_limit=images, test_limit=128, adv=adv, lr=1e-3, **settings)
    trainer = Trainer(cfg)
    trainer.log = lambda msg: None
    trainer.fit()
    return trainer.history[-1].img_per_s


def compile_probe(dataset: str, tmp: str, images: int, settings: Dict[str, object], rounds: int = 3
                  ) -> Dict[str, float]:
    """The project's loop eager and compiled (second epoch, after the compile), each with and without the weight
    average: medians of alternating rounds, since the two differ by about as much as one measurement moves."""
    measure = {}
    for compiled in (False, True):
        for ema in dict.fromkeys((settings.get('ema_decay', 0.0), 0.0)):  # once if the recipe has none
            key = f'{"compiled" if compiled else "eager"}, weight average {ema}'
            measure[key] = functools.partial(project, dataset, f'{tmp}/probe', 'resnet32_mmc', images,
                                             **dict(settings, compile=compiled, ema_decay=ema))
    return alternating_medians(measure, rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=3840, help='training images per measurement (multiple of 256)')
    p.add_argument('--dataset', default=None, help='data set (default: a synthetic 10-class set written to a temp dir)')
    p.add_argument('--skip-compile', action='store_true', help='leave out the torch.compile variants (~1 min each)')
    p.add_argument('--skip-adversarial', action='store_true', help='leave out the adversarial training measurements')
    p.add_argument('--rounds', type=int, default=3, help='alternating rounds behind each ratio (their medians)')
    args = p.parse_args()
    if args.rounds < 1:
        p.error(f'--rounds must be >= 1 (got {args.rounds}).')
    if args.images < 256 or args.images % 256:
        p.error(f'--images must be a positive multiple of 256 (got {args.images}), so both batch sizes see whole '
                f'batches.')
    tmp = tempfile.mkdtemp()
    dataset = args.dataset or str(write_synthetic_dataset(Path(tmp) / 'ds', n_train=args.images, n_test=128,
                                                          num_classes=10))
    torch.set_num_threads(os.cpu_count() or 1)
    native = native_bf16(torch.device('cpu'))
    # emulated bf16 is ~13x slower: a few steps at batch 128 show it, a full measurement would take most of the
    # bench's time (each emulated step ~8 s on an AVX2 CPU). No warm-up step for it either: on the AVX2 machine (one
    # thread, beside a training run, 2026-12-07) the first emulated step took 19.2 s and the next two 18.8 and 17.4
    images_for = dict(fp32=args.images, bf16=args.images if native else min(args.images, 512))
    plain(dataset, 'resnet32_mmc', min(512, args.images), 'bf16' if native else 'fp32', 128, False)  # warm-up
    variants: Dict[Tuple[str, int, bool], float] = {}
    for compiled in ((False, True) if not args.skip_compile else (False,)):
        for precision in ('fp32', 'bf16'):
            emulated = precision == 'bf16' and not native
            if emulated and compiled:
                continue
            for batch in (128,) if emulated else (128, 256):
                variants[(precision, batch, compiled)] = plain(dataset, 'resnet32_mmc', images_for[precision],
                                                               precision, batch, compiled, 0 if emulated else 3)
    settings = recipe_speed_settings()
    settings['precision'], _ = resolve_precision(settings.get('precision', 'auto'), torch.device('cpu'))
    same_key = (settings['precision'], settings.get('batch_size', 128), bool(settings.get('compile', False)))
    best_key = max(variants, key=variants.get)
    rounds = args.rounds
    # the headline ratio from alternating rounds of the two loops (the sweep measured each variant once)
    loops = {'project': functools.partial(project, dataset, f'{tmp}/p_mmc', 'resnet32_mmc', args.images, **settings)}

    def plain_loop(key: Tuple[str, int, bool]) -> Callable[[], float]:
        return functools.partial(plain, dataset, 'resnet32_mmc', images_for[key[0]], *key,
                                 0 if key[0] == 'bf16' and not native else 3)
    loops['best'] = plain_loop(best_key)
    if same_key in variants and same_key != best_key:
        loops['same'] = plain_loop(same_key)
    med = alternating_medians(loops, rounds)
    p_mmc, best = med['project'], med['best']
    same = med.get('same', best if same_key == best_key else None)
    mmc, sce = head_rates(dataset, images_for[settings['precision']], settings['precision'],
                          settings.get('batch_size', 128), rounds)
    print(machine_line())
    bf16 = 'native' if native else (f'emulated (no AVX512-BF16 or AMX; measured eager at batch 128 only, on '
                                    f'{images_for["bf16"]} images)')
    print(f'ResNet-32 MMC, channels_last, {args.images} images per measurement, {torch.get_num_threads()} threads; '
          f'bf16 {bf16}')
    print('plain loop variants (img/s):')
    for (precision, batch, compiled), v in sorted(variants.items(), key=lambda kv: -kv[1]):
        print(f'  {precision:4s} batch {batch:3d} {"compiled" if compiled else "eager   "}  {v:7.1f}')
    print(f'best plain loop: {best_key[0]}, batch {best_key[1]}, {"compiled" if best_key[2] else "eager"}: '
          f'{variants[best_key]:.1f} img/s')
    print(f'median of {rounds} rounds that alternate the project\'s loop and the plain loops below:')
    print(f'  best plain loop: {best:.1f} img/s')
    if same is not None:
        print(f'  plain loop with the recipe\'s settings: {same:.1f} img/s')
    print(f'  project loop with the recipe\'s settings {settings}: {p_mmc:.1f} img/s')
    print(f'project / best plain loop: {p_mmc / best:.3f}   (target >= 0.95)')
    if same is not None:
        print(f'project / plain loop with the same settings: {p_mmc / same:.3f} (the rest is cutout, the weight '
              f'average and bookkeeping)')
    heads = (f'{settings["precision"]}, batch {settings.get("batch_size", 128)}, eager, median of {rounds} alternating '
             f'rounds')
    print(f'MMC plain loop ({heads}): {mmc:.1f} img/s')
    print(f'SCE plain loop ({heads}): {sce:.1f} img/s')
    print(f'MMC / SCE step time (plain, eager): {sce / mmc:.3f}   (target <= 1.02)')
    if not args.skip_compile:
        print(f'the project\'s loop, eager against compiled (second epoch of two, median of {rounds} alternating '
              f'rounds, img/s): ' + ', '.join(
            f'{k} {v:.1f}' for k, v in compile_probe(dataset, tmp, args.images, settings, rounds).items()))
    if not args.skip_adversarial:
        n = min(args.images, 1024)
        rates = {'PGD-10': project(dataset, f'{tmp}/pgd', 'resnet32_mmc', min(args.images, 512), adv='pgd',
                                   **settings),
                 'PGD-2': project(dataset, f'{tmp}/pgd2', 'resnet32_mmc', n, adv='pgd', adv_steps=2,
                                  adv_step=4 / 255, **settings),
                 'N-FGSM': project(dataset, f'{tmp}/nfgsm', 'resnet32_mmc', n, adv='nfgsm', **settings),
                 'FGSM-RS': project(dataset, f'{tmp}/fgsm', 'resnet32_mmc', n, adv='fgsm', **settings)}
        print('adversarial training steps (the project loop, recipe settings): ' + ', '.join(
            f'{k} {v:.1f} img/s ({p_mmc / v:.1f}x a clean step)' for k, v in rates.items()))


if __name__ == '__main__':
    main()
