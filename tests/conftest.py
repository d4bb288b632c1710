from pathlib import Path

import pytest
import torch

# two cores, often shared with a training run: keep every test single-threaded and deterministic
torch.set_num_threads(1)

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10'


def pytest_collection_modifyitems(items):
    """Tests marked ``long(SECONDS)`` first, the longest first, the rest in their order.

    With ``-n`` pytest-xdist gives each worker a first block of consecutive tests (a quarter of its share, 79 of 635
    on 2 workers), so the long tests run one after another on the first worker while the other works through short
    ones, and none of them is handed out last. Side by side they slow each other (the torchrun tests start two
    processes, the bench two threads): on the 2-core machine (2026-12-07) the suite took 9 min 22 s and 9 min 44 s
    this way and 10 min 24 s with the tests handed out one at a time (``--maxschedchunk=1``), long ones on both workers.
    Once the long tests add up to more than half the suite, this order makes the first worker the last to end."""
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
