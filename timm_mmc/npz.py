"""The project's ``.npz`` split format: one writer, one reader, and a folder of per-split files as a data set.

An ``.npz`` split holds ``images`` ``(N, H, W, C)`` uint8, ``labels`` int64, ``class_names``, ``split``, ``source``
(what it was made from) and ``sha256`` (of the images and labels bytes). The bundled CIFAR-10 test sample
(``timm_mmc/samples/``) is one; ``python -m timm_mmc.data sample`` cuts one from any data set. A folder of such files
(``train.npz``, ``test.npz``) is a data set too: :func:`parquet_to_npz_folder` writes one from the Hub's parquet
layout with pyarrow and Pillow alone, for machines without ``datasets`` (a lent GPU machine;
``scripts/device_train.py``). :func:`timm_mmc.data.load_split` reads both through :func:`read_npz_split`.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .data import (_LABEL_NAMES, BUNDLED_SAMPLES, DataError, ImageSplit, TooFewExamples, _rgb_array, _to_nchw,
                   check_arrays, content_digest, content_sha256, parquet_split_path)
from .fileio import staged_folder

__all__ = ['read_npz_split', 'write_npz_split', 'is_npz_folder', 'parquet_to_npz_folder']


def is_npz_folder(dataset: str) -> bool:
    """A local folder of per-split ``.npz`` files (and no parquet layout): what :func:`parquet_to_npz_folder` writes."""
    path = Path(dataset).expanduser()
    return path.is_dir() and not (path / 'plain_text').exists() and any(path.glob('*.npz'))


def read_npz_split(path: os.PathLike, split: str, limit: Optional[int] = None, name: Optional[str] = None
                   ) -> ImageSplit:
    """Read one split from an ``.npz`` of the format :func:`write_npz_split` writes (no pickle).

    Args:
        path: The ``.npz`` file.
        split: The split asked for; the file's own ``split`` must match it.
        limit: Keep only the first ``limit`` rows.
        name: How the data set was named (``cifar10-sample``) in the source string; default the path.

    Raises:
        DataError: A missing or unreadable file, missing arrays, wrong dtype, range or labels, another split.
    """
    path = Path(path).expanduser()
    dataset = str(path) if name is None else name
    if not path.is_file():
        raise DataError(f'sample file {str(path)!r} does not exist; bundled samples: {", ".join(BUNDLED_SAMPLES)}, '
                        f'or write one with `python -m timm_mmc.data sample`.')
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ('images', 'labels') if k not in f.files]
            if missing:
                raise DataError(f'{str(path)!r} has no {" or ".join(missing)} array (it holds {sorted(f.files)}); '
                                f'an .npz data set needs images (N, H, W, C) uint8 and labels (N,) int, and may add '
                                f'class_names, split, source and sha256 (`python -m timm_mmc.data sample` writes all).')
            images, labels = f['images'], f['labels']
            if 'class_names' in f.files:
                class_names = [str(c) for c in f['class_names']]
            else:
                n_cls = int(labels.max()) + 1 if labels.size and np.issubdtype(labels.dtype, np.integer) else 0
                class_names = [str(i) for i in range(n_cls)]
            sample_split = str(f['split']) if 'split' in f.files else split
            stored = str(f['sha256']) if 'sha256' in f.files else None
            origin = str(f['source']) if 'source' in f.files else 'an .npz without provenance'
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f'{str(path)!r} is not a readable .npz ({type(e).__name__}: {e}); write one with '
                        f'`python -m timm_mmc.data sample`.') from e
    check_arrays(images, labels, len(class_names), str(path))
    labels = labels.astype(np.int64)
    sha = content_sha256(images, labels)  # as the writer stored it
    if stored is not None and stored != sha:
        raise DataError(f'{str(path)!r} does not hold what it was written with: its images and labels hash to '
                        f'{sha[:16]}, its stored sha256 says {stored[:16]}; the file was changed after writing. Write '
                        f'it again (`python -m timm_mmc.data sample` or `npz`).')
    if split != sample_split:
        raise DataError(f'{dataset} holds only the {sample_split!r} split (asked for {split!r}); pass --split '
                        f'{sample_split}.')
    if limit is not None:
        if limit < 1 or limit > len(labels):
            raise TooFewExamples(limit, len(labels), str(dataset))
        images, labels = images[:limit], labels[:limit]
    imgs = _to_nchw(images)
    source = f'{dataset}:{split} [{path.name}, sha256 {sha[:16]}], from {origin}'
    return ImageSplit(imgs, torch.from_numpy(labels).long(), class_names, source)


def write_npz_split(out: os.PathLike, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], split: str,
                    source: str, compress: bool = True) -> Path:
    """The one writer of the project's ``.npz`` split format, atomically (a kill leaves no torn file).

    The file holds ``images`` ``(N, H, W, C)`` uint8, ``labels`` int64, ``class_names``, ``split``, ``source`` (what it
    was made from) and ``sha256`` (of the images and labels bytes).

    Raises:
        DataError: Wrong dtype, shape, range or labels (:func:`check_arrays`).
    """
    labels = np.asarray(labels).astype(np.int64)
    check_arrays(images, labels, len(class_names), str(out))
    sha = content_sha256(images, labels)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f'.{out.name}.tmp{os.getpid()}')
    save = np.savez_compressed if compress else np.savez
    try:
        with open(tmp, 'wb') as f:
            save(f, images=images, labels=labels, class_names=np.array(list(class_names)), split=split,
                 source=source, sha256=sha)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temporary file behind
        raise
    return out


def parquet_to_npz_folder(dataset: os.PathLike, out: os.PathLike, splits: Sequence[str] = ('train', 'test'),
                          limit: Optional[int] = None) -> Path:
    """Decode a local data set in the Hub's parquet layout into a folder of uncompressed per-split ``.npz`` files.

    Reads with pyarrow and Pillow only (no ``datasets``): the image column is the Hub's ``{bytes, path}`` struct, the
    label column is ``label`` (class names from the parquet's ``huggingface`` metadata when it has them).

    Raises:
        DataError: A missing split file, an unknown column layout, images of different sizes, or ``limit`` < 1.
    """
    import io
    import json

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from PIL import Image

    if limit is not None and limit < 1:
        raise DataError(f'--limit must be >= 1 rows (got {limit}); leave it out to keep every row.')
    paths = {split: parquet_split_path(dataset, split) for split in splits}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:  # all checked before any is written
        raise DataError(f'{missing} not found: --dataset must be a local folder in the Hub parquet layout '
                        f'(plain_text/SPLIT-00000-of-00001.parquet for each of {list(splits)}).')
    decoded = []  # every split decoded and checked before any file is written
    for split, path in paths.items():
        table = pq.read_table(path)
        image_col = next((f.name for f in table.schema if str(f.type).startswith('struct<bytes')), None)
        label_col = next((k for k in _LABEL_NAMES if k in table.column_names), None)
        if image_col is None or label_col is None:
            raise DataError(f'{str(path)!r} has columns {table.column_names}: no Hub image struct or label column.')
        if not pa.types.is_integer(table.schema.field(label_col).type):
            kind = table.schema.field(label_col).type
            raise DataError(f'{str(path)!r}: the label column {label_col!r} holds {kind}, not integer class labels; '
                            f'cast it to integers first.')
        if table.num_rows == 0:
            raise DataError(f'{str(path)!r} has no rows.')
        meta = json.loads((table.schema.metadata or {}).get(b'huggingface', b'{}'))
        names = meta.get('info', {}).get('features', {}).get(label_col, {}).get('names')
        # without names, the class count comes from the whole split: a --limit slice can miss the highest class
        names = names or [str(i) for i in range(int(pc.max(table.column(label_col)).as_py()) + 1)]
        if limit is not None:
            table = table.slice(0, limit)
        labels = np.asarray(table.column(label_col).to_pylist(), dtype=np.int64)
        arrays = [_rgb_array(Image.open(io.BytesIO(cell['bytes'])), f'{path} image {i}')
                  for i, cell in enumerate(table.column(image_col).to_pylist())]
        odd = next((i for i, a in enumerate(arrays) if a.shape != arrays[0].shape), None)
        if odd is not None:
            raise DataError(f'{str(path)!r}: image {odd} has shape {arrays[odd].shape}, the first '
                            f'{arrays[0].shape}; resize the data set first.')
        images = np.stack(arrays)
        check_arrays(images, labels, len(names), str(path))
        source = f'{dataset}:{split} [{image_col}, {label_col}] sha256 {content_digest(images, labels)}, via pyarrow'
        decoded.append((split, images, labels, names, source))
    out = Path(out)
    with staged_folder(out, merge=True) as tmp:  # every split written in full before any takes its place
        for split, images, labels, names, source in decoded:
            write_npz_split(tmp / f'{split}.npz', images, labels, names, split, source, compress=False)
    return out
