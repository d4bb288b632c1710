"""The ``python -m eval.robustness`` command line: bad input fails clearly, a tiny run writes a trustworthy report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.report import render_markdown
from eval.robustness import main
from eval.suite import Records, merge_records
from timm_mmc.data import write_parquet_split
from timm_mmc.models.cifar_resnet import CIFAR10_LABELS

CIFAR10 = list(CIFAR10_LABELS)
REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = Path(__file__).resolve().parents[2] / 'shared/data/cifar10'


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A seeded resnet20_mmc checkpoint and a 24-image data set (Hub parquet layout) labelled by its predictions,
    so the clean accuracy is 100% and every attack has work to do."""
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp('tiny')
    torch.manual_seed(0)
    model = timm.create_model('resnet20_mmc').eval()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():  # an untrained net maps every image to one class: whiten its features into the head
        f = model.forward_features(x).mean((2, 3))
        w = torch.randn(256, f.shape[1]) / f.shape[1] ** 0.5 * 3 / (f.std(0) + 1e-6)
        model.head.fc1.weight.copy_(w)
        model.head.fc1.bias.copy_(-w @ f.mean(0))
    ckpt = root / 'resnet20_mmc.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    other = timm.create_model('resnet20_sce')
    bad_ckpt = root / 'sce.safetensors'
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(bad_ckpt))
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    data = root / 'data'
    write_parquet_split(data, 'test', imgs, pred, CIFAR10)
    return dict(root=root, ckpt=ckpt, bad_ckpt=bad_ckpt, data=data)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TIMM_MMC_CACHE', str(tmp_path / 'cache'))


def _base(tiny, out, *extra):
    return ['--model', 'resnet20_mmc', '--checkpoint', str(tiny['ckpt']), '--dataset', str(tiny['data']),
            '--out', str(out), '--no-progress', '--batch-size', '12', *extra]


def test_bad_input_fails_clearly(tiny, tmp_path, capsys):
    out = tmp_path / 'out'
    cases = [
        (['--model', 'resnet7_nonsense', '--dataset', str(tiny['data']), '--out', str(out)], 2, 'unknown model'),
        (['--model', 'resnet20_mmc', '--checkpoint', str(tiny['bad_ckpt']), '--dataset', str(tiny['data']),
          '--out', str(out)], 2, 'does not fit'),
        (['--model', 'resnet20_mmc', '--checkpoint', str(tiny['root'] / 'missing.safetensors'), '--dataset',
          str(tiny['data']), '--out', str(out)], 2, 'does not exist'),
        (_base(tiny, out)[:4] + ['--dataset', str(tiny['root'] / 'no_such_data'), '--out', str(out)], 2,
         'does not exist'),
        (_base(tiny, out, '--n-examples', '25'), 2, 'asked for 25 examples but split'),
        (_base(tiny, out, '--n-examples', '25'), 2, 'Lower --n-examples'),
        (_base(tiny, out)[:4] + ['--dataset', 'cifar10-sample', '--split', 'train', '--out', str(out)], 2,
         "holds only the 'test' split"),
        # a name alone would be measured (or attack from) random initial weights: refused, naming the ways to give
        # weights
        (['--model', 'resnet20_mmc', '--dataset', str(tiny['data']), '--out', str(out)], 2,
         'random initial weights would be used; add --pretrained (the released weights), --checkpoint FILE'),
        (_base(tiny, out, '--transfer-from', 'resnet20_sce'), 2,
         '--transfer-from resnet20_sce names an architecture but no weights'),
        (_base(tiny, out, '--transfer-from', 'resnet20_sce'), 2, '--transfer-checkpoint FILE'),
        (_base(tiny, out, '--random-weights'), 2, '--random-weights contradicts'),
    ]
    for argv, code, text in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert text in err, (text, err)
        if '--split' in argv:  # a missing split is not fixed by fewer examples
            assert '--n-examples' not in err, err
    assert not out.exists()  # nothing written
    refused = [(_base(tiny, out, '--eps', '0'), 'outside (0, 1]'),
               (_base(tiny, out, '--eps', '8'), 'outside (0, 1]'),
               (_base(tiny, out, '--aa-eps=-1/255'), 'outside (0, 1]'),
               (_base(tiny, out, '--attacks', 'pgd', 'deepfool'), "unknown attack 'deepfool'"),
               (_base(tiny, out, '--suite', 'everything'), 'invalid choice'),
               (_base(tiny, out, '--objectives', 'hinge'), "unknown objective 'hinge'"),
               (_base(tiny, out, '--rotation', 'nan'), 'must lie in [0, 180] degrees'),
               (_base(tiny, out, '--device', 'cdua'), "'cdua' is not a device; give cpu, cuda or cuda:N")]
    if not torch.cuda.is_available():  # the CPU machines: no CUDA to ask for
        refused.append((_base(tiny, out, '--device', 'cuda'), 'this machine has no CUDA device'))
    for argv, text in refused:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert text in capsys.readouterr().err
    assert not out.exists()  # nothing half-written


def test_module_entry_point_exit_status(tiny, tmp_path):
    r = subprocess.run([sys.executable, '-m', 'eval.robustness', '--model', 'not_a_model', '--dataset',
                        str(tiny['data']), '--out', str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and 'unknown model' in r.stderr  # bad input: 2, as argparse gives it


def test_tiny_full_run_writes_a_consistent_report(tiny, tmp_path, capsys):
    out = tmp_path / 'res'
    argv = _base(tiny, out, '--suite', 'full', '--n-examples', '12', '--pgd-steps', '2', '3', '--cw-n', '4',
                 '--eps', '0.1/255', '0.25/255', '--pgd-alpha', '0.05/255', '--aa-eps', '0.25/255',
                 '--cw-binary-steps', '2', '--cw-max-iter', '10', '--spsa-n', '4', '--spsa-samples', '8',
                 '--aa-n-iter', '3', '--aa-target-classes', '1', '--transfer-from', 'resnet20_sce',
                 '--transfer-checkpoint', str(tiny['bad_ckpt']), '--name', 'tiny')  # a 10-class SCE net: a source
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert 'ROBUST ACCURACY UNDER THE SUITE at eps 0.25/255' in printed and 'device cpu' in printed
    # the checkpoint is a bare safetensors file: the head came from the name, and the run says so where it is read
    assert "warning: " in captured.err and "built from the name 'resnet20_mmc'" in captured.err
    from timm_mmc import report

    rep = report.load(out / 'tiny.json')  # through the schema: every key typed and checked
    assert json.loads((out / 'tiny.json').read_text())['version'] == report.REPORT_VERSION
    assert (out / 'tiny.md').is_file() and (out / 'tiny.png').stat().st_size > 1000
    assert not list(out.glob('*.tmp*'))
    assert rep.n == 12 and rep.indices == list(range(12))
    assert any("built from the name 'resnet20_mmc'" in w for w in rep.warnings)
    assert rep.clean_accuracy == 1.0 and rep.logits == 'distance' and rep.own_objective == 'mm'
    assert len(rep.checkpoint_sha256) == 64
    assert all(rep.versions.values()) and 'not installed' not in rep.versions.values()  # every package is here
    assert rep.device and rep.seed == 0
    assert rep.timings['total_s'] > 0
    fams = {a.family for a in rep.attacks.values()}
    assert fams == {'pgd', 'cw', 'spsa', 'noise', 'rotation', 'transfer', 'autoattack'}
    # MM head: the adaptive objectives and the margin, each reported, columns take the worst case
    assert {'pgd2-un-0.1-mm', 'pgd2-un-0.1-margin', 'pgd3-tar-0.25-mm'} <= set(rep.attacks)
    pgd = rep.find_attack(family='pgd', steps=2, targeted=False, eps=0.1 / 255, objective='mm')
    assert pgd.name == 'pgd2-un-0.1-mm' and pgd.config['alpha'] == pytest.approx(0.05 / 255)
    col = rep.find_column(family='pgd', steps=2, targeted=False, eps=0.1 / 255)
    assert col.objectives == ['mm', 'margin'] and col.name == 'PGD2 un 0.1'
    assert col.accuracy <= min(rep.attacks[a].accuracy for a in col.attacks)
    for wc in rep.worst_case.values():
        linf = [a for a in rep.attacks.values() if a.threat == 'Linf' and a.eps <= wc.eps + 1e-9 and a.n == rep.n]
        assert wc.accuracy <= min(a.accuracy for a in linf) + 1e-9
        assert wc.accuracy <= rep.clean_accuracy
    assert rep.worst_at(0.25 / 255).accuracy < rep.worst_at(0.1 / 255).accuracy < 1  # attacks do work
    cw = rep.find_attack(family='cw', targeted=False)
    assert cw.n == 4 and 0 < cw.success_rate <= 1 and cw.l2_mean > 0
    assert rep.find_attack(family='spsa', targeted=False, eps=0.1 / 255).n == 4
    aa = rep.find_attack(family='autoattack')
    assert 0 < aa.logit_scale <= 1 and aa.version == 'fast' and aa.components == ['apgd-ce', 'apgd-t']
    assert {c.method for c in rep.find_columns(family='transfer')} == {'pgd', 'mim'}
    from timm_mmc.io import file_sha256
    assert rep.transfer_sha256 == file_sha256(tiny['bad_ckpt'])  # which weights the transfer attacks came from
    assert 'zero_input_gradient_fraction' in rep.diagnostics
    md = (out / 'tiny.md').read_text()
    assert f'## Black-box transfer from `resnet20_sce` (its weights: sha256 {rep.transfer_sha256[:16]})' in md
    assert '## Table A' in md and '| PGD2 tar 0.1 | PGD2 un 0.1 | PGD3 tar 0.1 |' in md
    assert 'paper figure' in md and 'Robust accuracy under the suite' in md
    cw_tar = rep.find_attack(family='cw', targeted=True)
    assert f'| {cw_tar.name} |' in md and 'not fooled to the target; no budget)' in md  # not read as robust accuracy
    # the keep-best rule it counted by is recorded, so no reader takes it for a report of the old rule
    assert rep.rules == report.RULES == {'targeted_keep_best': 'misclassified'}
    assert rep.all_warnings() == rep.warnings and 'made before the fix' not in md
    old_file = {k: v for k, v in dict(rep.to_dict(), version='2.0').items() if k != 'rules'}  # a 2.0 file
    old = report.from_dict(old_file)
    assert old.version == '2.0' and old.rules == {} and old.warnings == rep.warnings
    assert any('made before the fix of 2026-12-05' in w for w in old.all_warnings())
    v21 = report.from_dict({k: v for k, v in dict(rep.to_dict(), version='2.1').items() if k != 'transfer_sha256'})
    assert v21.version == '2.1' and v21.transfer_sha256 is None and v21.rules == rep.rules
    assert report.REPORT_VERSION == '2.2' and rep.to_dict()['version'] == '2.2'  # the key set 2.1 readers refuse
    assert 'made before the fix of 2026-12-05' in render_markdown(old)
    other = report.from_dict(dict(rep.to_dict(), rules={'targeted_keep_best': 'target'}))
    assert any("keep-best rule 'target', not 'misclassified'" in w for w in other.all_warnings())
    untargeted = dict(old_file, attacks={k: v for k, v in old_file['attacks'].items()
                                         if not (v['targeted'] and v['family'] in ('pgd', 'spsa'))})
    assert report.from_dict(untargeted).all_warnings() == rep.warnings  # nothing the old rule could have changed
    # python -m eval.report re-renders the Markdown and plot beside an old report; the JSON stays as it was
    from eval.report import main as rerender_main
    stale = tmp_path / 'old' / 'r20.json'
    stale.parent.mkdir()
    stale.write_text(json.dumps(old_file))
    (stale.parent / 'r20.md').write_text('what an older timm-mmc wrote')
    assert rerender_main([str(stale)]) == 0
    assert 'made before the fix of 2026-12-05' in (stale.parent / 'r20.md').read_text()
    assert (stale.parent / 'r20.png').stat().st_size > 0 and json.loads(stale.read_text()) == old_file
    (tmp_path / 'old' / 'bad.json').write_text('{"model": 1}')
    (stale.parent / 'r20.md').unlink()
    assert rerender_main([str(stale), str(tmp_path / 'old' / 'bad.json')]) == 2  # all read before any is written
    assert not (tmp_path / 'old' / 'bad.md').exists() and not (stale.parent / 'r20.md').exists()


def test_a_broken_check_writes_no_report_and_other_crashes_are_not_called_checks(tiny, tmp_path, capsys, monkeypatch):
    """An attack whose batch leaves the eps-ball is a failed run-time check (exit 1, no report); an unrelated
    RuntimeError (say, out of memory) is not relabelled as one."""
    from timm_mmc import PGD
    argv = _base(tiny, tmp_path / 'res', '--suite', 'quick', '--attacks', 'pgd', '--pgd-steps', '1',
                 '--n-examples', '4', '--name', 'r')
    monkeypatch.setattr(PGD, 'perturb', lambda self, x, y, t=None: (x + 2 * self.eps).clamp(0, 1))
    assert main(argv) == 1
    assert 'run-time check failed' in capsys.readouterr().err and not list((tmp_path / 'res').glob('r.*'))

    def oom(self, x, y, t=None):
        raise RuntimeError('out of memory')
    monkeypatch.setattr(PGD, 'perturb', oom)
    with pytest.raises(RuntimeError, match='out of memory'):
        main(argv)
    assert 'run-time check failed' not in capsys.readouterr().err


def _figures(rep) -> dict:
    """What a report measured, without the clock: accuracies, counts and the worst cases."""
    return dict(clean=rep.clean_accuracy, tta=rep.clean_accuracy_flip_tta,
                attacks={k: (a.accuracy, a.n, a.n_attacked, a.clean_accuracy, a.seed) for k, a in rep.attacks.items()},
                worst={k: (w.accuracy, w.n, tuple(w.attacks)) for k, w in rep.worst_case.items()})


def test_a_cut_evaluation_resumes_to_the_figures_of_an_uncut_one(tiny, tmp_path, capsys, monkeypatch):
    """Killed after its third attack, an evaluation keeps what it measured; ``--resume`` runs only the rest, and the
    report matches one made in a single run. A bare rerun, a resume with another option and a resume of nothing are
    refused before any work, and the state stays for the right resume; a default given explicitly (or a count over
    the examples) is no other option, and a resume on another processor is allowed and said in the report."""
    from eval import partial, robustness
    from timm_mmc import report
    opts = ('--suite', 'quick', '--n-examples', '12', '--pgd-steps', '2', '--eps', '0.25/255', '0.5/255',
            '--pgd-alpha', '0.1/255', '--aa-eps', '0.25/255', '--aa-n-iter', '2', '--aa-n', '6', '--tta-flip')
    assert main(_base(tiny, tmp_path / 'whole', *opts, '--name', 'r')) == 0
    whole = report.load(tmp_path / 'whole' / 'r.json')
    assert not (tmp_path / 'whole' / 'r.partial').exists()  # removed once the report is written

    out, real_save, saved = tmp_path / 'cut', partial.save, []

    def save_then_die(folder, rank, identity, records, elapsed_s, machines):
        real_save(folder, rank, identity, records, elapsed_s, machines)
        saved.append(dict(records.times))
        if len(records.attacks) == 3:
            raise KeyboardInterrupt  # as Ctrl-C or a SIGTERM there
    monkeypatch.setattr(partial, 'save', save_then_die)
    assert main(_base(tiny, out, *opts, '--name', 'r')) == 1
    assert 'the same command with --resume continues it' in capsys.readouterr().err
    monkeypatch.setattr(partial, 'save', real_save)
    assert sorted(p.name for p in out.iterdir()) == ['r.partial']  # no report, only the state
    assert partial.load(out / 'r.partial', 0).done == list(whole.attacks)[:3]
    capsys.readouterr()

    for argv, text in [(_base(tiny, out, *opts, '--name', 'r'), 'pass --resume to continue it'),
                       (_base(tiny, out, *opts, '--name', 'r', '--resume', '--seed', '1'), 'seed: 0 -> 1'),
                       (_base(tiny, out, *opts, '--name', 'r', '--resume', '--eps', '0.25/255'), 'eps: '),
                       (_base(tiny, out, *opts, '--name', 'r', '--resume', '--aa-n-iter', '3'), 'aa_n_iter: 2 -> 3'),
                       (_base(tiny, out, *opts, '--name', 'r', '--resume', '--aa-n', '5'), 'aa_n: 6 -> 5'),
                       (_base(tiny, out, *opts, '--name', 'other', '--resume'), 'no unfinished evaluation')]:
        assert main(argv) == 2, argv
        assert text in capsys.readouterr().err, text
        assert (out / 'r.partial').is_dir() and not (out / 'r.json').exists()

    first = partial.load(out / 'r.partial', 0).machines
    assert list(first) == list(whole.attacks)[:3] and len(set(first.values())) == 1
    here = next(iter(first.values()))
    assert here.startswith('cpu: ')
    monkeypatch.setattr(robustness, '_machine', lambda device: 'cpu: another one (AVX2)')
    from eval import runner

    def not_again(*a, **k):
        raise AssertionError('the zero-gradient flags were measured before the cut: taken, not measured again')
    monkeypatch.setattr(runner, '_zero_grad_flags', not_again)
    # as given this time, each is what ran before: --aa-version fast is the quick suite's default, 3 target classes
    # fast's; the quick suite has no C&W, SPSA, noise or rotation, so their options change nothing
    same = ('--aa-version', 'fast', '--aa-target-classes', '3', '--cw-n', '3', '--spsa-n', '5', '--noise-sigma', '0.2',
            '--rotation', '10')
    assert main(_base(tiny, out, *opts, '--name', 'r', '--resume', '--threads', '1', *same)) == 0
    printed = capsys.readouterr().out
    assert 'resuming: 3 of' in printed
    resumed = report.load(out / 'r.json')
    assert _figures(resumed) == _figures(whole)
    assert resumed.diagnostics['zero_input_gradient_fraction'] == whole.diagnostics['zero_input_gradient_fraction']
    moved = [w for w in resumed.warnings if w.startswith('resumed on another machine')]
    names = list(whole.attacks)
    assert moved == [f'resumed on another machine, so the attacks ran on 2 processors: {", ".join(names[:3])} on '
                     f'{here}; {", ".join(names[3:])} on cpu: another one (AVX2). The clean predictions agreed on '
                     f'each; an uncut run could differ in the last digits of an attack.'], resumed.warnings
    assert not any(w.startswith('resumed on') for w in whole.warnings)
    for name in list(whole.attacks)[:3]:  # taken from the cut run, not run again
        assert resumed.timings[name] == saved[-1][name]
    assert 0 < resumed.timings['before_resume_s'] <= resumed.timings['total_s']
    assert not (out / 'r.partial').exists()


def test_resume_checks_the_clean_predictions_and_overwrite_starts_over(tiny, tmp_path, capsys):
    """A state whose clean predictions this run does not reproduce (other weights, numerics or thread count) is
    refused before any attack: exit 2, no report, the state kept for a resume where it ran. A SIGTERM stops a run with
    exit 1 and its state kept; a torn state file is refused with the fix. ``--overwrite`` without ``--resume`` drops a
    state and starts over."""
    import os

    from safetensors.torch import load_file, save_file
    out = tmp_path / 'res'
    argv = _base(tiny, out, '--suite', 'quick', '--attacks', 'pgd', '--n-examples', '8', '--pgd-steps', '1',
                 '--eps', '0.25/255', '--name', 'r')
    env = dict(os.environ, TIMM_MMC_FAULT='eval-attack:1', TIMM_MMC_CACHE=str(tmp_path / 'cache'))
    r = subprocess.run([sys.executable, '-m', 'eval.robustness', *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == -9, r.stderr[-3000:]  # SIGKILLed after its first attack was kept
    state = out / 'r.partial' / 'rank0.safetensors'
    kept = state.read_bytes()
    tensors = load_file(str(state))
    tensors['clean'][0] = ~tensors['clean'][0]
    save_file(tensors, str(state))
    assert main([*argv, '--resume']) == 2
    assert "other clean predictions (1 of this process's 8 points differ" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ['r.partial'] and (out / 'r.partial' / 'rank0.json').is_file()

    r = subprocess.run([sys.executable, '-m', 'eval.robustness', *argv, '--overwrite'], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=dict(env, TIMM_MMC_FAULT='term-eval-attack:1'))
    assert r.returncode == 1 and 'the same command with --resume continues it' in r.stderr, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ['r.partial']  # a SIGTERM stops it with its state kept
    state.write_bytes(kept[:len(kept) // 2])  # torn
    assert main([*argv, '--resume']) == 2
    assert 'cannot be read' in capsys.readouterr().err and (out / 'r.partial').is_dir()
    assert main([*argv, '--overwrite']) == 0
    assert (out / 'r.json').is_file() and not (out / 'r.partial').exists()


def test_the_machine_note_names_where_each_attack_ran_after_resumes_on_several_machines():
    """Three attacks on A, the fourth on B, the rest on A again: the note groups them by processor, and none is blamed
    on the last one; one processor throughout gives no note."""
    from eval.partial import machine_note
    names = ['a1', 'a2', 'a3', 'b4', 'a5']
    ran = dict(a1='A', a2='A', a3='A', b4='B')
    assert machine_note(ran, 'A', names).startswith('resumed on another machine, so the attacks ran on 2 processors: '
                                                    'a1, a2, a3, a5 on A; b4 on B. ')
    assert machine_note(dict(a1='A'), 'C', names[:2]).startswith('resumed on another machine, so the attacks ran on 2 '
                                                                 'processors: a1 on A; a2 on C. ')
    assert machine_note(dict(a1='A', a2='A'), 'A', names) is None and machine_note({}, 'A', names) is None


def test_a_state_of_an_older_format_is_refused_with_the_fix(tmp_path):
    from safetensors.torch import save_file

    from eval.partial import PARTIAL_FORMAT, PartialError, load
    (tmp_path / 'rank0.json').write_text(json.dumps(dict(format=PARTIAL_FORMAT - 1, identity={}, done=[], times={},
                                                         warnings=[], extra={}, elapsed_s=1.0, machines={})))
    save_file({'positions': torch.arange(2), 'clean': torch.ones(2, dtype=torch.bool)},
              str(tmp_path / 'rank0.safetensors'))
    with pytest.raises(PartialError, match=f'is not a partial state of format {PARTIAL_FORMAT}; start the evaluation '
                                           'over with --overwrite'):
        load(tmp_path, 0)


def test_each_process_of_a_sharded_run_names_itself_in_its_errors(monkeypatch, capsys):
    from eval import robustness
    monkeypatch.setenv('WORLD_SIZE', '2')
    for rank, alike, want in [('0', False, 'error: x\n'), ('1', False, '[process 1 of 2] error: x\n'),
                              ('0', True, 'error: x\n'), ('1', True, '')]:
        monkeypatch.setenv('RANK', rank)
        robustness._error('error: x', alike_everywhere=alike)
        assert capsys.readouterr().err == want, (rank, alike)
    monkeypatch.delenv('WORLD_SIZE')
    monkeypatch.setenv('RANK', '1')  # a stray RANK outside a sharded run changes nothing
    robustness._error('error: x', alike_everywhere=True)
    assert capsys.readouterr().err == 'error: x\n'


def test_package_versions_of_a_checkout_without_distribution_metadata(monkeypatch):
    """Run from a checkout (no installed distribution, as on a rented GPU): versions come from the modules, and only
    a package that cannot be imported is None; never "not installed" for one that ran."""
    import importlib.metadata

    # imported before the metadata goes away, as in a process that ran them
    modules = {name: importlib.import_module(name) for name in ('accelerate', 'pyautoattack', 'datasets')}

    from timm_mmc.versions import package_versions

    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, 'version', no_metadata)
    versions = package_versions()
    import timm
    import timm_mmc
    assert versions['timm-mmc'] == timm_mmc.__version__ and versions['timm'] == timm.__version__
    assert versions['torch'] == torch.__version__ and versions['pyautoattack'] == modules['pyautoattack'].__version__
    assert 'not installed' not in versions.values()


def test_merge_records_orders_by_position():
    def part(pos):
        pos = torch.tensor(pos)
        r = Records(pos, pos % 2 == 0)
        r.attacks['a'] = dict(robust=pos % 3 == 0, in_slice=torch.ones_like(pos, dtype=torch.bool),
                              attacked=torch.ones_like(pos, dtype=torch.bool))
        r.zero_grad['ce'] = pos > 2
        r.times['a'] = float(len(pos))
        r.warnings.append('w')
        return r

    merged = merge_records([part([0, 2, 4]), part([1, 3])])
    assert merged.positions.tolist() == [0, 1, 2, 3, 4]
    assert merged.clean.tolist() == [True, False, True, False, True]
    assert merged.attacks['a']['robust'].tolist() == [True, False, False, True, False]
    assert merged.times['a'] == 3.0 and merged.warnings == ['w']


def test_merge_records_weights_the_zero_gradient_share_by_each_process_points():
    def part(pos, share, steps):
        pos = torch.tensor(pos)
        r = Records(pos, torch.ones_like(pos, dtype=torch.bool))
        r.extra['pgd'] = dict(zero_grad_fraction_first_step=share, zero_grad_n=len(pos), gradient_steps=steps, seed=7)
        return r

    merged = merge_records([part([0, 2, 4], 1.0, 30), part([1], 0.0, 10)])
    assert merged.extra['pgd'] == dict(zero_grad_fraction_first_step=0.75, zero_grad_n=4, gradient_steps=40, seed=7)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason='real CIFAR-10 copy not present')
def test_real_cifar_plumbing(tmp_path, capsys):
    argv = ['--model', 'resnet20_sce', '--random-weights', '--dataset', str(SHARED_CIFAR), '--n-examples', '32',
            '--suite', 'quick',
            '--pgd-steps', '3', '--aa-n', '8', '--aa-n-iter', '3', '--out', str(tmp_path), '--no-progress',
            '--batch-size', '32', '--name', 'real']
    assert main(argv) == 0
    from timm_mmc import report

    rep = report.load(tmp_path / 'real.json')
    assert any('random initial weights' in w for w in rep.all_warnings())  # --random-weights is said in the report
    assert 'random initial weights' in (tmp_path / 'real.md').read_text()
    assert rep.n == 32 and 'cifar10' in rep.dataset_source and rep.logits == 'linear' and rep.own_objective == 'ce'
    assert set(rep.options['objectives']) == {'ce', 'margin'}
    assert rep.worst_at(8 / 255).accuracy <= rep.clean_accuracy


@pytest.mark.slow
@pytest.mark.long(47)
def test_sharded_run_gathers_every_example(tiny, tmp_path):
    """``torchrun`` (what ``accelerate launch`` does on GPUs): two processes, one report with every example."""
    import os
    torchrun = Path(sys.executable).parent / 'torchrun'
    if not torchrun.exists():
        pytest.skip('torchrun not installed')
    out = tmp_path / 'sharded'
    env = dict(os.environ, TIMM_MMC_CACHE=str(tmp_path / 'cache'), OMP_NUM_THREADS='1')

    def launch(name: str, *extra: str, fault: str = '') -> subprocess.CompletedProcess:
        argv = _base(tiny, out, '--suite', 'quick', '--attacks', 'pgd', 'autoattack', '--n-examples', '11',
                     '--pgd-steps', '2', '--eps', '0.25/255', '--pgd-alpha', '0.1/255', '--threads', '1', '--aa-eps',
                     '0.25/255', '--aa-n-iter', '2', '--standalone', '--tta-flip', '--name', name, *extra)
        return subprocess.run([str(torchrun), '--nproc_per_node', '2', '-m', 'eval.robustness', *argv], cwd=REPO,
                              capture_output=True, text=True, timeout=300, env=dict(env, TIMM_MMC_FAULT=fault))
    r = launch('sharded')
    assert r.returncode == 0, r.stderr[:6000]
    from timm_mmc import report

    rep = report.load(out / 'sharded.json')
    # cut after its second attack and resumed (both processes keep as many attacks as the one with fewest): the same
    assert launch('cut', fault='eval-attack:2').returncode != 0 and (out / 'cut.partial').is_dir()
    r = launch('cut', '--resume')
    assert r.returncode == 0 and 'resuming: ' in r.stdout, r.stderr[:6000]
    cut = report.load(out / 'cut.json')
    assert _figures(cut) == _figures(rep)
    assert cut.diagnostics['zero_input_gradient_fraction'] == rep.diagnostics['zero_input_gradient_fraction']
    assert rep.num_processes == 2 and rep.n == 11 and rep.indices == list(range(11))
    assert rep.clean_accuracy == 1.0
    for a in rep.attacks.values():
        assert a.n == 11 and a.n_attacked == 11  # both shards' examples were attacked and gathered
    assert rep.worst_at(0.25 / 255).accuracy < 1.0
    # flip TTA sums over both shards (every process joins that collective before the second one leaves)
    import timm

    from timm_mmc.data import load_split
    model = timm.create_model('resnet20_mmc', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tiny['ckpt']))).eval()
    data = load_split(str(tiny['data']), 'test')
    x, y = data.float_images()[:11], data.labels[:11]
    with torch.no_grad():
        want = ((model(x) + model(x.flip(3))).argmax(1) == y).double().mean().item()
    assert rep.clean_accuracy_flip_tta == pytest.approx(want)
    # both shards attacked one scaled model, scaled from the largest clean margin over all 11 images
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
    aa = next(a for a in rep.attacks.values() if a.family == 'autoattack')
    assert aa.max_clean_margin == pytest.approx((top2[:, 0] - top2[:, 1]).max().item(), rel=1e-4)


def test_random_weights_on_purpose_run_and_the_report_says_so(tiny, tmp_path, capsys, monkeypatch):
    from timm_mmc import report
    out = tmp_path / 'res'
    argv = ['--model', 'resnet20_mmc', '--random-weights', '--dataset', str(tiny['data']), '--out', str(out),
            '--no-progress', '--batch-size', '12', '--suite', 'quick', '--attacks', 'pgd', '--pgd-steps', '1',
            '--n-examples', '4', '--name', 'random']
    assert main(argv) == 0
    said = capsys.readouterr().out
    rep = report.load(out / 'random.json')
    assert rep.checkpoint is None and not rep.pretrained
    assert [w for w in rep.all_warnings() if 'random initial weights' in w]
    assert 'random initial weights' in (out / 'random.md').read_text() and 'random initial weights' in said
    # the warning is derived from what the report records, so it is absent where weights were named
    assert main(_base(tiny, out, '--suite', 'quick', '--attacks', 'pgd', '--pgd-steps', '1', '--n-examples', '4',
                      '--name', 'trained')) == 0
    assert not [w for w in report.load(out / 'trained.json').all_warnings() if 'random initial weights' in w]
    # the random weights come from --seed, whatever the global generator held: a rerun (and a --resume) measures the
    # same network
    import eval.robustness as cli
    loaded, real_load = [], cli._load
    monkeypatch.setattr(cli, '_load', lambda *a: loaded.append(real_load(*a)) or loaded[-1])
    for seed in (123, 456):
        torch.manual_seed(seed)
        assert main([*argv[:-1], f'random{seed}']) == 0
    first, second = (dict(m.named_parameters()) for m in loaded)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_flip_tta_is_reported_beside_the_single_pass_figure(tiny, tmp_path, capsys):
    import timm

    from timm_mmc import report
    from timm_mmc.data import load_split
    out = tmp_path / 'res'
    assert main(_base(tiny, out, '--suite', 'quick', '--attacks', 'pgd', '--pgd-steps', '1', '--eps', '0.1/255',
                      '--n-examples', '24', '--tta-flip', '--name', 'tta')) == 0
    assert 'flip test-time augmentation' in capsys.readouterr().out
    rep = report.load(out / 'tta.json')
    model = timm.create_model('resnet20_mmc', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tiny['ckpt']))).eval()
    data = load_split(str(tiny['data']), 'test')
    x = data.float_images()
    with torch.no_grad():
        want = ((model(x) + model(x.flip(3))).argmax(1) == data.labels).double().mean().item()
        single = (model(x).argmax(1) == data.labels).double().mean().item()
    assert rep.clean_accuracy_flip_tta == pytest.approx(want) and rep.clean_accuracy == pytest.approx(single)
    assert main(_base(tiny, out, '--suite', 'quick', '--attacks', 'pgd', '--pgd-steps', '1', '--eps', '0.1/255',
                      '--n-examples', '4', '--name', 'no_tta')) == 0
    assert report.load(out / 'no_tta.json').clean_accuracy_flip_tta is None


def test_percent_never_rounds_a_count_between_none_and_all_to_an_end():
    from timm_mmc.report import percent
    assert [percent(v) for v in (0.2975, 0.0, 1.0, None, float('nan'))] == ['29.8', '0.0', '100.0', '-', '-']
    assert percent(4 / 10000) == '0.04' and percent(9996 / 10000) == '99.96'  # not 0.0 and 100.0
    assert percent(0.99995, 2) == '99.995' and percent(0.00004, 2) == '0.004'
