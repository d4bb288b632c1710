"""The bench scripts run end to end on tiny inputs: a refactor of the trainer or the attacks must not leave them broken
(``bench/train_throughput.py`` read ``trainer.history`` as dicts for a while after the records became dataclasses).
The figures' sizes are not checked (speed lives in the benches' output, never in tests), only that each ratio a bench
prints is the quotient of the figures it printed beside it: a swapped or mislabelled figure fails, unless the two
figures are within rounding of each other (for ``train_throughput.py`` and ``heads.py`` a run with fixed, distinct
measurements closes that gap)."""
import ast
import re
import runpy
import sys
from pathlib import Path

import pytest

from _shared import load_script

BENCH = Path(__file__).resolve().parents[1] / 'bench'


def run_bench(script: str, args, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, 'argv', [str(BENCH / script), *args])
    runpy.run_path(str(BENCH / script), run_name='__main__')
    return capsys.readouterr().out


def _load(script: str):
    """A bench script as a module, for a test to replace its measurements."""
    return load_script(BENCH / script)


def figure(out: str, pattern: str) -> float:
    m = re.search(pattern, out)
    assert m, f'{pattern!r} not in the output:\n{out}'
    return float(m.group(1))


def assert_quotient(ratio: float, num: float, den: float, step: float, ratio_step: float) -> None:
    """``ratio`` (printed to ``ratio_step``) is ``num / den`` of figures printed to ``step``, within the rounding."""
    low, high = (num - step / 2) / (den + step / 2), (num + step / 2) / (den - step / 2)
    assert low - ratio_step / 2 <= ratio <= high + ratio_step / 2, (ratio, num, den)


@pytest.mark.long(70)
def test_train_throughput_prints_every_figure(monkeypatch, capsys):
    import torch

    from timm_mmc.machine import native_bf16
    native = native_bf16(torch.device('cpu'))
    out = run_bench('train_throughput.py', ['--images', '256', '--skip-compile', '--skip-adversarial', '--rounds', '1',
                                            '--steps', '2'], monkeypatch, capsys)
    for variant in ('fp32 batch 128 eager', 'fp32 batch 256 eager', 'bf16 batch 128 eager', 'bf16 batch 256 eager'):
        if variant == 'bf16 batch 256 eager' and not native:  # emulated bf16 is timed at batch 128 only, and says so
            assert variant not in out and 'emulated (no AVX512-BF16 or AMX; measured eager at batch 128 only' in out
            continue
        assert figure(out, re.escape(variant) + r'\s+([\d.]+)') > 0
    rates = [float(r) for r in re.findall(r'^  \w+ +batch +\d+ \w+ +([\d.]+)$', out, re.M)]
    best = figure(out, r'best plain loop: \w+, batch \d+, \w+: ([\d.]+) img/s')
    assert best == max(rates), (best, rates)
    # the target's ratio comes from the steps taken in turn, the whole loops' from alternating rounds: not the sweep
    step_best, loop_best = (float(v) for v in re.findall(r'(?m)^  best plain loop: ([\d.]+) img/s', out))
    step = figure(out, r"project step with the recipe's settings .*: ([\d.]+) img/s")
    assert_quotient(figure(out, r'(?m)^project / best plain loop: ([\d.]+)'), step, step_best, 0.1, 0.001)
    loop = figure(out, r"project loop with the recipe's settings .*: ([\d.]+) img/s")
    assert_quotient(figure(out, r'whole loops, project / best plain loop: ([\d.]+)'), loop, loop_best, 0.1, 0.001)
    if 'project / plain loop with the same settings' in out:  # only when the recipe's settings were among the variants
        assert_quotient(figure(out, r'(?m)^project / plain loop with the same settings: ([\d.]+)'), step,
                        figure(out, r"plain loop with the recipe's settings: ([\d.]+) img/s"), 0.1, 0.001)
    sce = figure(out, r'SCE plain loop \(\w+, batch \d+, eager, median of \d+ alternating rounds\): ([\d.]+) img/s')
    mmc = figure(out, r'MMC plain loop \(\w+, batch \d+, eager, median of \d+ alternating rounds\): ([\d.]+) img/s')
    assert_quotient(figure(out, r'MMC / SCE step time \(plain, eager\): ([\d.]+)'), sce, mmc, 0.1, 0.001)


def _fixed_interleaved(project_rate: float, plain_rates):
    """A stand-in for ``interleaved``: fixed figures, the plain ones by key."""
    def interleaved(dataset, images, settings, plain_keys, steps=20, warm_steps=3):
        return {'project': project_rate, **{key: plain_rates(key) for key in plain_keys}}
    return interleaved


def test_train_throughput_ratios_are_the_right_way_round(monkeypatch, capsys):
    """With every measurement replaced by a fixed rate, far from each other, each ratio the bench prints is the one its
    label names: the run above cannot tell a ratio from its inverse when the two rates come out alike."""
    bench = _load('train_throughput.py')
    rates = {('fp32', 128): 100.0, ('fp32', 256): 120.0, ('bf16', 128): 10.0, ('bf16', 256): 12.0}

    def plain(dataset, model, images, precision, batch, compiled, warm_steps=3):
        return 150.0 if model == 'resnet32_sce' else rates[precision, batch]
    monkeypatch.setattr(bench, 'plain', plain)
    monkeypatch.setattr(bench, 'project', lambda *args, **kwargs: 60.0)
    monkeypatch.setattr(bench, 'interleaved', _fixed_interleaved(30.0, lambda key: 3 * rates[key[:2]]))
    monkeypatch.setattr(sys, 'argv', ['train_throughput.py', '--images', '256', '--skip-compile', '--skip-adversarial'])
    bench.main()
    out = capsys.readouterr().out
    settings = ast.literal_eval(re.search(r"project loop with the recipe's settings (\{.*\}):", out).group(1))
    eager = rates[settings['precision'], settings.get('batch_size', 128)]  # the plain MMC loop, eager
    best = figure(out, r'best plain loop: \w+, batch \d+, \w+: ([\d.]+) img/s')
    assert figure(out, r'(?m)^project / best plain loop: ([\d.]+)') == round(30.0 / (3 * best), 3)
    assert figure(out, r'whole loops, project / best plain loop: ([\d.]+)') == round(60.0 / best, 3)
    assert figure(out, r'MMC / SCE step time \(plain, eager\): ([\d.]+)') == round(150.0 / eager, 3)
    if not settings.get('compile'):  # a compiled recipe has no plain loop with its settings under --skip-compile
        same = figure(out, r'(?m)^project / plain loop with the same settings: ([\d.]+)')
        assert same == round(30.0 / (3 * eager), 3)


def test_train_throughput_ratios_come_from_the_interleaved_steps_and_the_alternating_rounds_not_the_sweep(
        monkeypatch, capsys):
    """The sweep measures each plain variant once and picks the best. The target's ratio divides the project's step
    figure by the best loop's, both from the steps taken in turn; the whole loops' ratio divides medians of rounds
    that alternate the two (here each plain loop runs twice as fast after its first measurement, so a ratio from the
    sweep's figure would be twice as large)."""
    bench = _load('train_throughput.py')
    rates = {('fp32', 128): 100.0, ('fp32', 256): 120.0, ('bf16', 128): 10.0, ('bf16', 256): 12.0}
    seen, projects, asked = set(), iter([50.0, 70.0, 60.0]), []

    def plain(dataset, model, images, precision, batch, compiled, warm_steps=3):
        key = (model, precision, batch)
        again = key in seen
        seen.add(key)
        return rates[precision, batch] * (2 if again else 1)
    monkeypatch.setattr(bench, 'plain', plain)
    monkeypatch.setattr(bench, 'project', lambda *args, **kwargs: next(projects))
    fixed = _fixed_interleaved(45.0, lambda key: 5 * rates[key[:2]])
    monkeypatch.setattr(bench, 'interleaved', lambda *a, **k: asked.append(a[3]) or fixed(*a, **k))
    # as on a CPU with native bf16, whose warm-up loop is bf16 batch 128 (elsewhere fp32 batch 128, which that loop
    # running twice as fast after its first measurement would make the best)
    monkeypatch.setattr(bench, 'native_bf16', lambda device: True)
    monkeypatch.setattr(bench, 'resolve_precision', lambda precision, device: ('bf16', 'native'))
    monkeypatch.setattr(sys, 'argv', ['train_throughput.py', '--images', '256', '--skip-compile', '--skip-adversarial'])
    bench.main()
    out = capsys.readouterr().out
    best = figure(out, r'best plain loop: \w+, batch \d+, \w+: ([\d.]+) img/s')
    assert best == 120.0  # fp32 batch 256: the sweep's own figure for the variant it chose
    assert asked == [[('fp32', 256, False), ('bf16', 128, False)]]  # the best loop and the recipe's, step by step
    assert [float(v) for v in re.findall(r'(?m)^  best plain loop: ([\d.]+) img/s', out)] == [5 * best, 2 * best]
    assert figure(out, r"project step with the recipe's settings .*: ([\d.]+) img/s") == 45.0
    assert figure(out, r"project loop with the recipe's settings .*: ([\d.]+) img/s") == 60.0  # the median
    assert figure(out, r'(?m)^project / best plain loop: ([\d.]+)') == round(45.0 / (5 * best), 3)
    assert figure(out, r'whole loops, project / best plain loop: ([\d.]+)') == round(60.0 / (2 * best), 3)


def test_interleaved_takes_the_loops_in_turn_step_by_step_and_reads_median_step_times(monkeypatch):
    """Each step of the project and of every bare loop is timed in turn, warm-up steps left out, and a loop's figure is
    its batch over its median step time: a slow spell that falls on one step moves no figure."""
    bench = _load('train_throughput.py')
    order, clock, made = [], [0.0], []
    durations = {'project': iter([9.0, 1.0, 50.0, 2.0]), ('fp32', 256, False): iter([9.0, 4.0, 4.0, 100.0])}

    class Project:  # Trainer's surface that interleaved uses: one epoch of two steps
        steps_per_epoch, step_in_epoch, epoch, device = 2, 0, 0, 'cpu'

        def __init__(self, cfg):
            assert cfg.batch_size == 128 and cfg.epochs >= 2  # the recipe's batch; a schedule for every step
            self.begun = 0
            made.append(self)

        def begin_epoch(self):
            self.begun += 1

        def step(self, tally):
            order.append(('project', self.epoch, self.step_in_epoch))
            clock[0] += next(durations['project'])
            self.step_in_epoch += 1

    def bare_step(trainer, precision, batch, compiled):
        def step(s):
            order.append(((precision, batch, compiled), s))
            clock[0] += next(durations[precision, batch, compiled])
        return step
    monkeypatch.setattr(bench, 'Trainer', Project)
    monkeypatch.setattr(bench, '_plain_trainer', lambda *a: None)
    monkeypatch.setattr(bench, 'bare_step', bare_step)
    monkeypatch.setattr(bench.time, 'perf_counter', lambda: clock[0])
    got = bench.interleaved('ds', 256, {'batch_size': 128}, [('fp32', 256, False)], steps=3, warm_steps=1)
    assert order == [('project', 0, 0), (('fp32', 256, False), 0), ('project', 0, 1), (('fp32', 256, False), 1),
                     ('project', 1, 0), (('fp32', 256, False), 2), ('project', 1, 1), (('fp32', 256, False), 3)]
    assert got == {'project': 128 / 2.0, ('fp32', 256, False): 256 / 4.0}
    assert made[0].begun == 2  # each epoch's own order of the images, as fit draws it


def test_train_throughput_times_the_two_heads_in_alternating_rounds_and_takes_medians(monkeypatch):
    """Each head's figure is the median of its rounds, and the rounds alternate, so a slow spell cannot fall on one
    head only (measured once each, the ratio moved with the order). Each median differs from the head's first, last,
    lowest, highest and mean rate."""
    bench = _load('train_throughput.py')
    calls, rates = [], {'resnet32_mmc': iter([10.0, 100.0, 90.0]), 'resnet32_sce': iter([105.0, 5.0, 95.0])}

    def plain(dataset, model, images, precision, batch, compiled, warm_steps=3):
        calls.append((model, compiled))
        return next(rates[model])
    monkeypatch.setattr(bench, 'plain', plain)
    assert bench.head_rates('ds', 256, 'fp32', 128, rounds=3) == (90.0, 95.0)
    assert calls == [('resnet32_mmc', False), ('resnet32_sce', False)] * 3


def test_train_throughput_times_eager_and_compiled_loops_in_alternating_rounds_and_takes_medians(monkeypatch):
    """The project's loop eager and compiled, with and without the weight average: four medians of alternating rounds
    (measured once each, eager / compiled read 479.6 / 450.6 in one session and 553.6 / 594.6 in the next)."""
    bench = _load('train_throughput.py')
    calls, rates = [], iter([10.0, 20.0, 30.0, 40.0, 100.0, 200.0, 300.0, 400.0, 50.0, 60.0, 70.0, 80.0])

    def project(dataset, out, model, images, adv='none', epochs=2, **settings):
        calls.append((settings['compile'], settings['ema_decay']))
        return next(rates)
    monkeypatch.setattr(bench, 'project', project)
    got = bench.compile_probe('ds', 'tmp', 256, {'ema_decay': 0.999, 'compile': False}, rounds=3)
    assert got == {'eager, weight average 0.999': 50.0, 'eager, weight average 0.0': 60.0,
                   'compiled, weight average 0.999': 70.0, 'compiled, weight average 0.0': 80.0}
    assert calls == [(False, 0.999), (False, 0.0), (True, 0.999), (True, 0.0)] * 3


def test_heads_ratio_is_the_right_way_round(monkeypatch, capsys):
    """Steps of fixed, distinct length (MMC 3x SCE): the printed ratio is MMC over SCE, not its inverse."""
    bench = _load('heads.py')
    monkeypatch.setattr(bench, 'make_step',
                        lambda name, batch, precision: lambda: 0.3 if name == 'resnet32_mmc' else 0.1)
    monkeypatch.setattr(sys, 'argv', ['heads.py', '--steps', '2', '--warmup', '0'])
    bench.main()
    assert figure(capsys.readouterr().out, r'ratio mmc / sce: ([\d.]+)') == 3.0


def test_attack_throughput_ratio_is_pgd_over_its_limit(monkeypatch, capsys):
    out = run_bench('attack_throughput.py', ['--model', 'resnet20_mmc', '--batch', '8', '--rounds', '1', '--threads',
                                             '1'], monkeypatch, capsys)
    limit = figure(out, r'limit \(10 input-gradient steps \+ 1 forward\): +([\d.]+) images/s')
    pgd = figure(out, r'PGD-10 \(margin, random start, keep best\) +: +([\d.]+) images/s')
    assert_quotient(figure(out, r'ratio PGD-10 / limit: ([\d.]+)'), pgd, limit, 0.1, 0.001)  # rates: time limit / PGD


def test_attack_throughput_ratio_is_the_right_way_round(monkeypatch, capsys):
    """Rounds of fixed, distinct length (PGD-10 twice its limit): the printed ratio is 0.5, the limit's time over
    PGD's, not its inverse, and each rate is the batch over its own time."""
    bench = _load('attack_throughput.py')
    monkeypatch.setattr(bench, 'limit_time', lambda model, x: 0.2)
    monkeypatch.setattr(bench, 'pgd_time', lambda attack, x, y: 0.4)
    monkeypatch.setattr(sys, 'argv', ['attack_throughput.py', '--model', 'resnet20_mmc', '--batch', '8',
                                      '--rounds', '2', '--threads', '1'])
    bench.main()
    out = capsys.readouterr().out
    assert figure(out, r'ratio PGD-10 / limit: ([\d.]+)') == 0.5
    assert figure(out, r'limit \(10 input-gradient steps \+ 1 forward\): +([\d.]+) images/s') == 40.0
    assert figure(out, r'PGD-10 \(margin, random start, keep best\) +: +([\d.]+) images/s') == 20.0


def test_heads_ratio_is_mmc_step_over_sce_step(monkeypatch, capsys):
    out = run_bench('heads.py', ['--steps', '2', '--warmup', '1', '--batch', '8'], monkeypatch, capsys)
    ms = {h: figure(out, h + r' +median step +([\d.]+) ms') for h in ('resnet32_mmc', 'resnet32_sce')}
    assert_quotient(figure(out, r'ratio mmc / sce: ([\d.]+)'), ms['resnet32_mmc'], ms['resnet32_sce'], 0.1, 0.001)


def test_robust_precision_prints_both_precisions(tmp_path, monkeypatch, capsys):
    import timm
    from safetensors.torch import save_file

    from timm_mmc.data import write_synthetic_dataset
    data = write_synthetic_dataset(tmp_path / 'data', n_train=8, n_test=8, num_classes=10)
    release = tmp_path / 'resnet20_mmc.tiny'
    release.mkdir()
    save_file(timm.create_model('resnet20_mmc', num_classes=10).state_dict(), str(release / 'model.safetensors'))
    with pytest.warns(UserWarning, match='built from the name'):  # a bare weights file, as the warning says
        out = run_bench('robust_precision.py', ['--dataset', str(data), '--n', '8', '--release', str(release),
                                                '--threads', '1'], monkeypatch, capsys)
    for precision in ('bf16', 'fp32'):
        assert 0 <= figure(out, precision + r': clean [\d.]+%, PGD-10 8/255 \(worst of mm/margin\) ([\d.]+)%') <= 100


def test_robust_precision_loads_a_release_folder_by_its_config(tmp_path, monkeypatch, capsys):
    """A folder with config.json loads as ``local-dir:`` does, whatever its name: the head comes from the config."""
    import warnings

    import timm
    from timm.models import save_for_hf

    from timm_mmc.data import write_synthetic_dataset
    from timm_mmc.io import HeadFromNameWarning
    data = write_synthetic_dataset(tmp_path / 'data', n_train=8, n_test=8, num_classes=10)
    release = tmp_path / 'my-release'  # no model name in it: only config.json can say what it is
    model = timm.create_model('resnet20_mmc', num_classes=10, center_norm=5.0)
    save_for_hf(model, str(release), model_args=model.model_args(), safe_serialization=True)
    import timm_mmc
    loaded = []
    real_load = timm_mmc.load_model
    monkeypatch.setattr(timm_mmc, 'load_model', lambda *a, **k: loaded.append(real_load(*a, **k)) or loaded[-1])
    with warnings.catch_warnings():
        warnings.simplefilter('error', HeadFromNameWarning)
        out = run_bench('robust_precision.py', ['--dataset', str(data), '--n', '8', '--release', str(release),
                                                '--threads', '1'], monkeypatch, capsys)
    assert [m.head_config.center_norm for m in loaded] == [5.0]  # the config's head, not the name's default 10
    assert figure(out, re.escape(str(release)) + r' fp32: clean ([\d.]+)%') >= 0


@pytest.mark.parametrize('args, says', [(['--rounds', '0'], '--rounds must be >= 1'),
                                        (['--steps', '0'], '--steps must be >= 1'),
                                        (['--images', '300'], '--images must be a positive multiple of 256')])
def test_train_throughput_refuses_bad_arguments_before_measuring(args, says, monkeypatch, capsys):
    bench = _load('train_throughput.py')
    monkeypatch.setattr(bench, 'plain', lambda *a, **k: pytest.fail('measured before the arguments were checked'))
    monkeypatch.setattr(sys, 'argv', ['train_throughput.py', *args])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2 and says in capsys.readouterr().err
