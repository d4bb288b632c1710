from pathlib import Path

import pytest
import torch

# two cores, often shared with a training run: keep every test single-threaded and deterministic
torch.set_num_threads(1)

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10'


def pytest_collection_modifyitems(items):
    """Tests marked ``long(SECONDS)`` first, the longest first, the rest in their order: pytest-xdist hands tests out
    in this order, one at a time as a worker frees up (``--maxschedchunk=1`` in pyproject.toml), and a long test handed
    out last keeps one worker busy while the others stand idle."""
    def seconds(item) -> float:
        mark = item.get_closest_marker('long')
        return (mark.args[0] if mark.args else mark.kwargs['seconds']) if mark else 0.0
    items.sort(key=lambda item: -seconds(item))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded data-set caches go to a per-session temp folder, never the user's cache."""
    monkeypatch.setenv('TIMM_MMC_CACHE', str(tmp_path_factory.getbasetemp() / 'timm_mmc_cache'))


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one thread (tiny models: more only adds overhead) and gives back what it found, so a test
    that sets threads itself (``--threads``) does not leak them into the next."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def cifar10_path():
    if not SHARED_CIFAR10.is_dir():
        pytest.skip('real CIFAR-10 copy not found beside the repo (../shared/data/cifar10)')
    return str(SHARED_CIFAR10)
