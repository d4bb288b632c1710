"""scripts/device_train.py, rehearsed on the CPU with a tiny budget (as before every lent-GPU run)."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from timm_mmc.data import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'device_train.py'


TINY = '--model resnet20_mmc --feature-dim 16 --batch-size 16 --holdout 16 --lr 0.002 --threads 1'


def _script(*args, timeout=300, **env_extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_device_script_probes_fits_the_epochs_to_the_budget_and_packs_the_run(tmp_path):
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


def test_device_script_refuses_bad_recipes_and_data_before_any_work(tmp_path):
    out = tmp_path / 'out'
    proc = _script('-c', 'gpu/no_such_recipe', '--data', str(tmp_path), '--out', str(out), '--budget-s', '60')
    assert proc.returncode == 2 and 'neither a file nor a recipe name' in proc.stderr
    proc = _script('-c', 'gpu/resnet32_mmc_at', '-c', 'resnet32_mmc_at', '--data', str(tmp_path), '--out', str(out),
                   '--budget-s', '60')
    assert proc.returncode == 2 and 'share a name' in proc.stderr
    proc = _script('-c', 'gpu/resnet32_mmc_at', '--data', str(tmp_path / 'none'), '--out', str(out),
                   '--work', str(tmp_path / 'w'), '--budget-s', '60')
    assert proc.returncode == 2 and 'Hub parquet layout' in proc.stderr
    assert not (tmp_path / 'w' / 'data').exists()


def test_a_run_over_two_leases_continues_bit_exactly_from_the_packed_folder(tmp_path):
    """--epochs fixes the length (no probe); a run cut on one lease is packed, and --resume-from on the next lease
    (a fresh work folder, as on a fresh machine) unpacks it and continues it with --resume to the same weights as a
    run never cut."""
    data = write_synthetic_dataset(tmp_path / 'ds', n_train=64, n_test=16)
    common = ['-c', 'gpu/resnet32_mmc_at_pgd', '--data', str(data), '--budget-s', '240', '--extra',
              TINY + ' --adv-steps 2']
    cut = _script(*common, '--epochs', '2', '--out', str(tmp_path / 'lease1'), '--work', str(tmp_path / 'w1'),
                  TIMM_MMC_FAULT='step:4')  # killed in epoch 2 (3 steps an epoch), after epoch 1's checkpoint
    assert cut.returncode == 1, cut.stdout + cut.stderr
    first = json.loads((tmp_path / 'lease1' / 'device_train.json').read_text())
    assert 'probe' not in first and first['epochs'] == 2
    assert first['runs']['resnet32_mmc_at_pgd'] == dict(first['runs']['resnet32_mmc_at_pgd'], stopped=False, epoch=1)
    assert first['runs']['resnet32_mmc_at_pgd']['rc'] != 0

    shutil.rmtree(tmp_path / 'w1')  # the next lease is a fresh machine: only the packed folder comes back
    cont = _script(*common, '--resume-from', str(tmp_path / 'lease1'), '--out', str(tmp_path / 'lease2'),
                   '--work', str(tmp_path / 'w1'))
    assert cont.returncode == 0, cont.stdout + cont.stderr
    second = json.loads((tmp_path / 'lease2' / 'device_train.json').read_text())
    assert second['resumed_from_epoch'] == {'resnet32_mmc_at_pgd': 1} and second['epochs'] is None
    assert second['runs']['resnet32_mmc_at_pgd'] == dict(second['runs']['resnet32_mmc_at_pgd'], rc=0, epoch=2)
    assert '--resume' in (tmp_path / 'lease2' / 'resnet32_mmc_at_pgd.log').read_text().splitlines()[0]

    straight = _script(*common, '--epochs', '2', '--out', str(tmp_path / 'once'), '--work', str(tmp_path / 'w3'))
    assert straight.returncode == 0, straight.stdout + straight.stderr
    weights = [(tmp_path / w / 'runs' / 'resnet32_mmc_at_pgd' / 'model.safetensors').read_bytes() for w in ('w1', 'w3')]
    assert weights[0] == weights[1]

    again = _script(*common, '--resume-from', str(tmp_path / 'lease2'), '--out', str(tmp_path / 'lease3'),
                    '--work', str(tmp_path / 'w1'))  # a run that finished on an earlier lease is not started again
    assert again.returncode == 0 and 'finished on an earlier lease' in again.stdout, again.stdout + again.stderr


def test_resume_from_refuses_missing_and_unsafe_archives_before_any_work(tmp_path):
    common = ['-c', 'gpu/resnet32_mmc_at_pgd', '--data', str(tmp_path / 'none'), '--out', str(tmp_path / 'out'),
              '--work', str(tmp_path / 'w'), '--budget-s', '60']
    proc = _script(*common, '--resume-from', str(tmp_path))
    assert proc.returncode == 2 and 'no packed run' in proc.stderr
    proc = _script(*common, '--resume-from', str(tmp_path), '--epochs', '5')
    assert proc.returncode == 2 and 'keeps its own length' in proc.stderr
    (tmp_path / 'evil').write_text('x')
    with tarfile.open(tmp_path / 'resnet32_mmc_at_pgd.tar.gz', 'w:gz') as tar:
        tar.add(tmp_path / 'evil', arcname='resnet32_mmc_at_pgd/../../evil')
    proc = _script(*common, '--resume-from', str(tmp_path))
    assert proc.returncode == 2 and 'not a file or folder of run' in proc.stderr
    with tarfile.open(tmp_path / 'resnet32_mmc_at_pgd.tar.gz', 'w:gz') as tar:
        link = tarfile.TarInfo('resnet32_mmc_at_pgd/args.yaml')
        link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tar.addfile(link)
    proc = _script(*common, '--resume-from', str(tmp_path))
    assert proc.returncode == 2 and 'not a file or folder of run' in proc.stderr
    assert not (tmp_path / 'w' / 'data').exists() and not (tmp_path / 'w' / 'runs' / 'resnet32_mmc_at_pgd').exists()


def test_run_all_stops_a_job_still_going_at_the_deadline_and_keeps_the_finished_ones():
    """The deadline path: a run still going is stopped (SIGTERM to its process group) and reported as stopped, with
    its non-zero code, while a run that ended in time keeps its own code."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('device_train', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    quick = subprocess.Popen([sys.executable, '-c', 'pass'], start_new_session=True)
    slow = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)
    start = module.time.time()
    ends = module._run_all(dict(quick=quick, slow=slow), deadline=start + 2.0)
    assert ends['quick'] == dict(ends['quick'], rc=0, stopped=False)
    assert ends['slow']['stopped'] is True and ends['slow']['rc'] != 0 and slow.poll() is not None
    assert 2.0 <= ends['slow']['wall_s'] < 30
