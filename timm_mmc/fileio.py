"""One atomic write for the whole project: a file is either its old content or its new content, never torn.

The data goes to a temporary file in the same folder (same file system), is flushed to disk, gets the permissions a
plain ``open(path, 'w')`` would give, and is renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows).
A failure removes the temporary file and leaves ``path`` as it was.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator

__all__ = ['atomic_write_bytes', 'atomic_write_text', 'atomic_write_set', 'current_umask', 'staged_folder']


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


def atomic_write_set(files: Dict[Path, bytes]) -> None:
    """Write several files so that they appear together or not at all (as far as a file system allows).

    Every file is first written in full to a temporary file beside its target; only when all of them are on disk
    are they renamed into place. A failure before the renames leaves nothing new; a failure during them removes the
    files this call had already put in place (files that were there before are not restored).
    """
    tmps: Dict[Path, str] = {}
    placed = []
    try:
        for path, data in files.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
            tmps[path] = tmp
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())
        for path, tmp in tmps.items():
            existed = path.exists()
            os.replace(tmp, path)
            if not existed:
                placed.append(path)
    except BaseException:
        for tmp in tmps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        for path in placed:
            path.unlink(missing_ok=True)
        raise


@contextmanager
def staged_folder(out: os.PathLike, merge: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write a whole folder into; on a clean exit it takes ``out``'s place, on an
    error it is removed and ``out`` stays as it was.

    Its folders and files get the permissions ``mkdir`` and ``open`` would give them (not ``mkdtemp``'s private 0o700).

    Args:
        out: The folder to create or replace.
        merge: Move the written files into an existing ``out`` instead of replacing the folder: the files of ``out``
            that were not written stay.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
    try:
        yield tmp
        mask = current_umask()
        os.chmod(tmp, 0o777 & ~mask)
        for p in tmp.rglob('*'):
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
        if merge and out.exists():
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
            tmp.rmdir()
        elif out.exists():
            old = out.with_name(f'.{out.name}.old-{os.getpid()}')
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
