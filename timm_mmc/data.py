"""Image-classification data sets as uint8 tensors, decoded once and cached (augmentation: :mod:`timm_mmc.augment`).

``load_split("uoft-cs/cifar10", "train")`` or ``load_split("path/to/cifar10", "test")`` reads a Hugging Face
``datasets`` data set (Hub id or a local folder in the Hub's layout), finds the image and label columns (or takes
them by name), decodes every image once into a ``(N, C, H, W)`` uint8 tensor and caches it as ``.npy`` (no pickle)
keyed by the data set's fingerprint. Later runs load the cache in a fraction of a second.

A small CIFAR-10 test sample ships with the package (``timm_mmc/samples/``, provenance in its README) so that an
evaluation runs offline on a fresh clone: ``load_split("cifar10-sample", "test")``. Any ``.npz`` written by
:func:`write_sample` loads the same way by path. ``python -m timm_mmc.data sample ...`` writes one.

A folder of such files, one per split (``train.npz``, ``test.npz``), is a data set too: ``python -m timm_mmc.data
npz --dataset DIR --out OUT`` writes one from the Hub's parquet layout with pyarrow and Pillow alone, for machines
without ``datasets`` (a lent GPU machine; ``scripts/device_train.py``). :mod:`timm_mmc.npz` owns that format.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .status import ExitStatus

__all__ = ['ImageSplit', 'load_split', 'hold_out', 'content_digest', 'DataError', 'check_arrays', 'default_cache_dir',
           'write_synthetic_dataset', 'write_parquet_split', 'parquet_split_path', 'write_sample', 'BUNDLED_SAMPLES']

_LABEL_NAMES = ('label', 'labels', 'fine_label', 'coarse_label', 'target', 'class')
_SAMPLE_DIR = Path(__file__).parent / 'samples'
# name -> file in timm_mmc/samples/ (how each was made: timm_mmc/samples/README.md)
BUNDLED_SAMPLES = {'cifar10-sample': 'cifar10_test_500.npz'}


class DataError(ValueError):
    """A data set that cannot be used as asked; the message says how to fix it."""


class TooFewExamples(DataError):
    """More examples were asked for (a limit) than the split holds; ``asked`` and ``have`` say how many."""

    def __init__(self, asked: int, have: int, where: str) -> None:
        super().__init__(f'asked for {asked} examples but {where} has {have}.')
        self.asked, self.have = asked, have


@dataclass
class ImageSplit:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: List[str]
    source: str  # what was loaded: data set, split, columns, and the sha256 of the decoded pixels and labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @functools.cached_property
    def digest(self) -> str:
        """:func:`content_digest` of these pixels (as ``(N, H, W, C)`` uint8) and labels: what the split is, not where
        it was read from (a resume compares it; the spelling of a path does not change it)."""
        return content_digest(self.images.permute(0, 2, 3, 1).numpy(), self.labels.numpy())

    def float_images(self, idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images in [0, 1] as float32, optionally a subset."""
        imgs = self.images if idx is None else self.images[idx]
        return imgs.float().div_(255)


def hold_out(split: ImageSplit, n: int, seed: int) -> Tuple[ImageSplit, ImageSplit]:
    """Split ``n`` images off ``split`` (a seeded draw, in index order): ``(the rest, the held-out ones)``.

    Raises:
        DataError: ``n`` leaves nothing to train on.
    """
    if not 0 < n < len(split):
        raise DataError(f'--holdout {n} must lie between 1 and {len(split) - 1} (the split has {len(split)} images).')
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    held, kept = order[:n].sort().values, order[n:].sort().values

    def part(idx: torch.Tensor, what: str) -> ImageSplit:
        return ImageSplit(split.images[idx], split.labels[idx], split.class_names, f'{split.source}, {what}')
    return part(kept, f'{n} held out (seed {seed})'), part(held, f'the {n} held out (seed {seed})')


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """The sha256 (hex) of the decoded pixels and the labels as int64: what the data is, not where it came from (a
    re-built Hub cache or a moved folder keeps it; one changed pixel or label changes it)."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def content_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """The first 16 hex digits of :func:`content_sha256`, as source strings and run folders record it."""
    return content_sha256(images, labels)[:16]


def default_cache_dir() -> Path:
    root = os.environ.get('TIMM_MMC_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'timm_mmc')
    return Path(root)


def _is_hub_id(name: str) -> bool:
    parts = name.split('/')
    return len(parts) <= 2 and not name.startswith(('.', '/', '~')) and not os.path.exists(name)


class _NoCardMetadataWarning(logging.Filter):
    """Drops huggingface_hub's warning that a data set's README has no YAML block: the loader does not use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'metadata block was not found' not in record.getMessage()


@contextlib.contextmanager
def _quiet_loading(progress: bool) -> Iterator[None]:
    """Within the block, a local folder whose README is plain prose (``../shared/data/cifar10``'s) loads without
    huggingface_hub's warning, and without ``datasets``' progress bars unless ``progress``."""
    import datasets
    logger, quiet = logging.getLogger('huggingface_hub.repocard'), _NoCardMetadataWarning()
    switch_bars = not progress and not datasets.are_progress_bars_disabled()
    logger.addFilter(quiet)
    try:
        if switch_bars:
            datasets.disable_progress_bars()
        yield
    finally:
        logger.removeFilter(quiet)
        if switch_bars:
            datasets.enable_progress_bars()


def _open(dataset: str, split: str, progress: bool = True):
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DataError('the `datasets` package is needed: pip install datasets') from e
    path = os.path.expanduser(dataset)
    if not _is_hub_id(dataset) and not os.path.exists(path):
        raise DataError(f'data set folder {dataset!r} does not exist; pass a Hub id (e.g. uoft-cs/cifar10) or '
                        f'a local folder in the Hub layout (e.g. ../shared/data/cifar10).')
    try:
        with _quiet_loading(progress):
            ds = datasets.load_dataset(path if os.path.exists(path) else dataset, split=split)
    except ValueError as e:
        if 'split' in str(e).lower():
            raise DataError(f'data set {dataset!r} has no split {split!r}: {e}') from e
        raise DataError(f'could not load data set {dataset!r}: {e}') from e
    except Exception as e:  # datasets raises many kinds (FileNotFoundError, DatasetNotFoundError, ConnectionError)
        raise DataError(f'could not load data set {dataset!r} (split {split!r}): {type(e).__name__}: {e}. '
                        f'Check the Hub id or the local path; offline, use a local copy.') from e
    return ds


def _find_columns(ds, image_column: Optional[str], label_column: Optional[str]) -> Tuple[str, str]:
    import datasets
    feats = ds.features
    if image_column is None:
        imgs = [k for k, f in feats.items() if isinstance(f, datasets.Image)]
        if not imgs:
            raise DataError(f'no image column among {list(feats)}; name it with --image-column.')
        image_column = imgs[0]
    elif image_column not in feats:
        raise DataError(f'image column {image_column!r} not in the data set (columns: {list(feats)}).')
    if label_column is None:
        labels = [k for k in _LABEL_NAMES if k in feats] or [
            k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)]
        if not labels:
            raise DataError(f'no label column among {list(feats)}; name it with --label-column.')
        label_column = labels[0]
    elif label_column not in feats:
        raise DataError(f'label column {label_column!r} not in the data set (columns: {list(feats)}).')
    _check_column_kinds(feats, image_column, label_column)
    return image_column, label_column


_INT_DTYPES = ('int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64')


def _check_column_kinds(feats, image_column: str, label_column: str) -> None:
    """The image column holds images and the label column class indices (a ``ClassLabel`` or an integer column);
    anything else would be decoded into a traceback or, for float labels, silently rounded."""
    import datasets
    kinds = {k: (type(f).__name__ if not isinstance(f, datasets.Value) else f.dtype) for k, f in feats.items()}
    if not isinstance(feats[image_column], datasets.Image):
        raise DataError(f'column {image_column!r} holds {kinds[image_column]}, not images; name the image column '
                        f'with --image-column (columns and their kinds: {kinds}).')
    lab = feats[label_column]
    if not (isinstance(lab, datasets.ClassLabel) or (isinstance(lab, datasets.Value) and lab.dtype in _INT_DTYPES)):
        raise DataError(f'column {label_column!r} holds {kinds[label_column]}, not integer class labels; name the '
                        f'label column with --label-column, or cast it to integers (columns and their kinds: {kinds}).')


_WIDE_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')  # Pillow modes of more than 8 bits a channel


def _rgb_array(img: Any, what: str) -> np.ndarray:
    """A PIL image as ``(H, W, 3)`` uint8 RGB, turned upright by its EXIF orientation (as ``datasets`` decodes it).

    Raises:
        DataError: A mode of more than 8 bits a channel, whose values the 8-bit conversion would clip at 255.
    """
    from PIL import ImageOps
    if img.mode in _WIDE_MODES:
        raise DataError(f'{what} has pixel mode {img.mode} (more than 8 bits a channel), which an 8-bit RGB '
                        f'conversion would clip; convert the data set to 8-bit RGB images first.')
    return np.asarray(ImageOps.exif_transpose(img).convert('RGB'))


def _decode(ds, image_column: str) -> np.ndarray:
    first = _rgb_array(ds[0][image_column], 'image 0')
    out = np.empty((len(ds), *first.shape), dtype=np.uint8)  # (N, H, W, C)
    col = ds.with_format(None)
    for i, row in enumerate(col.select_columns([image_column])):
        arr = _rgb_array(row[image_column], f'image {i}')
        if arr.shape != first.shape:
            raise DataError(f'image {i} has shape {arr.shape}, the first {first.shape}; resize the data set first.')
        out[i] = arr
    return out


def load_split(dataset: str, split: str = 'train', image_column: Optional[str] = None,
               label_column: Optional[str] = None, cache_dir: Optional[os.PathLike] = None,
               limit: Optional[int] = None, progress: bool = True) -> ImageSplit:
    """Load one split as uint8 tensors, decoding at most once per data set version.

    Args:
        dataset: Hub id (``uoft-cs/cifar10``) or local folder in the Hub's layout.
        split: Split name.
        image_column: Image column; detected when None.
        label_column: Label column; detected when None (``label``, ``fine_label``, or a ``ClassLabel``).
        cache_dir: Where decoded arrays are cached (default ``$TIMM_MMC_CACHE`` or ``~/.cache/timm_mmc``).
        limit: Keep only the first ``limit`` rows (the CIFAR copy is shuffled, so a prefix is a fair sample).
        progress: Let ``datasets`` draw its progress bars (off for ``--no-progress`` logs).

    Raises:
        DataError: Missing data set, split or column; the message names the fix.
    """
    from .npz import is_npz_folder, read_npz_split
    if dataset in BUNDLED_SAMPLES:
        return read_npz_split(_SAMPLE_DIR / BUNDLED_SAMPLES[dataset], split, limit, name=dataset)
    if dataset.endswith('.npz'):
        return read_npz_split(dataset, split, limit, name=dataset)
    if is_npz_folder(dataset):
        folder = Path(dataset).expanduser()
        if not (folder / f'{split}.npz').is_file():
            have = sorted(p.stem for p in folder.glob('*.npz'))
            raise DataError(f'the .npz data set {str(folder)!r} has no split {split!r} (it has {have}); pass '
                            f'--split (or --train-split / --test-split) with one of them.')
        return read_npz_split(folder / f'{split}.npz', split, limit)
    import datasets
    ds = _open(dataset, split, progress)
    image_column, label_column = _find_columns(ds, image_column, label_column)
    label_feat = ds.features[label_column]
    if isinstance(label_feat, datasets.ClassLabel):
        class_names = list(label_feat.names)
    else:  # from the whole split, before any limit: a slice can miss the highest class
        class_names = [str(i) for i in range(int(max(ds[label_column])) + 1)]
    if limit is not None:
        if limit < 1 or limit > len(ds):
            raise TooFewExamples(limit, len(ds), f'split {split!r}')
        ds = ds.select(range(limit))
    key = hashlib.sha256(f'{ds._fingerprint}|{image_column}|{label_column}'.encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    img_path = cache / f'{key}_images.npy'
    lbl_path = cache / f'{key}_labels.npy'
    if img_path.exists() and lbl_path.exists():
        images = np.load(img_path, allow_pickle=False)
        labels = np.load(lbl_path, allow_pickle=False)
    else:
        images = _decode(ds, image_column)
        labels = np.asarray(ds[label_column])  # no cast: check_arrays refuses anything but integers
        try:
            cache.mkdir(parents=True, exist_ok=True)
            for path, arr in ((img_path, images), (lbl_path, labels)):
                tmp = path.with_suffix(f'.tmp{os.getpid()}.npy')
                np.save(tmp, arr, allow_pickle=False)
                os.replace(tmp, path)  # atomic: a killed run never leaves a torn cache file
        except OSError:
            pass  # a read-only cache is not fatal, we decoded already
    check_arrays(images, labels, len(class_names), f'{dataset}:{split}')
    imgs = _to_nchw(images)
    source = f'{dataset}:{split} [{image_column}, {label_column}] sha256 {content_digest(images, labels)}'
    return ImageSplit(imgs, torch.from_numpy(labels).long(), class_names, source)


def check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, what: str) -> None:
    """Refuse images and labels that would give a silently wrong number.

    Args:
        images: ``(N, H, W, C)`` pixels; must be uint8 in [0, 255] (the models divide by 255 themselves).
        labels: ``(N,)`` integer class indices in ``[0, num_classes)``.
        num_classes: Number of classes the data set declares.
        what: The data set's name for the messages.

    Raises:
        DataError: Wrong dtype, shape, range, or label count; the message says how to fix it.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] not in (1, 3):
        shape = getattr(images, 'shape', None)
        raise DataError(f'{what}: images must be an array of shape (N, H, W, 1 or 3), got shape {shape}; store '
                        f'them channels-last.')
    if images.dtype != np.uint8:
        lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
        hint = ('they look like floats in [0, 1]: store np.round(images * 255).astype(np.uint8)' if hi <= 1.0
                else 'store them as uint8 pixels in [0, 255]')
        raise DataError(f'{what}: images are {images.dtype} with values in [{lo:g}, {hi:g}], but uint8 pixels in '
                        f'[0, 255] are expected (the model divides by 255); {hint}.')
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f'{what}: labels must be a 1-D array with one label per image ({len(images)} images, labels '
                        f'of shape {getattr(labels, "shape", None)}).')
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f'{what}: labels are {labels.dtype}, but integer class indices are expected; store '
                        f'labels.astype(np.int64) if they are whole numbers.')
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(((labels < 0) | (labels >= num_classes)).sum())
        raise DataError(f'{what}: {bad} labels lie outside [0, {num_classes - 1}] (min {int(labels.min())}, max '
                        f'{int(labels.max())}) for its {num_classes} classes; drop or fix those rows (unlabelled rows '
                        f'marked -1 cannot be trained on or evaluated).')


def _to_nchw(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 array -> contiguous ``(N, C, H, W)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def write_sample(dataset: str, out: os.PathLike, n: int, split: str = 'test', image_column: Optional[str] = None,
                 label_column: Optional[str] = None) -> Path:
    """Write the first ``n`` images of a split to a compressed ``.npz`` that :func:`load_split` reads by path."""
    from .npz import write_npz_split
    data = load_split(dataset, split, image_column, label_column, limit=n)
    images = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # (n, H, W, C)
    return write_npz_split(out, images, data.labels.numpy(), data.class_names, split,
                           f'first {n} rows of {data.source}')


def parquet_split_path(root: os.PathLike, split: str) -> Path:
    """Where the Hub's parquet layout keeps ``split`` of the data set in folder ``root`` (one shard)."""
    return Path(root) / 'plain_text' / f'{split}-00000-of-00001.parquet'


def write_parquet_split(root: os.PathLike, split: str, images: np.ndarray, labels: Sequence[int],
                        class_names: Sequence[str], image_column: str = 'img', label_column: str = 'label') -> Path:
    """Write one split in the Hub's parquet layout (what :func:`load_split` and ``datasets.load_dataset`` read).

    Args:
        root: Data-set folder; the file goes to :func:`parquet_split_path`.
        split: Split name (``train``, ``test``).
        images: uint8 images, shape (N, H, W, 3).
        labels: N class indices into ``class_names``.
        class_names: The label column's class names.
        image_column: Name of the image column.
        label_column: Name of the label column.

    Returns:
        The parquet file written.
    """
    import datasets
    from PIL import Image

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise DataError(f'write_parquet_split needs uint8 images of shape (N, H, W, 3) and N labels; got '
                        f'{images.dtype} {tuple(images.shape)} and {len(labels)} labels.')
    feats = datasets.Features({image_column: datasets.Image(),
                               label_column: datasets.ClassLabel(names=list(class_names))})
    ds = datasets.Dataset.from_dict({image_column: [Image.fromarray(a) for a in images],
                                     label_column: [int(v) for v in labels]}, features=feats)
    path = parquet_split_path(root, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def write_synthetic_dataset(root: os.PathLike, n_train: int = 128, n_test: int = 64, num_classes: int = 4,
                            size: int = 32, image_column: str = 'img', label_column: str = 'label',
                            seed: int = 0) -> Path:
    """Write a small learnable image data set in the Hub's parquet layout (for smoke tests and benchmarks).

    ``root/plain_text/{train,test}-00000-of-00001.parquet``, readable by ``datasets.load_dataset(root)`` and
    :func:`load_split`. Each class is a colour plus Gaussian noise.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(num_classes, 3))
    names = [f'c{i}' for i in range(num_classes)]
    for split, n in (('train', n_train), ('test', n_test)):
        labels = rng.integers(0, num_classes, size=n)
        imgs = np.stack([np.clip(colours[lab] + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
                         for lab in labels])
        write_parquet_split(root, split, imgs, labels, names, image_column, label_column)
    return root


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m timm_mmc.data sample --dataset D --n N --out F.npz``: cut a sample file from a data set."""
    import argparse
    import sys
    p = argparse.ArgumentParser(prog='python -m timm_mmc.data', description=main.__doc__)
    sub = p.add_subparsers(dest='cmd', required=True)
    q = sub.add_parser('sample', help='write the first N images of a split to an .npz that --dataset accepts')
    q.add_argument('--dataset', required=True, help='Hub id or local folder in the Hub layout')
    q.add_argument('--split', default='test')
    q.add_argument('--n', type=int, required=True)
    q.add_argument('--out', required=True, help='output .npz path')
    q = sub.add_parser('npz', help='decode a local Hub-layout folder into a folder of per-split .npz files, with '
                                   'pyarrow and Pillow alone (for machines without datasets)')
    q.add_argument('--dataset', required=True, help='local folder in the Hub parquet layout')
    q.add_argument('--splits', nargs='+', default=['train', 'test'])
    q.add_argument('--limit', type=int, default=None, help='keep the first N rows of each split')
    q.add_argument('--out', required=True, help='output folder')
    args = p.parse_args(argv)
    if args.cmd == 'npz':
        from .npz import parquet_to_npz_folder
        try:
            out = parquet_to_npz_folder(args.dataset, args.out, args.splits, args.limit)
        except DataError as e:
            print(f'error: {e}', file=sys.stderr)
            return ExitStatus.BAD_INPUT
        for split in args.splits:
            print(f'wrote {out / (split + ".npz")}: {load_split(str(out), split).source}')
        return ExitStatus.OK
    if not args.out.endswith('.npz'):
        p.error(f'--out must end in .npz (got {args.out!r}) so that --dataset recognises it.')
    try:
        out = write_sample(args.dataset, args.out, args.n, args.split)
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return ExitStatus.BAD_INPUT
    print(f'wrote {out}: {load_split(str(out), args.split).source}')
    return ExitStatus.OK


if __name__ == '__main__':
    raise SystemExit(main())
