"""A release folder installed into a local Hugging Face cache, laid out as ``hf_hub_download`` leaves one.

With ``HF_HUB_OFFLINE=1``, ``timm.create_model(name, pretrained=True)`` and ``hf-hub:`` then load from it: the route
to the released weights before (or without) a push.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Optional

from ..fileio import atomic_write_text
from .common import HubError
from .push import release_files

__all__ = ['LFS_SUFFIXES', 'build_hf_cache']

# file types the Hub stores through LFS (blob id = sha256); other files are plain git blobs (blob id = git sha1)
LFS_SUFFIXES = ('.safetensors', '.bin', '.pth', '.pt', '.ckpt', '.png', '.jpg', '.jpeg', '.npz', '.onnx', '.h5')


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def build_hf_cache(folder: os.PathLike, repo_id: str, cache_dir: Optional[os.PathLike] = None,
                   revision: str = 'main') -> Path:
    """Install a release folder into a Hugging Face cache as ``hf_hub_download`` lays one out.

    ``<cache>/models--{org}--{name}/blobs/<id>`` holds each file once (id = sha256 for LFS-stored types such as
    safetensors, the git blob sha1 otherwise, as the Hub's etags), ``snapshots/<commit>/<path>`` link to the blobs
    (relative symlinks, copies where symlinks are unsupported) and ``refs/<revision>`` holds the commit hash. With
    ``HF_HUB_OFFLINE=1``, ``timm.create_model(name, pretrained=True)`` and ``hf-hub:`` then load from it.

    Args:
        folder: Release folder.
        repo_id: ``org/name`` the files belong to (for the registered name path: the model's ``hf_hub_id``).
        cache_dir: Cache root; default ``HF_HUB_CACHE``.
        revision: Branch name recorded under ``refs``.

    Returns:
        The snapshot folder.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(folder)
    files = release_files(folder)
    if not files:
        raise HubError(f'{str(folder)!r} holds no files to cache.')
    storage = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type='model')
    ids = {}
    for f in files:
        data = (folder / f).read_bytes()
        ids[f] = hashlib.sha256(data).hexdigest() if f.lower().endswith(LFS_SUFFIXES) else _git_blob_sha1(data)
    commit = hashlib.sha1(''.join(f'{f}\0{ids[f]}\n' for f in files).encode()).hexdigest()
    (storage / 'blobs').mkdir(parents=True, exist_ok=True)
    snapshot = storage / 'snapshots' / commit
    for f in files:
        blob = storage / 'blobs' / ids[f]
        if not blob.exists():
            tmp = blob.with_name(blob.name + '.incomplete')
            shutil.copyfile(folder / f, tmp)
            os.replace(tmp, blob)
        link = snapshot / f
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        try:
            os.symlink(os.path.relpath(blob, link.parent), link)
        except OSError:
            shutil.copyfile(blob, link)
    (storage / 'refs').mkdir(exist_ok=True)
    atomic_write_text(storage / 'refs' / revision, commit)
    return snapshot
