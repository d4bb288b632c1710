"""Training throughput: plain PyTorch loops in every variant, and the project's loop held to the best of them.

    python bench/train_throughput.py [--images 3840] [--dataset PATH] [--skip-compile] [--skip-adversarial]
                                     [--rounds 3] [--steps 20]

One process on the whole machine (threads = cores), ResNet-32 with the MMC head unless said otherwise:
* plain loops, each a bare forward / backward / SGD step on the same augmented batches: fp32 and bf16 autocast
  (both channels_last), batch 128 and 256, eager and ``torch.compile`` (inductor, timed after its compile steps);
* the project's step against the best plain loop (and the plain loop with the recipe's settings), step by step:
  ``Trainer.step`` with the CPU recipe's speed settings (``resnet32_mmc``: precision, batch, channels_last, compile,
  cutout, weight average) and the bare steps taken in turn, ``--steps`` (20) each, figures from the median step
  times. The target's ratio is this one: throughput here drifts by 10-30% within minutes, faster than whole-loop
  rounds cancel, and slower than one step;
* the whole loops as well: ``Trainer.fit`` for two epochs, its own img/s over the second epoch, in rounds
  (``--rounds``, 3) that alternate it with the same plain loops (medians): what the run's log would say;
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
from typing import Any, Callable, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line  # noqa: E402

from timm_mmc.config import TrainConfig, resolve_recipe  # noqa: E402
from timm_mmc.augment import augment_batch  # noqa: E402
from timm_mmc.data import write_synthetic_dataset  # noqa: E402
from timm_mmc.train import Trainer  # noqa: E402
from timm_mmc.train_parts import StepTally  # noqa: E402
from timm_mmc.machine import native_bf16, resolve_precision  # noqa: E402


def recipe_speed_settings() -> Dict[str, object]:
    """The speed-relevant settings of the CPU recipe, so the project's loop is measured as it is released."""
    import yaml
    with open(resolve_recipe('resnet32_mmc')) as f:
        rec = yaml.safe_load(f)
    keys = ('batch_size', 'precision', 'channels_last', 'compile', 'cutout', 'ema_decay')
    return {k: rec[k] for k in keys if k in rec}


def bare_step(trainer: Trainer, precision: str, batch: int, compiled: bool) -> Callable[[int], None]:
    """Step ``s`` of a bare loop on ``trainer``'s model, loss, optimizer and data: a crop-and-flip batch, bf16 autocast
    or fp32, forward, backward, SGD step, nothing else. Steps past the data wrap around."""
    net, opt, data = trainer.net, trainer.optimizer, trainer.train_set
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
    return step


def _plain_trainer(dataset: str, model: str, images: int, precision: str, batch: int) -> Trainer:
    """A trainer only for its model, loss, optimizer and data, as the project builds them."""
    cfg = TrainConfig(model=model, dataset=dataset, output=tempfile.mkdtemp(), epochs=1, batch_size=batch,
                      train_limit=images, test_limit=128, precision=precision, progress=False)
    return Trainer(cfg)


def plain(dataset: str, model: str, images: int, precision: str, batch: int, compiled: bool,
          warm_steps: int = 3) -> float:
    """img/s of a bare loop (:func:`bare_step`) over the data once, after ``warm_steps`` steps (a compile, the
    allocator's warm-up) left out of the timing."""
    step = bare_step(_plain_trainer(dataset, model, images, precision, batch), precision, batch, compiled)
    for s in range(warm_steps):
        step(s)
    steps = images // batch
    t0 = time.perf_counter()
    for s in range(steps):
        step(s)
    return steps * batch / (time.perf_counter() - t0)


def interleaved(dataset: str, images: int, settings: Dict[str, object], plain_keys: List[Tuple[str, int, bool]],
                steps: int = 20, warm_steps: int = 3) -> Dict[object, float]:
    """img/s of the project's step (``Trainer.step`` with the recipe's speed settings: the seeded batch, cutout, the
    step, gradient norm, schedule, weight average and tally) and of bare steps (one per ``(precision, batch,
    compiled)`` key), timed in turn step by step; each figure is from the median step time. ``'project'`` keys the
    project's figure.

    On these machines throughput drifts faster than whole-loop rounds can cancel: on 2026-12-07, with nothing else
    running, the same two loops read 308-444 img/s within three minutes, and one round put the project 16% ahead of
    the bare loop, the next 10% behind. Drift is slower than one round of turns (a step took 0.28 s at batch 128 and
    0.52 s at 256 there), so here it falls on all alike.
    """
    # an epoch a step at the least (the data set may hold fewer than ``images``): the schedule never runs out
    cfg = TrainConfig(model='resnet32_mmc', dataset=dataset, output=tempfile.mkdtemp(), epochs=warm_steps + steps,
                      train_limit=images, test_limit=128, robust_every=0, progress=False, lr=1e-3, **settings)
    project = Trainer(cfg)
    project.begin_epoch()
    tally = StepTally(project.device)

    def project_step(s: int) -> None:
        if project.step_in_epoch == project.steps_per_epoch:  # as fit does between epochs
            project.epoch, project.step_in_epoch = project.epoch + 1, 0
            project.begin_epoch()
        project.step(tally)
    loops: Dict[object, Tuple[Callable[[int], None], int]] = {'project': (project_step, cfg.batch_size)}
    for key in plain_keys:
        trainer = _plain_trainer(dataset, 'resnet32_mmc', images, key[0], key[1])
        loops[key] = (bare_step(trainer, *key), key[1])
    times: Dict[object, List[float]] = {k: [] for k in loops}
    for s in range(warm_steps + steps):
        for key, (fn, batch) in loops.items():
            t0 = time.perf_counter()
            fn(s)
            if s >= warm_steps:
                times[key].append((time.perf_counter() - t0) / batch)
    return {k: 1 / statistics.median(v) for k, v in times.items()}


def alternating_medians(measure: Dict[Any, Callable[[], float]], rounds: int = 3) -> Dict[Any, float]:
    """Each measurement's median over ``rounds`` rounds that take them in turn, so that drift (another job, the clock)
    falls on all alike. Measured once each, in sequence, a ratio moved with the order: MMC / SCE 1.120 on the
    AVX512-BF16 machine (2026-12-07), where bench/heads.py had given 1.009 on the AVX2 one; the project's loop eager /
    compiled 479.6 / 450.6 there, and 553.6 / 594.6 in a probe the next session."""
    rates: Dict[Any, List[float]] = {k: [] for k in measure}
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
    p.add_argument('--steps', type=int, default=20, help='steps of each loop timed in turn, step by step')
    args = p.parse_args()
    if args.rounds < 1:
        p.error(f'--rounds must be >= 1 (got {args.rounds}).')
    if args.steps < 1:
        p.error(f'--steps must be >= 1 (got {args.steps}).')
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
    keys = [best_key] + ([same_key] if same_key in variants and same_key != best_key else [])
    step_rates = interleaved(dataset, args.images, settings, keys, args.steps)
    # the whole loops too, in alternating rounds: Trainer.fit's own figure, bookkeeping between the steps included
    loops = {'project': functools.partial(project, dataset, f'{tmp}/p_mmc', 'resnet32_mmc', args.images, **settings)}

    def plain_loop(key: Tuple[str, int, bool]) -> Callable[[], float]:
        return functools.partial(plain, dataset, 'resnet32_mmc', images_for[key[0]], *key,
                                 0 if key[0] == 'bf16' and not native else 3)
    loops.update({key: plain_loop(key) for key in keys})
    med = alternating_medians(loops, rounds)
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
    for title, rates, label in (
            (f'step by step, interleaved (the project\'s Trainer.step and the bare steps below taken in turn, median '
             f'of {args.steps} steps each):', step_rates, 'project step'),
            (f'whole loops, median of {rounds} rounds that alternate Trainer.fit (its second epoch) and the plain '
             f'loops below:', med, 'project loop')):
        print(title)
        print(f'  best plain loop: {rates[best_key]:.1f} img/s')
        if same_key in rates:  # the best loop itself, where the recipe's settings are the best
            print(f'  plain loop with the recipe\'s settings: {rates[same_key]:.1f} img/s')
        print(f'  {label} with the recipe\'s settings {settings}: {rates["project"]:.1f} img/s')
    same = step_rates.get(same_key)
    print(f'project / best plain loop: {step_rates["project"] / step_rates[best_key]:.3f}   (target >= 0.95; step by '
          f'step, interleaved)')
    if same is not None:
        print(f'project / plain loop with the same settings: {step_rates["project"] / same:.3f} (the rest is cutout, '
              f'the weight average and bookkeeping)')
    print(f'whole loops, project / best plain loop: {med["project"] / med[best_key]:.3f}')
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
            f'{k} {v:.1f} img/s ({med["project"] / v:.1f}x a clean step)' for k, v in rates.items()))


if __name__ == '__main__':
    main()
