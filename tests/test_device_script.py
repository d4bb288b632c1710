"""scripts/device_train.py, rehearsed on the CPU with a tiny budget (as before every lent-GPU run)."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from timm_mmc.data import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'device_train.py'


def _script(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_device_script_probes_fits_the_epochs_to_the_budget_and_packs_the_run(tmp_path):
    data = write_synthetic_dataset(tmp_path / 'ds', n_train=96, n_test=32)
    out = tmp_path / 'out'
    proc = _script('-c', 'gpu/resnet32_mmc_at', '--data', str(data), '--out', str(out), '--work', str(tmp_path / 'w'),
                   '--budget-s', '240', '--probe-images', '64', '--max-epochs', '2',
                   '--extra', '--model resnet20_mmc --feature-dim 16 --batch-size 16 --holdout 16 --lr 0.002 --threads 1')
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
