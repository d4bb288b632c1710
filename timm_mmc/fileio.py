"""One atomic write for the whole project: a file is either its old content or its new content, never torn.

The data goes to a temporary file in the same folder (same file system), is flushed to disk, gets the permissions a
plain ``open(path, 'w')`` would give, and is renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows).
A failure removes the temporary file and leaves ``path`` as it was.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ['atomic_write_bytes', 'atomic_write_text', 'current_umask']


def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the parent folder must exist.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode('utf-8'))
