"""What several test files need alike: a repository script loaded as a module, and a training run in a process of its
own (pytest puts ``tests/`` on ``sys.path``, since it has a ``conftest.py`` and no ``__init__.py``)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def load_script(path: Path) -> ModuleType:
    """A script outside the package (``bench/``, ``scripts/``) as a fresh module, for a test to call or patch."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_process(args: Sequence[str], env_extra: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``python -m timm_mmc.train ARGS`` in a process of its own with one thread, for a fault (``TIMM_MMC_FAULT`` in
    ``env_extra``) to kill it. A run not to be killed belongs in the test's process (``main``): a process of its own
    spends most of a tiny run's time on imports (torch, timm, torchvision, datasets)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', **(env_extra or {}))
    return subprocess.run([sys.executable, '-m', 'timm_mmc.train', *args], env=env, capture_output=True, text=True,
                          timeout=600)
