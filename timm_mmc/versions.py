"""The versions of the packages an evaluation depends on, as its report records them (``EvalReport.versions``)."""
from __future__ import annotations

from typing import Dict, Optional

__all__ = ['package_versions']

_MODULES = {'torch': 'torch', 'timm': 'timm', 'timm-mmc': 'timm_mmc', 'pyautoattack': 'pyautoattack',
            'datasets': 'datasets', 'accelerate': 'accelerate', 'numpy': 'numpy'}


def package_versions() -> Dict[str, Optional[str]]:
    """Versions of the packages an evaluation depends on: the installed distribution's, else the importable
    module's ``__version__`` (a checkout on ``PYTHONPATH``), else None (not importable)."""
    import importlib
    import importlib.util
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out: Dict[str, Optional[str]] = {'python': platform.python_version()}
    for dist, module in _MODULES.items():
        try:
            out[dist] = version(dist)
            continue
        except PackageNotFoundError:
            pass
        if importlib.util.find_spec(module) is None:
            out[dist] = None
            continue
        try:
            mod_version = getattr(importlib.import_module(module), '__version__', None)
        except Exception:  # present but not importable here: its version is unknown, not "not installed"
            mod_version = None
        out[dist] = str(mod_version) if mod_version is not None else 'installed, version unknown'
    return out
