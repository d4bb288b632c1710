"""What a pip user gets (issue 15): a wheel built from this tree, installed into a fresh venv, used outside the repo.

Offline: the wheel is built with the build backend the dev venv already has (``--no-build-isolation --no-index``) from
a copy of the sources (nothing is written into the checkout), and the fresh venv (``--without-pip``) sees the dev
venv's site-packages through a ``.pth`` path entry for torch / timm / huggingface_hub. A path entry does not run the
``.pth`` files there, so the dev venv's editable install of timm_mmc stays invisible: ``timm_mmc`` imports from the
wheel, which the test checks. About 12 s of CPU time (2 to 6 min of wall time here beside a training run).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ('pyproject.toml', 'README.md', 'timm_mmc', 'eval')

CHECKS = '''
import json, timm, timm_mmc
from pathlib import Path
from timm_mmc.config import parse_config, resolve_recipe
res = dict(package=timm_mmc.__file__, recipe=str(resolve_recipe('resnet32_mmc')),
           paper_recipe=str(resolve_recipe('paper/resnet32_mmc_at')))
cfg = parse_config(['-c', 'resnet32_mmc', '--output', 'runs/x'])
res['recipe_model'] = cfg.model
ours = set(timm.list_models(module=['cifar_resnet', 'wrapper']))
res['listed'] = sorted(n for n in timm.list_pretrained() if n.split('.', 1)[0] in ours)
res['released'] = sorted(timm_mmc.models.RELEASED)
try:
    timm.create_model('resnet32_mmc.cifar10', pretrained=True)
    res['error'] = None
except Exception as e:
    res['error'] = f'{type(e).__name__}: {e}'
res['wrapped'] = timm_mmc.models.resolve_model_name('resnet18+mmc')[0]
print('RESULT' + json.dumps(res))
'''


def _build_wheel(tmp: Path) -> Path:
    src = tmp / 'src'
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(
            REPO / name, src / name, **({'ignore': shutil.ignore_patterns('__pycache__')} if (REPO / name).is_dir()
                                        else {}))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q',
                    '-w', str(tmp / 'dist'), str(src)], check=True, capture_output=True, text=True, timeout=300)
    return next((tmp / 'dist').glob('timm_mmc-*.whl'))


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    site = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / 'dev_venv_packages.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')  # torch, timm, ...
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-deps', '--no-index', '-q',
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return python


@pytest.mark.slow
def test_wheel_outside_the_repo_offline(tmp_path):
    python = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    work = tmp_path / 'elsewhere'
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'HF_TOKEN', 'VIRTUAL_ENV')}
    env.update(HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), HF_HUB_CACHE=str(tmp_path / 'hf' / 'hub'),
               PYTHONNOUSERSITE='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([str(python), '-c', CHECKS], cwd=str(work), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split('RESULT', 1)[1])
    venv = str(tmp_path / 'venv')
    assert res['package'].startswith(venv), res['package']  # the wheel's copy, not the checkout
    assert res['recipe'].startswith(venv) and res['recipe'].endswith('recipes/cpu/resnet32_mmc.yaml')
    assert res['paper_recipe'].startswith(venv) and res['recipe_model'] == 'resnet32_mmc'
    assert res['listed'] == res['released'] and 'resnet32_mmc.cifar10' in res['listed']
    error = res['error'] or ''
    assert error.startswith('PretrainedWeightsError') and 'timm-mmc/resnet32_mmc.cifar10' in error
    assert 'python -m timm_mmc.hub cache hub_cards/resnet32_mmc.cifar10' in error
    assert 'local-dir:hub_cards/resnet32_mmc.cifar10' in error
    assert res['wrapped'] == 'mmc_wrapper'
    script = venv + '/bin/timm-mmc-train'  # the console scripts come with the wheel
    helped = subprocess.run([script, '--help'], cwd=str(work), env=env, capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and '--pretrained-backbone' in helped.stdout and 'resnet32_mmc' in helped.stdout
