"""scripts/device_train.py, rehearsed on the CPU with a tiny budget (as before every lent-GPU run)."""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from _shared import load_script
from timm_mmc.config import resolve_recipe
from timm_mmc.data import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'device_train.py'


TINY = '--model resnet20_mmc --feature-dim 16 --batch-size 16 --holdout 16 --lr 0.002 --threads 1'


def _script(*args, timeout=300, **env_extra):
    """The script as a lent machine runs it: a process of its own, through its ``__main__`` entry."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _in_process(monkeypatch, capsys, *args, **env_extra) -> SimpleNamespace:
    """The script's ``main`` in this process (its training runs are still processes of their own, with ``env_extra``
    in their environment): the script's own process would spend 5-10 s on imports. Returns what ``_script`` does."""
    capsys.readouterr()
    with monkeypatch.context() as m:
        for k, v in dict(PYTHONPATH=str(ROOT), **env_extra).items():  # as _script's process gives them
            m.setenv(k, v)
        try:
            code = _module().main(list(args))
        except SystemExit as e:  # a refusal through argparse's error
            code = e.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


@pytest.mark.long(70)
def test_device_script_probes_fits_the_epochs_to_the_budget_and_packs_the_run(tmp_path, monkeypatch, capsys):
    data = write_synthetic_dataset(tmp_path / 'ds', n_train=96, n_test=32)
    out = tmp_path / 'out'
    proc = _script('-c', 'gpu/resnet32_mmc_at', '--data', str(data), '--out', str(out), '--work', str(tmp_path / 'w'),
                   '--budget-s', '240', '--probe-images', '64', '--max-epochs', '2',
                   '--extra', TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / 'device_train.json').read_text())
    probe = report['probe']['resnet32_mmc_at']
    assert probe['img_per_s'] > 0 and probe['epoch_s'] > probe['eval_s'] >= 0
    assert report['epochs'] == 2  # 240 s fit far more than --max-epochs of this tiny run
    assert report['runs']['resnet32_mmc_at'] == dict(report['runs']['resnet32_mmc_at'], rc=0, stopped=False)
    with tarfile.open(out / 'resnet32_mmc_at.tar.gz') as tar:
        names = set(tar.getnames())
    assert {'resnet32_mmc_at/model.safetensors', 'resnet32_mmc_at/summary.json', 'resnet32_mmc_at/metrics.jsonl',
            'resnet32_mmc_at/best/model.safetensors'} <= names
    log = (out / 'resnet32_mmc_at.log').read_text()
    assert '--epochs 2' in log.splitlines()[0] and 'claim: resnet20_mmc, 2 epochs' in log
    assert (out / 'probe_resnet32_mmc_at.log').is_file()
    # a retry with the same --work (a lent machine still up) starts afresh; a --train-limit in --extra bounds the probe
    proc = _in_process(monkeypatch, capsys, '-c', 'gpu/resnet32_mmc_at', '--data', str(data), '--out',
                       str(tmp_path / 'out2'), '--work', str(tmp_path / 'w'), '--budget-s', '240', '--probe-images',
                       '64', '--max-epochs', '1', '--extra', f'{TINY} --train-limit 48')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / 'out2' / 'probe_resnet32_mmc_at.log').read_text().splitlines()[0].endswith('--train-limit 48')
    assert 'claim: resnet20_mmc, 1 epochs' in (tmp_path / 'out2' / 'resnet32_mmc_at.log').read_text()


def _refused(capsys, *argv) -> str:
    """Run the script's main in-process (the refusals come before any training, so no subprocess is needed); its
    exit status must be 2; returns what it printed to stderr."""
    try:
        code = _module().main(list(argv))
    except SystemExit as e:  # argparse's error
        code = e.code
    assert code == 2
    return capsys.readouterr().err


def test_device_script_refuses_bad_recipes_and_data_before_any_work(tmp_path, capsys):
    out = tmp_path / 'out'
    proc = _script('-c', 'gpu/no_such_recipe', '--data', str(tmp_path), '--out', str(out), '--budget-s', '60')
    assert proc.returncode == 2 and 'neither a file nor a recipe name' in proc.stderr  # once through the real entry
    assert 'share a name' in _refused(capsys, '-c', 'gpu/resnet32_mmc_at', '-c', 'resnet32_mmc_at', '--data',
                                      str(tmp_path), '--out', str(out), '--budget-s', '60')
    assert 'Hub parquet layout' in _refused(capsys, '-c', 'gpu/resnet32_mmc_at', '--data', str(tmp_path / 'none'),
                                            '--out', str(out), '--work', str(tmp_path / 'w'), '--budget-s', '60')
    assert not (tmp_path / 'w' / 'data').exists()
    fresh = tmp_path / 'out2'
    for flags, text in [(('--budget-s', '0'), '--budget-s must be a number of seconds > 0'),
                        (('--budget-s', 'nan'), '--budget-s must be a number of seconds > 0'),
                        (('--budget-s', '60', '--probe-images', '0'), '--probe-images must be >= 1 (got 0)'),
                        (('--budget-s', '60', '--max-epochs', '0'), '--max-epochs must be >= 1 (got 0)'),
                        # the recipe holds out 1000 images and trains at batch 512
                        (('--budget-s', '60', '--probe-images', '600'), 'pass --probe-images 1512 or more')]:
        assert text in _refused(capsys, '-c', 'gpu/resnet32_mmc_at', '--data', str(tmp_path), '--out', str(fresh),
                                *flags)
    assert not fresh.exists()  # refused before anything is written


def _last_checkpoint(run: Path) -> dict:
    """Every tensor of a run folder's newest checkpoint (model, weight average, optimizer), by file and name."""
    ckpt = sorted((run / 'checkpoints').glob('step_*'))[-1]
    return {f.name: load_file(str(f)) for f in sorted(ckpt.glob('*.safetensors'))}


@pytest.mark.long(40)
def test_a_run_over_two_leases_continues_bit_exactly_from_the_packed_folder(tmp_path, monkeypatch, capsys):
    """--epochs fixes the length (no probe); a run cut on one lease is packed, and --resume-from on the next lease
    (the work folder gone, as on a fresh machine) unpacks it and continues it with --resume: every tensor of its
    last checkpoint and every epoch's training loss equal those of a run never cut."""
    data = write_synthetic_dataset(tmp_path / 'ds', n_train=64, n_test=16)
    common = ['-c', 'gpu/resnet32_mmc_at_pgd', '--data', str(data), '--budget-s', '240', '--extra',
              TINY + ' --adv-steps 2']
    # the training run is killed in epoch 2 (3 steps an epoch), after epoch 1's checkpoint
    cut = _in_process(monkeypatch, capsys, *common, '--epochs', '2', '--out', str(tmp_path / 'lease1'), '--work',
                      str(tmp_path / 'w1'), TIMM_MMC_FAULT='step:4')
    assert cut.returncode == 1 and 'failed: see' in cut.stdout, cut.stdout + cut.stderr
    first = json.loads((tmp_path / 'lease1' / 'device_train.json').read_text())
    assert 'probe' not in first and first['epochs'] == 2
    assert first['runs']['resnet32_mmc_at_pgd'] == dict(first['runs']['resnet32_mmc_at_pgd'], stopped=False, epoch=1,
                                                         step=3)
    assert first['runs']['resnet32_mmc_at_pgd']['rc'] != 0

    shutil.rmtree(tmp_path / 'w1')  # the next lease is a fresh machine: only the packed folder comes back
    cont = _in_process(monkeypatch, capsys, *common, '--resume-from', str(tmp_path / 'lease1'), '--out',
                       str(tmp_path / 'lease2'), '--work', str(tmp_path / 'w1'))
    assert cont.returncode == 0, cont.stdout + cont.stderr
    second = json.loads((tmp_path / 'lease2' / 'device_train.json').read_text())
    assert second['resumed_from_epoch'] == {'resnet32_mmc_at_pgd': 1} and second['epochs'] is None
    assert second['runs']['resnet32_mmc_at_pgd'] == dict(second['runs']['resnet32_mmc_at_pgd'], rc=0, epoch=2, step=6)
    command = (tmp_path / 'lease2' / 'resnet32_mmc_at_pgd.log').read_text().splitlines()[0].split()
    assert '--resume' in command and '-c' not in command

    straight = _in_process(monkeypatch, capsys, *common, '--epochs', '2', '--out', str(tmp_path / 'once'), '--work',
                           str(tmp_path / 'w3'))
    assert straight.returncode == 0, straight.stdout + straight.stderr
    resumed, once = (tmp_path / w / 'runs' / 'resnet32_mmc_at_pgd' for w in ('w1', 'w3'))
    a, b = _last_checkpoint(resumed), _last_checkpoint(once)
    assert a.keys() == b.keys() == {'ema.safetensors', 'model.safetensors', 'optimizer.safetensors'}
    assert all(a[f].keys() == b[f].keys() and all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a)
    losses = [[json.loads(line)['train_loss'] for line in (r / 'metrics.jsonl').read_text().splitlines()]
              for r in (resumed, once)]
    assert losses[0] == losses[1] and len(losses[0]) == 2

    # a run that finished on an earlier lease is not started again
    again = _in_process(monkeypatch, capsys, *common, '--resume-from', str(tmp_path / 'lease2'), '--out',
                        str(tmp_path / 'lease3'), '--work', str(tmp_path / 'w1'))
    assert again.returncode == 0 and 'finished on an earlier lease' in again.stdout, again.stdout + again.stderr
    # another --work moves the data path: refused up front
    moved = _in_process(monkeypatch, capsys, *common, '--resume-from', str(tmp_path / 'lease1'), '--out',
                        str(tmp_path / 'lease4'), '--work', str(tmp_path / 'elsewhere'))
    assert moved.returncode == 2 and 'cannot be continued' in moved.stderr and '--work' in moved.stderr
    assert not (tmp_path / 'elsewhere' / 'data').exists()
    edited = tmp_path / 'edited' / 'resnet32_mmc_at_pgd.yaml'  # the recipe changed between the leases: said, not lost
    edited.parent.mkdir()
    recipe = resolve_recipe('gpu/resnet32_mmc_at_pgd').read_text()
    edited.write_text(recipe.replace('momentum: 0.9', 'momentum: 0.8'))
    err = _refused(capsys, '-c', str(edited), *common[2:], '--resume-from', str(tmp_path / 'lease1'), '--out',
                   str(tmp_path / 'lease6'), '--work', str(tmp_path / 'w1'))
    assert 'cannot be continued' in err and 'momentum=0.9 (asked: 0.8)' in err and 'recipe as it was' in err, err
    assert first['data_files'].keys() == {'plain_text/train-00000-of-00001.parquet',
                                          'plain_text/test-00000-of-00001.parquet'}
    other = write_synthetic_dataset(tmp_path / 'other', n_train=64, n_test=16, seed=1)
    err = _refused(capsys, '-c', 'gpu/resnet32_mmc_at_pgd', '--data', str(other), '--budget-s', '240', '--extra',
                   TINY + ' --adv-steps 2', '--resume-from', str(tmp_path / 'lease1'), '--out',
                   str(tmp_path / 'lease5'), '--work', str(tmp_path / 'w5'))  # other data: refused before the decode
    assert 'is not the data set' in err and 'train-00000-of-00001.parquet' in err, err
    assert not (tmp_path / 'w5').exists()


def test_a_fixed_length_run_stopped_before_its_first_checkpoint_is_a_failure_that_names_the_fix(tmp_path):
    """--epochs mode plans to be stopped at the deadline, but a stop that left no new checkpoint gains nothing."""
    data = write_synthetic_dataset(tmp_path / 'ds', n_train=64, n_test=16)
    proc = _script('-c', 'gpu/resnet32_mmc_at_pgd', '--data', str(data), '--budget-s', '26', '--epochs', '50',
                   '--out', str(tmp_path / 'out'), '--work', str(tmp_path / 'w'), '--extra', TINY)
    assert proc.returncode == 1 and 'no new checkpoint' in proc.stdout and '--checkpoint-every' in proc.stdout, \
        proc.stdout + proc.stderr
    report = json.loads((tmp_path / 'out' / 'device_train.json').read_text())
    assert report['runs']['resnet32_mmc_at_pgd']['stopped'] is True


def _archive(path: Path, *members: tarfile.TarInfo, data: bytes = b'x') -> Path:
    with tarfile.open(path, 'w:gz') as tar:
        for m in members:
            m.size = len(data) if m.isfile() else 0
            tar.addfile(m, io.BytesIO(data) if m.isfile() else None)
    return path


def _module():
    return load_script(SCRIPT)


def test_unpack_refuses_damaged_and_unsafe_archives(tmp_path):
    """What an earlier lease's archive may hold: regular files and folders of its own run, whole. Anything else is a
    ValueError that names the fix, and nothing is written."""
    unpack, name = _module()._unpack, 'resnet32_mmc_at_pgd'
    packed, dest = tmp_path / f'{name}.tar.gz', tmp_path / 'w' / 'runs'

    def member(path: str, kind: bytes = tarfile.REGTYPE, link: str = '') -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type, info.linkname = kind, link
        return info
    unsafe = {'leaves the folder': member(f'{name}/../../evil'), 'absolute': member('/tmp/evil'),
              'another run': member(f'{name}_x/args.yaml'), 'symlink': member(f'{name}/args.yaml', tarfile.SYMTYPE,
                                                                                '/etc/passwd'),
              'hard link': member(f'{name}/args.yaml', tarfile.LNKTYPE, '/etc/passwd')}
    for why, bad in unsafe.items():
        with pytest.raises(ValueError, match='not a file or folder of run .*earlier scripts/device_train.py lease'):
            unpack(_archive(packed, member(f'{name}/args.yaml'), bad), dest, name)
    with pytest.raises(ValueError, match='no args.yaml'):
        unpack(_archive(packed, member(f'{name}/metrics.jsonl')), dest, name)
    assert not dest.exists()
    whole = _archive(packed, member(f'{name}/args.yaml'), data=b'y' * 4096).read_bytes()
    assert unpack(packed, dest, name) == dest / name and (dest / name / 'args.yaml').read_bytes() == b'y' * 4096
    packed.write_bytes(whole[:len(whole) // 2])  # cut short, as a copy that did not finish
    with pytest.raises(ValueError, match='cannot unpack'):
        unpack(packed, dest, name)
    packed.write_bytes(whole[:-8] + bytes(b ^ 0xFF for b in whole[-8:]))  # a damaged gzip trailer (CRC, length)
    with pytest.raises(ValueError, match='cannot unpack'):
        unpack(packed, dest, name)


def test_resume_from_refuses_missing_and_unsafe_archives_before_any_work(tmp_path, capsys):
    common = ['-c', 'gpu/resnet32_mmc_at_pgd', '--data', str(tmp_path / 'none'), '--out', str(tmp_path / 'out'),
              '--work', str(tmp_path / 'w'), '--budget-s', '60']
    proc = _script(*common, '--resume-from', str(tmp_path))
    assert proc.returncode == 2 and 'no packed run' in proc.stderr  # once through the real entry
    assert 'keeps its own length' in _refused(capsys, *common, '--resume-from', str(tmp_path), '--epochs', '5')
    link = tarfile.TarInfo('resnet32_mmc_at_pgd/args.yaml')
    link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
    _archive(tmp_path / 'resnet32_mmc_at_pgd.tar.gz', link)
    assert 'not a file or folder of run' in _refused(capsys, *common, '--resume-from', str(tmp_path))
    assert not (tmp_path / 'w').exists()


def test_run_all_stops_a_job_still_going_at_the_deadline_and_keeps_the_finished_ones():
    """The deadline path: a run still going is stopped (SIGTERM to its process group) and reported as stopped, with
    its non-zero code, while a run that ended in time keeps its own code."""
    module = _module()
    quick = subprocess.Popen([sys.executable, '-c', 'pass'], start_new_session=True)
    slow = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)
    start = module.time.time()
    ends = module._run_all(dict(quick=quick, slow=slow), deadline=start + 2.0)
    assert ends['quick'] == dict(ends['quick'], rc=0, stopped=False)
    assert ends['slow']['stopped'] is True and ends['slow']['rc'] != 0 and slow.poll() is not None
    assert 2.0 <= ends['slow']['wall_s'] < 30


def test_run_all_gives_the_stopped_runs_one_shared_grace_period(monkeypatch):
    """Runs that do not end on SIGTERM are all told at once and killed after one grace period, not one each: two of
    them must not eat twice the end margin of the lease."""
    module = _module()
    monkeypatch.setattr(module, 'STOP_GRACE_S', 2.0)
    deaf = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)'
    jobs = {n: subprocess.Popen([sys.executable, '-c', deaf], start_new_session=True, stdout=subprocess.PIPE)
            for n in ('a', 'b')}
    for proc in jobs.values():
        proc.stdout.readline()  # the handler is in place
    start = module.time.time()
    ends = module._run_all(jobs, deadline=start + 1.0)
    assert all(e['stopped'] and e['rc'] == -9 for e in ends.values()), ends
    assert module.time.time() - start < 1.0 + 2.0 + 2.5  # one grace period (and the loop's 1 s polls), not two


def test_the_probe_estimate_leaves_out_the_time_the_probe_stood_still(tmp_path):
    """A probe frozen for a while (a stopped container) sizes the run as one that was not: its pauses (``paused_s``,
    cumulative like ``elapsed_s``) come out of the epoch and start-up figures, and nothing else does."""
    from timm_mmc.runfolder import EpochRecord, RunFolder
    estimate = _module()._epoch_estimate

    def probe(name: str, paused: tuple) -> dict:
        folder = RunFolder(tmp_path / name)
        folder.path.mkdir()
        folder.write_metrics([EpochRecord(1, img_per_s=100.0, elapsed_s=30.0 + paused[0], paused_s=paused[0]),
                              EpochRecord(2, img_per_s=100.0, elapsed_s=50.0 + paused[1], paused_s=paused[1])])
        return estimate(folder.path, n_train=1000, probe_train=1500, wall_s=60.0 + paused[1])
    plain = probe('plain', (0.0, 0.0))
    assert plain == dict(img_per_s=100.0, eval_s=5.0, epoch_s=15.0, startup_s=20.0)
    assert probe('paused', (7.0, 19.0)) == plain  # 7 s in epoch 1, 12 more in epoch 2
    older = RunFolder(tmp_path / 'older')  # a run from before pauses were recorded: none subtracted
    older.path.mkdir()
    older.write_metrics([EpochRecord(1, img_per_s=100.0, elapsed_s=30.0), EpochRecord(2, img_per_s=100.0,
                                                                                       elapsed_s=50.0)])
    assert estimate(older.path, n_train=1000, probe_train=1500, wall_s=60.0) == plain
