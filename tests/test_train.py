"""Training entry point: learning, export, resume after SIGKILL, distributed equivalence, bad input."""
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from _shared import train_process
from timm_mmc.io import ModelLoadError
from timm_mmc.runfolder import EpochRecord
from timm_mmc.train import main
from timm_mmc.train_parts import RunClock
from timm_mmc.data import parquet_split_path, write_synthetic_dataset as make_image_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ['--epochs', '2', '--batch-size', '32', '--feature-dim', '16', '--robust-every', '0', '--no-progress',
        '--threads', '1']


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    return str(make_image_dataset(tmp_path_factory.mktemp('synth') / 'ds'))


def _history(out):
    return [json.loads(line) for line in (Path(out) / 'metrics.jsonl').read_text().splitlines()]


@pytest.mark.parametrize('model,extra', [
    ('resnet20_sce', ['--lr', '0.05']),  # 0.1 diverged in epoch 3 in fp32 on these 128 images (0.05: both precisions)
    ('resnet20_mmc', ['--lr', '0.02']),
    ('resnet20_mmc', ['--lr', '0.02', '--adv', 'fgsm']),
])
def test_loss_decreases_and_export_loads(model, extra, synth, tmp_path):
    out = tmp_path / 'run'
    assert main(['--model', model, '--dataset', synth, '--output', str(out), '--epochs', '3', *TINY[2:], *extra]) == 0
    hist = _history(out)
    assert len(hist) == 3
    assert hist[-1]['train_loss'] < hist[0]['train_loss']
    # the export loads through timm's pretrained path and predicts what the trained module predicted
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == model and cfg['model_args']['feature_dim'] == 16
    m = timm.create_model(model, pretrained=True, num_classes=4, feature_dim=16,
                          pretrained_cfg_overlay=dict(file=str(out / 'model.safetensors'), num_classes=4)).eval()
    sd = load_file(str(out / 'model.safetensors'))
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    from timm_mmc.data import load_split
    test = load_split(synth, 'test')
    with torch.no_grad():
        acc = (m(test.float_images()).argmax(1) == test.labels).float().mean().item()
    assert abs(acc - hist[-1]['test_acc']) < 0.05  # the run's precision (bf16 where native) vs fp32 here
    assert json.loads((out / 'summary.json').read_text())['test_acc'] == hist[-1]['test_acc']


@pytest.mark.slow
def test_real_cifar10_slice(cifar10_path, tmp_path):
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', cifar10_path, '--output', str(out), *TINY,
                 '--train-limit', '512', '--test-limit', '128', '--robust-every', '1', '--robust-n', '32']) == 0
    hist = _history(out)
    assert hist[-1]['train_loss'] < hist[0]['train_loss']
    assert 0.0 <= hist[-1]['robust_acc'] <= 1.0 and 'worst of mm and margin' in hist[-1]['robust_attack']
    summary = json.loads((out / 'summary.json').read_text())  # says whose PGD-10 it is: not the exported average's
    assert (summary['robust_acc'], summary['robust_epoch'], summary['robust_weights']) == \
        (hist[-1]['robust_acc'], 2, 'last') and summary['weights'] in ('ema', 'last')


def _train(args) -> None:
    """A run that is not to be killed goes in this process: a process of its own spends most of a tiny run's time
    on imports (torch, timm, torchvision, datasets: 5-10 s on a busy 2-core machine)."""
    assert main(list(args)) == 0


def _run(args, env_extra=None, check=True):
    """A run in a process of its own, for a fault (``TIMM_MMC_FAULT``) to kill it."""
    proc = train_process(args, env_extra)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sigkill_mid_epoch_then_resume_is_bit_identical(synth, tmp_path):
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', '--checkpoint-every', '3',
            '--mixup', '0.4', *TINY]  # mixup's weights are drawn per step from the seed, so a resume draws them again
    _train([*base, '--output', str(tmp_path / 'ref')])
    # 4 steps an epoch (128 / 32): step 6 is mid-epoch 2, after the checkpoint at step 3 and the epoch-end one at 4
    killed = _run([*base, '--output', str(tmp_path / 'cut')], {'TIMM_MMC_FAULT': 'step:6'}, check=False)
    assert killed.returncode == -9
    assert not (tmp_path / 'cut' / 'model.safetensors').exists()
    _train([*base, '--output', str(tmp_path / 'cut'), '--resume'])
    a = load_file(str(tmp_path / 'ref' / 'model.safetensors'))
    b = load_file(str(tmp_path / 'cut' / 'model.safetensors'))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _untimed(_history(tmp_path / 'ref')) == _untimed(_history(tmp_path / 'cut'))
    # CPU time is recorded every epoch and goes on across the resume (the killed part's own time is lost with it)
    cpu = [h['cpu_s'] for h in _history(tmp_path / 'cut')]
    summary = json.loads((tmp_path / 'cut' / 'summary.json').read_text())
    assert 0 < cpu[0] < cpu[1] <= summary['cpu_time_s'] and summary['wall_time_s'] > 0
    # nothing stopped the process: no paused time, recorded as such every epoch and in the summary
    assert [h['paused_s'] for h in _history(tmp_path / 'cut')] == [0.0, 0.0] and summary['paused_time_s'] == 0.0
    # a SIGTERM instead (a scheduler's preemption, a session's end) at step 5, between the checkpoints at 4 and 6:
    # a checkpoint there, exit 1 with the way on, and a resume that loses no step
    from timm_mmc.runfolder import RunFolder
    stopped = _run([*base, '--output', str(tmp_path / 'term')], {'TIMM_MMC_FAULT': 'term-step:5'}, check=False)
    assert stopped.returncode == 1 and 'stopped by SIGTERM after step 5 (epoch 2, step 1 of 4)' in stopped.stderr
    assert '--resume' in stopped.stderr and RunFolder(tmp_path / 'term').checkpoint_step() == 5
    _train([*base, '--output', str(tmp_path / 'term'), '--resume'])
    c = load_file(str(tmp_path / 'term' / 'model.safetensors'))
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


def _untimed(history):
    return [{k: v for k, v in h.items() if k not in EpochRecord.TIMINGS} for h in history]


def test_cpu_time_is_unknown_after_resuming_a_run_that_did_not_record_it():
    """A run cut before CPU time was recorded has none after its resume, rather than the resumed part's alone."""
    clocks = RunClock(dict(loss=0.0, wall=600.0), global_step=390).read()
    assert 'cpu' not in clocks and clocks['wall'] >= 600.0
    new = RunClock(dict(loss=0.0), global_step=0)
    sum(i * i for i in range(200_000))  # spend some CPU
    assert 0 < new.read()['cpu'] < 60
    resumed = RunClock(dict(wall=600.0, cpu=1100.0), global_step=390)
    assert 1100.0 <= resumed.read()['cpu'] < 1160.0
    assert 'paused' not in resumed.read()  # the same for paused time
    assert RunClock(dict(wall=600.0, cpu=1100.0, paused=120.0), global_step=390).read()['paused'] == 120.0
    from timm_mmc.runfolder import RunSummary
    from timm_mmc.train_parts import claim_line
    summary = RunSummary(model='resnet32_mmc', test_acc=0.9, epochs=3, wall_time_s=600.0, cpu_time_s=1100.0,
                         hardware='x', versions=dict(torch='2'), dataset='d')
    assert '3 epochs in 10.0 min (18 CPU-min) on x: clean accuracy 90.00%' in claim_line(summary, 100)
    summary.paused_time_s = 90.0
    assert '3 epochs in 10.0 min (18 CPU-min, 1.5 min of it paused) on x' in claim_line(summary, 100)
    started = claim_line(summary, 100, 'a/model.safetensors')  # --init-from: not the whole training
    assert '3 epochs from the weights in a/model.safetensors in 10.0 min' in started


_PAUSE_CHILD = """
import json, sys, threading, time
from timm_mmc.train_parts import RunClock
RunClock.TICK_S, RunClock.PAUSE_GAP_S = 0.05, 1.0
clock = RunClock(dict(wall=60.0, cpu=50.0, paused=7.0), global_step=3)
go = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
print('ready', flush=True)
while not go.is_set():  # busy, as a training step is: being late from load alone is not a pause
    sum(i * i for i in range(20_000))
time.sleep(0.5)  # the watcher's next wake-up, after the stop, has come
print(json.dumps(clock.read()), flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, 'SIGSTOP'), reason='needs POSIX job control signals')
def test_run_clock_counts_the_time_the_process_stood_still_and_nothing_else():
    """A run stopped with SIGSTOP (kill -STOP, Ctrl-Z) records the stop as paused time on top of what its checkpoint
    had; a busy process never stopped records none."""
    children = {name: subprocess.Popen([sys.executable, '-c', _PAUSE_CHILD], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, cwd=REPO) for name in ('busy', 'stopped')}
    assert all(p.stdout.readline() == 'ready\n' for p in children.values())
    time.sleep(0.3)
    os.kill(children['stopped'].pid, signal.SIGSTOP)
    t0 = time.monotonic()
    time.sleep(2.5)
    os.kill(children['stopped'].pid, signal.SIGCONT)
    stood = time.monotonic() - t0  # at least this long: SIGSTOP takes effect at once, SIGCONT once sent
    clocks = {name: json.loads(p.communicate('go\n', timeout=60)[0]) for name, p in children.items()}
    assert clocks['busy']['paused'] == 7.0 and clocks['busy']['wall'] >= 60.0 + 2.5
    assert stood - 0.2 < clocks['stopped']['paused'] - 7.0 < stood + 1.0, (stood, clocks)
    assert clocks['stopped']['wall'] - 60.0 > clocks['stopped']['paused'] - 7.0


def test_kill_during_checkpoint_write_keeps_previous(synth, tmp_path, capsys):
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', '--checkpoint-every', '3',
            *TINY, '--output', str(tmp_path / 'cut')]
    killed = _run(base, {'TIMM_MMC_FAULT': 'save:4'}, check=False)  # dies inside the epoch-1 checkpoint write
    assert killed.returncode == -9
    ckpts = tmp_path / 'cut' / 'checkpoints'
    assert (ckpts / 'latest').read_text() == 'step_00000003'  # the half-written one was never named
    assert any(p.name.startswith('.tmp_') for p in ckpts.iterdir())
    _train([*base, '--resume'])
    assert 'resumed from step_00000003' in capsys.readouterr().out
    ref = tmp_path / 'ref'
    _train([*base[:-1], str(ref)])
    a, b = load_file(str(ref / 'model.safetensors')), load_file(str(tmp_path / 'cut' / 'model.safetensors'))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_kill_inside_the_export_leaves_a_run_that_is_not_finished(tmp_path, monkeypatch):
    """summary.json says the export is whole: a kill between replacing the weights and the config must not leave the
    old summary beside the new weights, so the run reads as not finished and a --resume exports again."""
    from timm_mmc.runfolder import RunFolder, RunSummary
    run = RunFolder(tmp_path)
    run.path.mkdir(exist_ok=True)
    labels = [str(i) for i in range(10)]
    first, second = (timm.create_model('resnet20_mmc', num_classes=10) for _ in range(2))
    run.export(first, first.model_args(), labels, RunSummary(model='resnet20_mmc', test_acc=0.5))
    assert run.finished() and run.summary().test_acc == 0.5
    replace = os.replace

    def killed_at_the_config(src, dst):
        if Path(dst).name == 'config.json':
            raise KeyboardInterrupt('killed')
        replace(src, dst)

    monkeypatch.setattr(os, 'replace', killed_at_the_config)
    with pytest.raises(KeyboardInterrupt):
        run.export(second, second.model_args(), labels, RunSummary(model='resnet20_mmc', test_acc=0.7))
    new, want = load_file(str(tmp_path / 'model.safetensors')), second.state_dict()
    assert new.keys() == want.keys() and all(torch.equal(new[k], want[k]) for k in new)  # the weights were replaced
    assert not run.finished() and run.summary() is None
    monkeypatch.setattr(os, 'replace', replace)
    run.export(second, second.model_args(), labels, RunSummary(model='resnet20_mmc', test_acc=0.7))
    assert run.finished() and run.summary().test_acc == 0.7


def test_a_kill_after_the_last_checkpoint_before_its_metrics_line_loses_no_epoch(synth, tmp_path, capsys):
    out = tmp_path / 'cut'
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', *TINY, '--output', str(out)]
    killed = _run(base, {'TIMM_MMC_FAULT': 'metrics:8'}, check=False)  # 4 steps an epoch: after epoch 2's checkpoint
    assert killed.returncode == -9
    assert [h['epoch'] for h in _history(out)] == [1] and not (out / 'model.safetensors').exists()
    _train([*base, '--resume'])
    assert 'resumed from step_00000008' in capsys.readouterr().out
    hist = _history(out)
    assert [h['epoch'] for h in hist] == [1, 2]  # the resume had no epoch left to train, yet wrote epoch 2's line
    assert json.loads((out / 'summary.json').read_text())['test_acc'] == hist[-1]['test_acc']


def _torchrun(cmd, env, timeout: float = 300) -> subprocess.CompletedProcess:
    """A torchrun command in a session of its own: on a timeout (a process waiting forever for the other in a
    collective) the whole group is killed, the workers with it, and the test fails."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f'{" ".join(cmd)} ran past {timeout} s and was killed:\n{err[-3000:]}')
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_torchrun_two_processes_match_one(synth, tmp_path):
    # two steps of a stable objective. Float rounding alone moves the weights by up to ~4e-5 here (measured: the
    # same single-process run with 1 vs 2 threads), hence the tolerance; per-shard batch norm or a mis-sliced
    # batch is off by orders of magnitude more
    args = ['--model', 'resnet20_sce', '--dataset', synth, '--precision', 'fp32', '--epochs', '1',
            '--batch-size', '32', '--train-limit', '64', '--feature-dim', '16', '--robust-every', '0',
            '--no-progress', '--threads', '1', '--lr', '0.01', '--schedule', 'cosine', '--mixup', '1.0']
    _train([*args, '--output', str(tmp_path / 'one')])  # with mixup: each process must blend the pairs one process does
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
                str(REPO / 'timm_mmc' / 'train.py')]
    proc = _torchrun([*torchrun, *args, '--output', str(tmp_path / 'two')], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'x 2 proc' in proc.stdout
    a = load_file(str(tmp_path / 'one' / 'model.safetensors'))
    b = load_file(str(tmp_path / 'two' / 'model.safetensors'))
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k
    (one,), (two,) = _history(tmp_path / 'one'), _history(tmp_path / 'two')
    for key in ('train_loss', 'train_acc', 'grad_norm', 'grad_norm_max'):  # gradients averaged before the norm
        assert two[key] == pytest.approx(one[key], rel=1e-3), key


@pytest.mark.long(70)
def test_torchrun_killed_mid_epoch_resumes_with_every_processs_part_of_the_epoch(synth, tmp_path):
    """A checkpoint holds the main process's epoch sums: they must hold every process's part, or a resumed epoch's
    train loss and accuracy would count the main process's part twice and the other's not at all. A SIGTERM to one
    process only stops both after the same step (the stop flag is summed over them every step), with a checkpoint
    there, and the resume ends where the uncut run does."""
    args = ['--model', 'resnet20_sce', '--dataset', synth, '--precision', 'fp32', '--epochs', '2',
            '--batch-size', '32', '--train-limit', '64', '--feature-dim', '16', '--robust-every', '0',
            '--no-progress', '--threads', '1', '--lr', '0.01', '--checkpoint-every', '1']
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29518',
                str(REPO / 'timm_mmc' / 'train.py')]
    from timm_mmc.runfolder import RunFolder
    # 2 steps an epoch: step 3 is mid-epoch 2
    for name, fault in [('whole', None), ('cut', 'step:4'), ('cut', None), ('term', 'term-step:3@1'), ('term', None)]:
        extra = ['--resume'] if name != 'whole' and fault is None else []
        if name == 'term' and fault:  # no checkpoint but the one the stop writes
            extra = ['--checkpoint-every', '0']
        proc = _torchrun([*torchrun, *args, '--output', str(tmp_path / name), *extra],
                         dict(env, TIMM_MMC_FAULT=fault) if fault else env)
        assert (proc.returncode != 0) if fault else (proc.returncode == 0), proc.stderr[-3000:]
        if fault and fault.startswith('term'):
            # rank 0 got no signal, yet stopped after step 3 as well: no checkpoint is due there with
            # --checkpoint-every 0, and the one the stop writes needs both processes (the main one writes it between
            # two barriers), so a process that went on would leave the other waiting until the timeout
            assert 'stopped by SIGTERM after step 3 (epoch 2, step 1 of 2)' in proc.stderr, proc.stderr[-3000:]
            assert RunFolder(tmp_path / name).checkpoint_step() == 3 and len(_history(tmp_path / name)) == 1
            assert not (tmp_path / name / 'model.safetensors').exists()
        if not fault and name != 'whole':
            assert 'resumed from step_00000003' in proc.stdout
    whole = _history(tmp_path / 'whole')
    for cut in (_history(tmp_path / 'cut'), _history(tmp_path / 'term')):
        for key in ('train_loss', 'train_acc', 'grad_norm', 'grad_norm_max'):
            assert [h[key] for h in cut] == pytest.approx([h[key] for h in whole], rel=1e-6), key


_GLOBAL_BN_SCRIPT = """
import sys, torch, torch.distributed as dist
from timm.layers import BatchNormAct2d
from timm_mmc.train_parts import GlobalBatchNormAct2d, set_global_batch_norm
dist.init_process_group('gloo')
rank = dist.get_rank()
torch.manual_seed(0)
x, w = torch.randn(8, 4, 5, 5), torch.randn(8, 4, 5, 5)  # the same on both processes; each takes its half
bn = torch.nn.Sequential(BatchNormAct2d(4, act_layer=torch.nn.ReLU))
assert set_global_batch_norm(bn) == 1 and type(bn[0]) is GlobalBatchNormAct2d
part = slice(4 * rank, 4 * rank + 4)
xr = x[part].clone().requires_grad_(True)
out = bn(xr)
(out * w[part]).sum().backward()
for p in bn.parameters():
    dist.all_reduce(p.grad)
parts = [torch.empty_like(out) for _ in range(2)]
dist.all_gather(parts, out.detach())
if rank == 0:
    torch.save(dict(out=torch.cat(parts), xgrad=xr.grad, wgrad=bn[0].weight.grad, bgrad=bn[0].bias.grad,
                    mean=bn[0].running_mean, var=bn[0].running_var), sys.argv[1])
dist.destroy_process_group()
"""


def test_global_batch_norm_act_over_two_processes_is_batch_norm_of_the_whole_batch(tmp_path):
    from timm.layers import BatchNormAct2d
    script, out = tmp_path / 'bn.py', tmp_path / 'bn.pt'
    script.write_text(_GLOBAL_BN_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
                           '29519', str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    x, w = torch.randn(8, 4, 5, 5), torch.randn(8, 4, 5, 5)
    bn = BatchNormAct2d(4, act_layer=torch.nn.ReLU)
    x.requires_grad_(True)
    ref = bn(x)
    (ref * w).sum().backward()
    torch.testing.assert_close(got['out'], ref.detach())
    torch.testing.assert_close(got['xgrad'], x.grad[:4])  # gradients flow through the all-reduced statistics
    torch.testing.assert_close(got['wgrad'], bn.weight.grad)
    torch.testing.assert_close(got['bgrad'], bn.bias.grad)
    torch.testing.assert_close(got['mean'], bn.running_mean)
    torch.testing.assert_close(got['var'], bn.running_var)
    assert not got['out'].equal(BatchNormAct2d(4, act_layer=torch.nn.ReLU)(x[:4].detach()).repeat(2, 1, 1, 1))


def test_set_global_batch_norm_swaps_in_and_back_and_names_what_it_cannot():
    from timm.layers import BatchNormAct2d
    from timm_mmc.train_parts import local_batch_norms, set_global_batch_norm
    m = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.BatchNorm1d(3), BatchNormAct2d(3))
    assert set_global_batch_norm(m) == 2 and local_batch_norms(m) == ['1']  # BatchNorm1d has no all-process twin
    assert set_global_batch_norm(m, enable=False) == 2
    assert [type(x) for x in m] == [torch.nn.BatchNorm2d, torch.nn.BatchNorm1d, BatchNormAct2d]


@pytest.mark.parametrize('args,needle', [
    (['--model', 'resnet33_mmc'], 'unknown model'),
    (['--dataset', '/nonexistent/cifar'], 'does not exist'),
    (['--image-column', 'pixels'], 'image column'),
    (['--label-column', 'klass'], 'label column'),
    (['--adv', 'pgd', '--eps', '0'], '--eps must lie in (0, 1] in pixel units (got 0.0)'),
    (['--adv', 'pgd', '--eps', '1.5'], '--eps must lie in (0, 1] in pixel units (got 1.5)'),
    (['--adv', 'pgd', '--adv-steps', '0'], '--adv-steps must be >= 1 (got 0)'),
    (['--loss', 'sce'], 'head'),
    (['--mixup', '-0.2'], "--mixup is the Beta distribution's a, >= 0 (got -0.2)"),
    (['--mixup', '0.2', '--adv', 'fgsm'], 'drop one of them'),
    (['--mixup', '0.2', '--mixup-off-last', '3'], '--mixup-off-last must lie in [0, --epochs] (got 3)'),
])
def test_bad_input_exits_nonzero_and_writes_nothing(args, needle, synth, tmp_path, capsys):
    out = tmp_path / 'run'
    argv = ['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, *args]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse-level validation
        code = e.code
    assert code != 0
    err = capsys.readouterr().err
    assert needle in err.rsplit('error:', 1)[-1], err  # the message, not argparse's usage lines
    assert not out.exists()


def test_dataset_without_label_column(tmp_path, capsys):
    ds = make_image_dataset(tmp_path / 'nolabel', label_column='something', n_train=8, n_test=8)
    # 'something' is a ClassLabel, so it is still detected; drop the ClassLabel type to make it undetectable
    import datasets
    for split in ('train', 'test'):
        f = parquet_split_path(ds, split)
        d = datasets.load_dataset('parquet', data_files=str(f), split='train')
        d = d.cast_column('something', datasets.Value('int64'))
        d.to_parquet(str(f))
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', str(ds), '--output', str(out), *TINY]) == 2
    assert '--label-column' in capsys.readouterr().err and not out.exists()


def test_output_holding_another_run_is_refused(synth, tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), '--epochs', '1', *TINY[2:]]) == 0
    before = sorted(p.name for p in out.iterdir())
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY]) == 2
    assert '--resume' in capsys.readouterr().err
    assert main(['--model', 'resnet20_sce', '--dataset', synth, '--output', str(out), '--resume', *TINY]) == 2
    assert 'model' in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize('arch,classes,with_config', [
    ('resnet20_sce', 7, False),  # linear head: the class count shows in the tensor shapes
    ('resnet32_mmc', 4, False),  # another depth
    ('resnet20_mmc', 7, True),  # MM head: no class-sized tensor, the config.json beside it tells
])
def test_init_from_checkpoint_of_another_model_is_refused(arch, classes, with_config, synth, tmp_path, capsys):
    from safetensors.torch import save_file
    from timm.models import save_for_hf
    other = timm.create_model(arch, num_classes=classes, feature_dim=16)
    ck = tmp_path / 'other' / 'model.safetensors'
    if with_config:
        save_for_hf(other, ck.parent, model_args=other.model_args(), safe_serialization=True)
    else:
        ck.parent.mkdir()
        save_file(other.state_dict(), str(ck))
    out = tmp_path / 'run'
    argv = ['--dataset', synth, '--output', str(out), '--init-from', str(ck), *TINY]
    assert main(['--model', 'resnet20_sce' if arch == 'resnet20_sce' else 'resnet20_mmc', *argv]) == 2
    assert 'does not fit' in capsys.readouterr().err and not out.exists()


def test_a_runs_checkpoints_say_what_model_they_are(synth, tmp_path):
    """checkpoints/ and best/ have no config.json beside their weights; the weights' safetensors metadata says the
    model, so they load with the head they were trained with (not the name's defaults), another head's name is
    refused, and a file that says nothing loads with a warning that names the risk."""
    import warnings

    from safetensors.torch import load_file, save_file
    from timm_mmc.io import HeadFromNameWarning, load_model
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--center-norm', '5',
                 '--checkpoint-every', '2', '--holdout', '16', '--select-best', '--select-on', 'clean']) == 0
    files = [*sorted((out / 'checkpoints').glob('step_*/model.safetensors')), out / 'best' / 'model.safetensors']
    assert len(files) >= 2
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter('error', HeadFromNameWarning)
            model = load_model('resnet20_mmc', checkpoint=f)
        assert model.head_config.center_norm == 5.0  # from the metadata; the name's default is 10
        with pytest.raises(ModelLoadError, match="pass --model resnet20_mmc"):
            load_model('resnet20_mmc_rand', checkpoint=f)
    # --init-from a run's checkpoint (its weights are the model wrapped with its loss): unwrapped and loaded
    from timm_mmc.config import parse_config
    from timm_mmc.train_parts import load_init_weights
    target = timm.create_model('resnet20_mmc', num_classes=4, feature_dim=16, center_norm=5.0)
    load_init_weights(target, parse_config(['--model', 'resnet20_mmc', '--init-from', str(files[0])]), 'resnet20_mmc',
                      {}, 4)
    want = load_file(str(files[0]))
    assert all(torch.equal(v, want[f'model.{k}']) for k, v in target.state_dict().items())
    bare = tmp_path / 'bare' / 'model.safetensors'
    bare.parent.mkdir()
    save_file(load_file(str(out / 'best' / 'model.safetensors')), str(bare))  # the same tensors, no metadata
    with pytest.warns(HeadFromNameWarning, match="built from the name 'resnet20_mmc'"):
        assert load_model('resnet20_mmc', checkpoint=bare, feature_dim=16).head_config.center_norm == 10.0


def test_init_from_the_same_model_loads_its_weights(tmp_path):
    from timm.models import save_for_hf
    from timm_mmc.config import parse_config
    from timm_mmc.train_parts import load_init_weights
    source = timm.create_model('resnet20_mmc', num_classes=7, feature_dim=16)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5)  # away from any fresh initialisation
    save_for_hf(source, tmp_path / 'src', model_args=source.model_args(), safe_serialization=True)
    target = timm.create_model('resnet20_mmc', num_classes=7, feature_dim=16)
    cfg = parse_config(['--model', 'resnet20_mmc', '--init-from', str(tmp_path / 'src' / 'model.safetensors')])
    load_init_weights(target, cfg, 'resnet20_mmc', {}, 7)
    want, got = source.state_dict(), target.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_init_from_a_run_folder_records_which_weights_and_a_resume_needs_them_no_more(synth, tmp_path, capsys):
    """--init-from takes a finished run's folder; args.yaml records the sha256 of the weights it stood for, and a
    resume takes every weight from its checkpoint, so it goes on after the starting weights are gone."""
    from timm_mmc.io import file_sha256
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', *TINY]
    src, out = tmp_path / 'src', tmp_path / 'run'
    assert main([*base, '--output', str(src), '--epochs', '1']) == 0
    sha = file_sha256(src / 'model.safetensors')
    cont = [*base, '--init-from', str(src), '--output', str(out)]
    assert main(cont) == 0
    args = yaml.safe_load((out / 'args.yaml').read_text())
    assert (args['init_from'], args['init_from_sha256']) == (str(src), sha)
    shutil.rmtree(src)
    capsys.readouterr()
    assert main([*cont, '--resume']) == 0  # from its last checkpoint (the end): exports again, without src
    assert 'from the weights in ' + str(src) in capsys.readouterr().out


def test_yaml_config_and_cli_override(synth, tmp_path, capsys):
    from timm_mmc.config import parse_config
    cfg_file = tmp_path / 'c.yaml'
    cfg_file.write_text('model: resnet20_sce\nepochs: 7\nlr: 0.3\n')
    cfg = parse_config(['-c', str(cfg_file), '--lr', '0.1'])
    assert (cfg.model, cfg.epochs, cfg.lr) == ('resnet20_sce', 7, 0.1)
    cfg_file.write_text('modle: resnet20_sce\n')
    with pytest.raises(SystemExit):
        parse_config(['-c', str(cfg_file)])
    cfg_file.write_text('eps: 8/255\n')  # pixel units read as the flag reads them
    assert parse_config(['-c', str(cfg_file)]).eps == 8 / 255 == parse_config(['--eps', '8/255']).eps
    assert parse_config(['-c', 'resnet32_mmc_at']).eps == 8 / 255  # the recipes write it so
    cfg_file.write_text('eps: 8/x\n')
    with pytest.raises(SystemExit):
        parse_config(['-c', str(cfg_file)])
    assert "eps in" in capsys.readouterr().err


class _Payload:
    """Unpickling this creates ``path``: proof that a pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_resume_never_unpickles_what_is_planted_in_the_run_folder(synth, tmp_path):
    import pickle
    out = tmp_path / 'run'
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), '--precision', 'fp32',
            '--ema-decay', '0.9', *TINY]
    assert main(base) == 0
    marker = tmp_path / 'payload_ran'
    ckpt = out / 'checkpoints' / (out / 'checkpoints' / 'latest').read_text()
    # every name accelerate or torch would look for, plus ours replaced by pickles
    for name in ('random_states_0.pkl', 'optimizer.bin', 'scheduler.bin', 'custom_checkpoint_0.pkl',
                 'pytorch_model.bin'):
        (ckpt / name).write_bytes(pickle.dumps(_Payload(marker)))
    assert main([*base, '--resume']) == 0  # the run is complete: resume re-exports without training
    assert not marker.exists()
    for c in (out / 'checkpoints').glob('step_*'):  # ours, replaced by pickles: refused, never unpickled
        (c / 'optimizer.safetensors').write_bytes(pickle.dumps(_Payload(marker)))
    assert main([*base, '--resume']) == 2
    assert not marker.exists()


def test_resume_refuses_changed_options_records_allowed_ones_and_keeps_args(synth, tmp_path, capsys):
    out = tmp_path / 'run'
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY]
    assert main(base) == 0
    args_before = (out / 'args.yaml').read_text()
    other = 'bf16' if yaml.safe_load(args_before)['precision'] == 'fp32' else 'fp32'  # what auto did not choose here
    for flag, value in (('--lr', '0.5'), ('--epochs', '3'), ('--cutout', '4'), ('--precision', other)):
        assert main([*base, '--resume', flag, value]) == 2
        err = capsys.readouterr().err
        assert flag.lstrip('-').replace('-', '_') in err and '--overwrite' in err
    # options left out come from the run itself; a changed --threads or a change of what is measured (--test-every,
    # --robust-every) is allowed and recorded
    assert main(['--output', str(out), '--resume', '--threads', '2', '--test-every', '3', '--robust-every', '2',
                 '--no-progress']) == 0
    assert (out / 'args.yaml').read_text() == args_before
    rec = json.loads((out / 'resumes.jsonl').read_text().splitlines()[-1])
    assert rec['changed'] == {'threads': {'was': 1, 'now': 2}, 'test_every': {'was': 1, 'now': 3},
                              'robust_every': {'was': 0, 'now': 2}} and rec['resumed_at_step'] == 8


@pytest.mark.parametrize('native', [False, True])
def test_precision_auto_picks_by_the_machine_records_it_and_resumes_with_it(native, synth, tmp_path, capsys,
                                                                          monkeypatch):
    """auto trains in bf16 only where it is native; args.yaml records the choice, and a resume that says auto again
    (as a recipe does) keeps the run's choice on any machine, where an explicit other precision is refused."""
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: native)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    out = tmp_path / 'run'
    chosen, other = ('bf16', 'fp32') if native else ('fp32', 'bf16')
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--precision',
                 'auto']) == 0
    assert f'--precision auto: {chosen}' in capsys.readouterr().out
    assert yaml.safe_load((out / 'args.yaml').read_text())['precision'] == chosen
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: not native)  # "another machine"
    assert main(['--output', str(out), '--resume', '--precision', 'auto', '--no-progress']) == 0
    said = capsys.readouterr().out
    assert f'batch 32, {chosen};' in said and '--precision auto:' not in said  # it ran in the run's precision
    assert yaml.safe_load((out / 'args.yaml').read_text())['precision'] == chosen
    assert json.loads((out / 'resumes.jsonl').read_text().splitlines()[-1])['changed'] == {}
    assert main(['--output', str(out), '--resume', '--precision', other, '--no-progress']) == 2
    assert 'precision' in capsys.readouterr().err


def test_explicit_bf16_without_native_support_says_so(monkeypatch):
    from timm_mmc.machine import resolve_precision
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    cpu = torch.device('cpu')
    precision, note = resolve_precision('bf16', cpu)
    assert precision == 'bf16' and 'emulated' in note and '--precision auto or fp32' in note
    assert 'only a new run (--overwrite' in resolve_precision('bf16', cpu, resumed=True)[1]  # a resume keeps bf16
    assert resolve_precision('fp32', cpu) == ('fp32', None)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: True)
    assert resolve_precision('bf16', cpu) == ('bf16', None) and resolve_precision('auto', cpu)[0] == 'bf16'


@pytest.mark.parametrize('flags, native', [({'avx2', 'avx512f'}, False), ({'avx512f', 'avx512_bf16'}, True),
                                           ({'amx_bf16', 'amx_tile'}, True), (set(), False)])
def test_without_torchs_private_probes_the_cpu_flags_decide(flags, native, monkeypatch):
    """torch.cpu's bf16 probes are private: where a torch version lacks them, /proc/cpuinfo's flags decide."""
    from timm_mmc import machine
    monkeypatch.delattr(torch.cpu, '_is_avx512_bf16_supported', raising=False)
    monkeypatch.delattr(torch.cpu, '_is_amx_tile_supported', raising=False)
    monkeypatch.setattr(machine, 'cpu_flags', lambda: flags)
    assert machine.native_bf16(torch.device('cpu')) is native
    assert machine.resolve_precision('auto', torch.device('cpu'))[0] == ('bf16' if native else 'fp32')


def test_cpu_flags_reads_this_machines_processor():
    from timm_mmc.machine import cpu_flags
    flags = cpu_flags()
    if Path('/proc/cpuinfo').exists() and platform.machine() in ('x86_64', 'AMD64'):
        assert 'sse2' in flags  # every x86-64 processor has it
    assert all(isinstance(flag, str) and flag == flag.strip() and flag for flag in flags)


def test_cpu_flags_of_an_x86_an_arm_and_a_missing_cpuinfo(tmp_path):
    """On any machine: the x86 ``flags`` line is read whole, an ARM cpuinfo (``Features``) or none gives no flags."""
    from timm_mmc import machine
    x86, arm = tmp_path / 'x86', tmp_path / 'arm'
    x86.write_text('processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n'
                   'processor\t: 1\nflags\t\t: fpu sse2\n')
    arm.write_text('processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n')
    assert machine.cpu_flags(str(x86)) == {'fpu', 'sse2', 'avx2', 'avx512f', 'avx512_bf16'}
    assert machine.cpu_flags(str(arm)) == set() and machine.cpu_flags(str(tmp_path / 'none')) == set()


def test_resume_of_nothing_is_refused(synth, tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), '--resume', *TINY]) == 2
    assert 'no complete checkpoint' in capsys.readouterr().err and not out.exists()


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(synth, tmp_path, capsys):
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', '--checkpoint-every', '3',
            '--keep-checkpoints', '3', *TINY]
    _train([*base, '--output', str(tmp_path / 'ref')])
    killed = _run([*base, '--output', str(tmp_path / 'cut')], {'TIMM_MMC_FAULT': 'step:6'}, check=False)
    assert killed.returncode == -9
    ckpts = tmp_path / 'cut' / 'checkpoints'
    assert (ckpts / 'latest').read_text() == 'step_00000004'
    weights = ckpts / 'step_00000004' / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    capsys.readouterr()
    _train([*base, '--output', str(tmp_path / 'cut'), '--resume'])
    resumed = capsys.readouterr().out
    assert 'step_00000004' in resumed and 'falling back' in resumed
    assert 'resumed from step_00000003' in resumed
    a = load_file(str(tmp_path / 'ref' / 'model.safetensors'))
    b = load_file(str(tmp_path / 'cut' / 'model.safetensors'))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_epoch_records_its_gradient_norm_before_clipping(synth, tmp_path, capsys):
    """metrics.jsonl and the epoch line carry the mean and largest gradient norm of the epoch's steps; with --grad-clip
    they are the norms before clipping (the evidence for choosing a clip value), and clipping changes the weights."""
    runs = {}
    for name, extra in [('free', []), ('clipped', ['--grad-clip', '1e-3'])]:
        out = tmp_path / name
        assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), '--precision', 'fp32',
                     *TINY, *extra]) == 0
        runs[name] = _history(out)
        assert 'grad norm ' in capsys.readouterr().out
    for free, clipped in zip(runs['free'], runs['clipped']):
        assert 0 < free['grad_norm'] <= free['grad_norm_max'] < float('inf')
        assert clipped['grad_norm'] > 1e-2  # the norm before clipping, not the clipped 1e-3
        assert clipped['train_loss'] != free['train_loss']  # the clip acted


def test_a_backend_that_returns_no_gradient_norm_trains_and_records_none(synth, tmp_path, monkeypatch, capsys):
    """DeepSpeed clips inside its own step and its clip_grad_norm_ returns None: the run goes on, exports, and its
    records carry no gradient norm rather than a made-up one (DeepSpeed is not installed here, so accelerate's
    return value is what stands in for it)."""
    import accelerate
    monkeypatch.setattr(accelerate.Accelerator, 'clip_grad_norm_', lambda self, params, max_norm: None)
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), '--precision', 'fp32',
                 *TINY]) == 0
    history = _history(out)
    assert len(history) == 2 and all('grad_norm' not in h and 'grad_norm_max' not in h for h in history)
    assert all(h['train_loss'] > 0 for h in history) and (out / 'model.safetensors').exists()
    assert 'grad norm' not in capsys.readouterr().out


@pytest.mark.parametrize('cut', ['mid-epoch', 'epoch-end'])
def test_a_resume_from_a_run_before_grad_norms_records_them_for_every_whole_epoch(cut, synth, tmp_path):
    """A checkpoint written before gradient norms were kept (its epoch sums lack them) resumes: an epoch it cut
    records no norm rather than one over part of its steps; every epoch run whole after it records them."""
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', '--checkpoint-every', '5', *TINY,
            '--epochs', '3', '--output', str(tmp_path / 'run')]
    killed = _run(base, {'TIMM_MMC_FAULT': 'step:7'}, check=False)  # 4 steps an epoch: step 5 is mid-epoch 2
    assert killed.returncode == -9
    ckpts = tmp_path / 'run' / 'checkpoints'
    if cut == 'epoch-end':  # the newest complete checkpoint is then the end of epoch 1 (step 4)
        shutil.rmtree(ckpts / 'step_00000005')
    state_file = ckpts / ('step_00000005' if cut == 'mid-epoch' else 'step_00000004') / 'state.json'
    state = json.loads(state_file.read_text())
    for key in ('steps', 'grad_norm', 'grad_norm_max'):
        del state['trainer']['sums'][key]
    state_file.write_text(json.dumps(state))
    _train([*base, '--resume'])
    history = _history(tmp_path / 'run')
    assert ['grad_norm' in h and 'grad_norm_max' in h for h in history] == [True, cut == 'epoch-end', True]


def test_non_finite_loss_stops_the_run_without_an_export(synth, tmp_path, capsys):
    out = tmp_path / 'run'
    # it failed once training had begun, not on its input: status 1 (timm_mmc.ExitStatus), as a failed check
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--lr', '1e30']) == 1
    err = capsys.readouterr().err
    assert 'non-finite' in err and '--lr' in err
    assert not (out / 'model.safetensors').exists() and not (out / 'summary.json').exists()
    # with mid-epoch checkpoints: none holds weights trained on the non-finite loss (a --resume would continue them)
    out = tmp_path / 'run_ckpt'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--lr', '1e30',
                 '--checkpoint-every', '2']) == 1
    assert 'before its checkpoint' in capsys.readouterr().err
    for ckpt in (out / 'checkpoints').glob('step_*'):
        assert all(torch.isfinite(v).all() for v in load_file(str(ckpt / 'model.safetensors')).values()), ckpt


def test_with_held_out_images_the_test_split_does_not_choose_the_exported_weights(synth, tmp_path):
    """--holdout without --select-best: the weight average or the last weights are exported by their clean accuracy
    on the held-out images at the end, and summary.json and the card say so."""
    from timm_mmc.runfolder import RunSummary
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--ema-decay', '0.5',
                 '--holdout', '16']) == 0
    last = _history(out)[-1]
    summary = RunSummary.read(out / 'summary.json')
    assert summary.weights_chosen_on == 'heldout'
    assert summary.weights == ('ema' if last['heldout_clean_acc_ema'] > last['heldout_clean_acc'] else 'last')
    assert summary.test_acc == (last['test_acc_ema'] if summary.weights == 'ema' else last['test_acc'])


def test_export_weights_fixed_before_training_exports_them_whatever_the_test_split_says(synth, tmp_path, capsys):
    """--export-weights ema / last: the same training exports the weight average or the last weights as told, the
    test split chooses nothing (weights_chosen_on 'recipe'), and the two files differ."""
    from timm_mmc.runfolder import RunSummary
    base = ['--model', 'resnet20_mmc', '--dataset', synth, *TINY, '--ema-decay', '0.5']
    weights = {}
    for which in ('ema', 'last'):
        out = tmp_path / which
        assert main([*base, '--output', str(out), '--export-weights', which]) == 0
        last, summary = _history(out)[-1], RunSummary.read(out / 'summary.json')
        assert (summary.weights, summary.weights_chosen_on) == (which, 'recipe')
        assert summary.test_acc == last['test_acc_ema' if which == 'ema' else 'test_acc']
        weights[which] = load_file(str(out / 'model.safetensors'))
    assert any(not torch.equal(weights['ema'][k], weights['last'][k]) for k in weights['ema'])


def test_the_recipes_fixed_export_leaves_select_best_and_ablations_without_a_weight_average_a_clear_way(capsys):
    """The standard recipes set export_weights: ema. --select-best still runs with them (it chooses instead); an
    ablation with --ema-decay 0 is refused, naming the flag that fixes it, and runs with it."""
    from timm_mmc.config import parse_config
    cfg = parse_config(['-c', 'resnet32_mmlda', '--holdout', '1000', '--select-best', '--select-on', 'clean'])
    assert cfg.export_weights == 'ema' and cfg.select_best
    with pytest.raises(SystemExit) as stop:
        parse_config(['-c', 'resnet32_mmc', '--ema-decay', '0'])
    assert stop.value.code == 2 and 'add --export-weights last' in capsys.readouterr().err
    assert parse_config(['-c', 'resnet32_mmc', '--ema-decay', '0', '--export-weights', 'last']).ema_decay == 0


def test_a_run_from_before_export_weights_resumes_with_the_rule_it_ran_with(synth, tmp_path, capsys):
    """args.yaml written before the option existed has no export_weights: the run ran with the old rule (auto), so a
    resume keeps it, and a resume that asks for another is refused as any changed option is (a recipe's -c too)."""
    from timm_mmc.runfolder import RunSummary
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--epochs', '1',
                 '--ema-decay', '0.5']) == 0
    args = yaml.safe_load((out / 'args.yaml').read_text())
    del args['export_weights']
    (out / 'args.yaml').write_text(yaml.safe_dump({**args, 'epochs': 2}))
    capsys.readouterr()
    assert main(['--output', str(out), '--resume', '--no-progress', '--export-weights', 'ema']) == 2
    assert "export_weights='auto' (asked: 'ema')" in capsys.readouterr().err
    assert main(['--output', str(out), '--resume', '--no-progress']) == 0
    assert RunSummary.read(out / 'summary.json').weights_chosen_on == 'test'


def test_ema_is_evaluated_every_epoch_exported_when_better_and_resumed_exactly(synth, tmp_path, capsys):
    base = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', '--checkpoint-every', '3',
            '--ema-decay', '0.5', '--cutout', '8', *TINY]
    _train([*base, '--output', str(tmp_path / 'ref')])
    hist = _history(tmp_path / 'ref')
    assert all(h['test_acc_ema'] is not None for h in hist)
    summary = json.loads((tmp_path / 'ref' / 'summary.json').read_text())
    assert summary['weights'] == ('ema' if hist[-1]['test_acc_ema'] > hist[-1]['test_acc'] else 'last')
    assert summary['weights_chosen_on'] == 'test'  # no held-out images: the test split chose, and the card says so
    assert summary['test_acc'] == max(hist[-1]['test_acc_ema'], hist[-1]['test_acc'])
    killed = _run([*base, '--output', str(tmp_path / 'cut')], {'TIMM_MMC_FAULT': 'step:6'}, check=False)
    assert killed.returncode == -9
    capsys.readouterr()
    _train([*base, '--output', str(tmp_path / 'cut'), '--resume'])
    out = capsys.readouterr().out
    assert 'claim: resnet20_mmc, 2 epochs' in out and ' CPU-min) on ' in out and 'paused' not in out
    a = load_file(str(tmp_path / 'ref' / 'model.safetensors'))
    b = load_file(str(tmp_path / 'cut' / 'model.safetensors'))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _history(tmp_path / 'cut')[-1]['test_acc_ema'] == hist[-1]['test_acc_ema']


def test_precision_flag_is_the_one_source_of_truth(synth, tmp_path, monkeypatch, capsys):
    """accelerate's own mixed precision (as `accelerate launch --mixed_precision bf16` sets it) never overrides
    --precision: the run says so, autocasts nothing, and args.yaml records what ran."""
    import yaml

    from timm_mmc.config import parse_config
    from timm_mmc.train import Trainer
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'bf16')
    out = tmp_path / 'run'
    cfg = parse_config(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY,
                        '--precision', 'fp32', '--epochs', '1'])
    trainer = Trainer(cfg)
    assert trainer.accelerator.mixed_precision == 'no'
    assert "accelerate asked for mixed precision 'bf16'" in capsys.readouterr().out
    x = torch.rand(4, 3, 32, 32)
    with trainer.autocast():
        z = trainer.model.forward_head(trainer.model.forward_features(x), pre_logits=True)
    assert z.dtype == torch.float32
    trainer.fit()
    assert yaml.safe_load((out / 'args.yaml').read_text())['precision'] == 'fp32'


@pytest.mark.parametrize('name', __import__('timm_mmc.config', fromlist=['recipe_names']).recipe_names())
def test_every_shipped_recipe_is_a_valid_config(name):
    """``-c NAME`` for every recipe in the package: types, choices and cross-checks (e.g. --select-best) hold."""
    from timm_mmc.config import parse_config
    cfg = parse_config(['-c', name])
    assert cfg.model.startswith('resnet') and cfg.epochs >= 1
    if cfg.select_best:
        assert cfg.holdout > 0 and cfg.adv != 'none'


def test_resume_on_changed_data_is_refused(tmp_path, capsys):
    """args.yaml records the sha256 of the pixels and labels; a resume that would see other data stops first."""
    data = tmp_path / 'ds'
    make_image_dataset(data, n_train=64, n_test=32, seed=0)
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', str(data), '--output', str(out), *TINY]) == 0
    args = yaml.safe_load((out / 'args.yaml').read_text())
    assert ' sha256 ' in args['train_source'] and ' sha256 ' in args['test_source']
    assert main(['--output', str(out), '--resume']) == 0  # same data: resuming a finished run is fine
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    make_image_dataset(data, n_train=64, n_test=32, seed=1)  # same folder, other pixels
    assert main(['--output', str(out), '--resume']) == 2
    err = capsys.readouterr().err
    assert 'the data changed' in err and 'train split' in err and '--overwrite' in err
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == before  # nothing written


def test_resume_compares_what_the_data_is_not_how_its_source_was_spelled(tmp_path, capsys):
    """An .npz data set rewritten with the same pixels and labels but another provenance string (a lent machine that
    decoded the parquet from a path spelled differently) resumes; one changed label is refused."""
    from timm_mmc.data import load_split
    from timm_mmc.npz import write_npz_split
    parquet = make_image_dataset(tmp_path / 'pq', n_train=64, n_test=32, seed=0)
    data = tmp_path / 'npz'

    def write(origin: str, flip_label: bool = False) -> None:
        for split in ('train', 'test'):
            s = load_split(str(parquet), split, cache_dir=tmp_path / 'cache')
            labels = s.labels.numpy().copy()
            labels[0] = (labels[0] + 1) % 4 if flip_label and split == 'train' else labels[0]
            write_npz_split(data / f'{split}.npz', s.images.permute(0, 2, 3, 1).numpy(), labels, s.class_names,
                            split, f'{origin}:{split}')
    write('pq')
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', str(data), '--output', str(out), *TINY]) == 0
    args = yaml.safe_load((out / 'args.yaml').read_text())
    assert len(args['train_digest']) == 16 and 'from pq:train' in args['train_source']
    write('./pq')  # the same content, another provenance
    assert main(['--output', str(out), '--resume']) == 0
    write('./pq', flip_label=True)
    capsys.readouterr()
    assert main(['--output', str(out), '--resume']) == 2
    assert 'the data changed' in capsys.readouterr().err


def test_mixup_blends_every_training_batch_with_its_own_seeded_weight(synth, tmp_path, monkeypatch):
    import timm_mmc.train as train_mod
    blend = train_mod.mixup_batch

    def spy_on(record):
        def spy(x, y, lam):
            record.append(float(lam))
            return blend(x, y, lam)
        monkeypatch.setattr(train_mod, 'mixup_batch', spy)
        return record

    args = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', '--epochs', '1',
            '--batch-size', '32', '--train-limit', '64', '--feature-dim', '16', '--robust-every', '0',
            '--no-progress', '--threads', '1']
    seen = spy_on([])
    assert main([*args, '--output', str(tmp_path / 'plain')]) == 0
    assert seen == []  # off by default
    assert main([*args, '--mixup', '0.5', '--output', str(tmp_path / 'mixed')]) == 0
    assert len(seen) == 2 and all(0 < lam < 1 for lam in seen) and seen[0] != seen[1]  # one draw a step
    again = spy_on([])
    assert main([*args, '--mixup', '0.5', '--output', str(tmp_path / 'again')]) == 0
    assert again == seen  # drawn from the seed, as a resume needs
    (plain,), (mixed,) = _history(tmp_path / 'plain'), _history(tmp_path / 'mixed')
    assert mixed['train_loss'] != plain['train_loss']
    assert yaml.safe_load((tmp_path / 'mixed' / 'args.yaml').read_text())['mixup'] == 0.5
    late = spy_on([])  # the last epoch of two on whole images: only the first epoch's two steps are blended
    assert main([*args, '--epochs', '2', '--mixup', '0.5', '--mixup-off-last', '1', '--output',
                 str(tmp_path / 'late')]) == 0
    assert late == seen


@pytest.mark.parametrize('adv,extra,check', [
    ('fgsm', [], dict(eps=4 / 255)),
    ('pgd', ['--adv-steps', '3', '--adv-step', '0.5/255'], dict(eps=4 / 255, alpha=0.5 / 255, steps=3)),
    ('nfgsm', ['--adv-noise', '1.5'], dict(eps=4 / 255, noise=1.5)),
])
def test_adversarial_training_attacks_every_batch_with_the_configured_attack(adv, extra, check, synth, tmp_path,
                                                                             monkeypatch):
    """--adv replaces the batch by the configured attack's examples at every step (a run that silently trained on
    clean images would pass every loss-goes-down test)."""
    import timm_mmc.train as train_mod
    make = train_mod.training_attack
    calls = []

    def spy(cfg, *a, **k):
        attack = make(cfg, *a, **k)
        perturb = attack.perturb

        def recorded(x, y, *rest):
            x_adv = perturb(x, y, *rest)
            calls.append((len(x), float((x_adv - x).abs().max())))
            return x_adv
        attack.perturb = recorded
        for name, want in check.items():
            assert getattr(attack, name) == pytest.approx(want), name
        return attack
    monkeypatch.setattr(train_mod, 'training_attack', spy)
    args = ['--model', 'resnet20_mmc', '--dataset', synth, '--precision', 'fp32', '--epochs', '1', '--batch-size',
            '32', '--train-limit', '64', '--feature-dim', '16', '--robust-every', '0', '--no-progress', '--threads',
            '1', '--adv', adv, '--eps', '4/255', '--adv-ratio', '0.5', *extra, '--output', str(tmp_path / adv)]
    assert main(args) == 0
    assert [n for n, _ in calls] == [16, 16]  # two steps, half of each batch
    assert all(d > 0 for _, d in calls)  # the images were moved


def test_weight_decay_falls_on_weights_only_never_on_batch_norm_biases_or_centers():
    """The optimizer decays conv and linear weights, and leaves batch norm, biases and a loss's class centers (center
    loss, L-GM means) undecayed: decaying the centers would pull them to 0 and shrink every margin."""
    from timm_mmc.config import TrainConfig
    from timm_mmc.losses import build_loss
    from timm_mmc.train_parts import ModelWithLoss, build_optimizer
    for model_name, loss, centers in (('resnet20_sce', 'center', 'loss_fn.centers'),
                                      ('resnet20_lgm', 'lgm', 'model.head.classifier.means')):
        model = timm.create_model(model_name, num_classes=10)
        net = ModelWithLoss(model, build_loss(loss, 10, model.head_hidden_size, head=model.head_config.head))
        opt = build_optimizer(net, TrainConfig(weight_decay=5e-4, momentum=0.9, nesterov=True))
        names = {id(p): n for n, p in net.named_parameters()}
        decayed, kept = ({names[id(p)] for p in g['params']} for g in opt.param_groups)
        assert [g['weight_decay'] for g in opt.param_groups] == [5e-4, 0.0]
        assert decayed | kept == set(names.values()) and not decayed & kept
        norms = {f'{m}.{n}' for m, mod in net.named_modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
                 for n, _ in mod.named_parameters(recurse=False)}
        convs = {f'{m}.weight' for m, mod in net.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))}
        assert norms and convs and centers in kept
        assert decayed == convs and kept == norms | {n for n in names.values() if n.endswith('bias')} | {centers}
        assert opt.param_groups[0]['nesterov']


def test_lr_schedules_warm_up_then_fall_to_zero():
    """onecycle and cosine rise linearly over ``warmup_frac`` of the steps, reach the peak, and fall to 0 at the end,
    cosine above the line (half the peak at the decay's middle); step multiplies by gamma at each milestone."""
    import dataclasses
    import math

    from timm_mmc.config import TrainConfig
    from timm_mmc.train_parts import lr_lambda
    spe, epochs = 10, 10
    total = spe * epochs
    for warmup_frac in (0.2, 0.0):
        warm = max(1, int(warmup_frac * total))
        f = {s: lr_lambda(dataclasses.replace(TrainConfig(), schedule=s, epochs=epochs, warmup_frac=warmup_frac),
                          spe) for s in ('onecycle', 'cosine')}
        for g in f.values():
            assert [g(k) for k in range(warm)] == pytest.approx([(k + 1) / warm for k in range(warm)])
            decay = [g(k) for k in range(warm - 1, total + 5)]
            assert decay[0] == 1.0 and all(a >= b for a, b in zip(decay, decay[1:])) and decay[-1] == 0.0
            assert 0 < g(total - 1) < 0.02 and g(total) == 0.0
        mid, quarter = warm + (total - warm) // 2, warm + (total - warm) // 4  # within a step of the decay's points
        assert f['cosine'](mid) == pytest.approx(0.5, abs=0.02) and f['onecycle'](mid) == pytest.approx(0.5, abs=0.02)
        assert f['cosine'](quarter) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=0.02)
        assert f['cosine'](quarter) > f['onecycle'](quarter)
    for warmup_frac in (0.25, 0.1, 0.0):  # onecycle is the expression the release runs trained with, to the last bit
        g = lr_lambda(dataclasses.replace(TrainConfig(), schedule='onecycle', epochs=75, warmup_frac=warmup_frac), 390)
        total = 75 * 390
        warm = max(1, int(warmup_frac * total))
        assert all(g(k) == ((k + 1) / warm if k < warm else max(0.0, (total - k) / max(1, total - warm)))
                   for k in range(total + 2))
    step = lr_lambda(dataclasses.replace(TrainConfig(), schedule='step', epochs=epochs, milestones=[3, 6], gamma=0.1),
                     spe)
    assert [step(e * spe) for e in (0, 2, 3, 5, 6, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_a_run_that_recorded_options_it_ignores_still_resumes_though_a_new_run_with_them_is_refused(synth, tmp_path,
                                                                                                     capsys):
    """Older code let --mixup-off-last without --mixup, or --lambda-c with the MMC loss, into args.yaml; such a run
    ran without them, so its resume goes on, while a new command with them is refused."""
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--epochs', '1']) == 0
    args = yaml.safe_load((out / 'args.yaml').read_text())
    (out / 'args.yaml').write_text(yaml.safe_dump({**args, 'epochs': 2, 'mixup_off_last': 1, 'lambda_c': 0.5}))
    assert main(['--output', str(out), '--resume', '--no-progress']) == 0
    assert [r['epoch'] for r in _history(out)] == [1, 2]
    new = ['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(tmp_path / 'new'), *TINY]
    with pytest.raises(SystemExit) as stop:  # refused by the argument parser
        main([*new, '--mixup-off-last', '1'])
    assert stop.value.code == 2 and 'acts only with --mixup' in capsys.readouterr().err
    assert main([*new, '--lambda-c', '0.5']) == 2  # refused once the model says which loss it trains with
    assert 'lambda-c is for the center loss only' in capsys.readouterr().err and not (tmp_path / 'new').exists()


def test_a_resume_may_repeat_an_option_that_acts_only_with_one_it_leaves_to_the_run(synth, tmp_path, capsys):
    """"--resume --gamma 0.5" on a run started with --schedule step: the command alone lacks the schedule, the run has
    it (scripts/device_train.py resumes with the lease's --extra repeated and no recipe)."""
    out = tmp_path / 'run'
    assert main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(out), *TINY, '--schedule', 'step',
                 '--gamma', '0.5']) == 0
    assert main(['--output', str(out), '--resume', '--gamma', '0.5', '--no-progress']) == 0
    assert yaml.safe_load((out / 'args.yaml').read_text())['schedule'] == 'step'
    with pytest.raises(SystemExit) as stop:  # a new run without the schedule is still refused
        main(['--model', 'resnet20_mmc', '--dataset', synth, '--output', str(tmp_path / 'new'), *TINY, '--gamma',
              '0.5'])
    assert stop.value.code == 2 and 'acts only with --schedule step' in capsys.readouterr().err
