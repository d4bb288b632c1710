"""Data loading (column detection, decode cache, augmentation) and safe weight loading."""
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from timm_mmc.augment import augment_batch, mixup_batch
from timm_mmc.data import DataError, TooFewExamples, load_split, write_synthetic_dataset
from timm_mmc.io import ModelLoadError, UnsafeCheckpointError, load_model, load_state_dict_safe


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp('d') / 'ds', n_train=16, n_test=8, num_classes=3)


def test_load_split_detects_columns_and_caches(ds, tmp_path):
    a = load_split(str(ds), 'train', cache_dir=tmp_path)
    assert a.images.shape == (16, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.class_names == ['c0', 'c1', 'c2'] and a.labels.dtype == torch.long
    assert len(list(tmp_path.glob('*.npy'))) == 2
    b = load_split(str(ds), 'train', cache_dir=tmp_path)  # from the cache
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(load_split(str(ds), 'train', limit=5, cache_dir=tmp_path).labels, a.labels[:5])


def test_load_split_errors(ds, tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        load_split(str(tmp_path / 'nope'), 'train')
    with pytest.raises(DataError, match='split'):
        load_split(str(ds), 'validation')
    with pytest.raises(DataError, match='image column'):
        load_split(str(ds), 'train', image_column='pixels')
    with pytest.raises(TooFewExamples, match='has 8') as exc:
        load_split(str(ds), 'test', limit=9)
    assert (exc.value.asked, exc.value.have) == (9, 8)


def test_integer_labels_count_their_classes_over_the_whole_split_before_a_limit(tmp_path):
    """A label column of plain integers (no class names): the class count comes from the whole split, so a
    ``--train-limit`` slice that misses the highest class still builds a model of every class."""
    import datasets
    import numpy as np
    from PIL import Image
    feats = datasets.Features(img=datasets.Image(), label=datasets.Value('int64'))
    labels = [0, 1, 0, 1, 2, 3]
    (tmp_path / 'd').mkdir()
    datasets.Dataset.from_dict(dict(img=[Image.fromarray(np.zeros((32, 32, 3), np.uint8))] * 6, label=labels),
                               features=feats).to_parquet(str(tmp_path / 'd' / 'train-00000-of-00001.parquet'))
    part = load_split(str(tmp_path / 'd'), 'train', limit=4, cache_dir=tmp_path / 'cache')
    assert part.labels.tolist() == [0, 1, 0, 1] and part.class_names == ['0', '1', '2', '3']


def test_a_plain_readme_beside_the_data_loads_without_the_hub_card_warning(ds, tmp_path):
    """A README without a YAML block (as ../shared/data/cifar10 has) made huggingface_hub log a warning per load."""
    folder = tmp_path / 'with_readme'
    shutil.copytree(ds, folder)
    (folder / 'README.md').write_text('# A data set\n\nProse only, no metadata block.\n')
    logger, seen = logging.getLogger('huggingface_hub.repocard'), []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        assert len(load_split(str(folder), 'train', cache_dir=tmp_path / 'cache')) == 16
        logger.warning('another warning from this logger')  # still shown: only the one message is dropped
    finally:
        logger.removeHandler(handler)
    assert seen == ['another warning from this logger'] and not logger.filters


def test_no_progress_leaves_no_datasets_progress_bar_in_the_log(ds, tmp_path, capfd, monkeypatch):
    """``--no-progress`` logs had "Generating train split: ..." bars from ``datasets`` at every start."""
    import datasets
    monkeypatch.delenv('HF_DATASETS_DISABLE_PROGRESS_BARS', raising=False)
    datasets.enable_progress_bars()
    shown = []
    for progress in (False, True):
        folder = tmp_path / f'copy_{progress}'  # a new folder, so that datasets generates its split again
        shutil.copytree(ds, folder)
        capfd.readouterr()
        assert len(load_split(str(folder), 'train', cache_dir=tmp_path / 'cache', progress=progress)) == 16
        shown.append('Generating train split' in capfd.readouterr().err)
    assert shown == [False, True]  # the bar is drawn where asked for, so the first check can fail
    assert not datasets.are_progress_bars_disabled()  # the setting is the caller's again afterwards
    with pytest.raises(DataError):
        load_split(str(ds), 'validation', progress=False)
    assert not datasets.are_progress_bars_disabled()  # also after an error
    datasets.disable_progress_bars()
    try:
        load_split(str(ds), 'train', cache_dir=tmp_path / 'cache', progress=True)
        assert datasets.are_progress_bars_disabled()  # a caller's own "off" stays off
    finally:
        datasets.enable_progress_bars()


@pytest.mark.slow
def test_real_cifar10_matches_hub_layout(cifar10_path):
    s = load_split(cifar10_path, 'test', limit=64)
    assert s.images.shape == (64, 3, 32, 32) and s.num_classes == 10 and s.class_names[0] == 'airplane'


def test_augment_is_a_crop_of_the_padded_image_or_its_mirror():
    """Each image is one 32x32 crop of its reflect-padded copy, mirrored or not; over 64 images the crops and the
    mirroring really vary (no augmentation at all would also be "a crop": the centred one, unmirrored)."""
    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32)
    out = augment_batch(x, generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode='reflect')
    draws = []
    for i in range(64):
        match = [(dy, dx, mirrored) for mirrored in (False, True) for dy in range(9) for dx in range(9)
                 if torch.equal(out[i].flip(2) if mirrored else out[i], padded[i][:, dy:dy + 32, dx:dx + 32])]
        assert len(match) == 1, (i, match)
        draws += match
    assert len({(dy, dx) for dy, dx, _ in draws}) >= 20  # of the 81 offsets
    assert 0.3 <= sum(m for _, _, m in draws) / 64 <= 0.7  # mirrored with probability 1/2


@pytest.mark.parametrize('cutout', [0, 8])
def test_augment_slices_of_a_global_batch_match_the_whole(cutout):
    x = torch.rand(8, 3, 32, 32)
    whole = augment_batch(x, generator=torch.Generator().manual_seed(1), cutout=cutout)
    halves = [augment_batch(x[i * 4:(i + 1) * 4], generator=torch.Generator().manual_seed(1), offset=i * 4, total=8,
                            cutout=cutout) for i in range(2)]
    assert torch.equal(torch.cat(halves), whole)


def test_mixup_blends_adjacent_pairs_and_slices_of_a_global_batch_match_the_whole():
    x, y = torch.rand(8, 3, 4, 4), torch.arange(8)
    lam = torch.tensor(0.7)
    mixed, y_pair = mixup_batch(x, y, lam)
    assert y_pair.tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
    torch.testing.assert_close(mixed[2], 0.7 * x[2] + 0.3 * x[3])
    # two processes holding halves of the global batch make the single process's pairs
    halves = [mixup_batch(x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4], lam) for i in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), mixed)
    assert torch.equal(torch.cat([h[1] for h in halves]), y_pair)
    # an odd batch's last image is its own pair; weight 1 leaves the images as they were
    odd, odd_pair = mixup_batch(x[:3], y[:3], lam)
    assert odd_pair.tolist() == [1, 0, 2] and torch.allclose(odd[2], x[2])
    assert torch.equal(mixup_batch(x, y, torch.tensor(1.0))[0], x)


def test_cutout_zeroes_one_clipped_square_and_keeps_the_crop_and_flip_draws():
    x = torch.rand(64, 3, 32, 32) + 0.1  # no pixel is zero before cutout
    plain = augment_batch(x, generator=torch.Generator().manual_seed(5))
    cut = augment_batch(x, generator=torch.Generator().manual_seed(5), cutout=8)
    zero = cut == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])  # all channels alike
    assert torch.equal(cut[~zero], plain[~zero])  # only the square changed
    for i in range(64):
        rows, cols = zero[i, 0].any(1).nonzero().flatten(), zero[i, 0].any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8  # a square of side 8, clipped at the border
        assert int(zero[i, 0].sum()) == len(rows) * len(cols)  # a full rectangle, nothing else
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)
    assert int(zero[:, 0].sum(dim=(1, 2)).max()) == 64  # some squares lie fully inside


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_unsafe_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned'
    bad = tmp_path / 'bad.pth'
    with open(bad, 'wb') as f:
        pickle.dump({'w': _Payload(str(marker))}, f)
    with pytest.raises(UnsafeCheckpointError, match='refused'):
        load_state_dict_safe(bad)
    assert not marker.exists()
    with open(bad, 'rb') as f:  # control: the payload is real, a plain unpickle runs it
        pickle.load(f)
    assert marker.exists()


def test_weights_only_pth_and_safetensors_load(tmp_path):
    sd = {'a': torch.ones(2), 'b': torch.zeros(3)}
    torch.save({'state_dict': sd}, tmp_path / 'w.pth')
    save_file(sd, str(tmp_path / 'w.safetensors'))
    for f in ('w.pth', 'w.safetensors'):
        out = load_state_dict_safe(tmp_path / f)
        assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)


def test_load_model_resolves_and_checks(tmp_path):
    m = timm.create_model('resnet20_mmc', feature_dim=8)
    from timm.models import save_for_hf
    save_for_hf(m, tmp_path / 'exp', model_args=m.model_args(), safe_serialization=True)
    ck = tmp_path / 'exp' / 'model.safetensors'
    x = torch.rand(2, 3, 32, 32)
    for loaded in (load_model('resnet20_mmc', checkpoint=ck), load_model(f'local-dir:{tmp_path / "exp"}')):
        assert torch.equal(loaded.eval()(x), m.eval()(x))
    with pytest.raises(ModelLoadError, match='unknown model'):
        load_model('resnet21_mmc')
    with pytest.raises(ModelLoadError, match='resnet20_mmc'):  # config.json beside it names the architecture
        load_model('resnet32_mmc', checkpoint=ck)
    with pytest.raises(ModelLoadError, match='no such folder'):
        load_model(f'local-dir:{tmp_path / "missing"}')


def test_load_model_takes_a_training_checkpoint(tmp_path):
    m = timm.create_model('resnet20_mmc', feature_dim=8)
    wrapped = {f'model.{k}': v for k, v in m.state_dict().items()}
    wrapped['loss_fn.centers'] = torch.zeros(3, 8)  # a loss with parameters (center loss) is saved beside it
    save_file(wrapped, str(tmp_path / 'model.safetensors'))
    loaded = load_model('resnet20_mmc', checkpoint=tmp_path / 'model.safetensors', feature_dim=8)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in m.state_dict().items())


def test_bundled_sample_loads_offline_and_matches_its_checksum():
    import hashlib
    s = load_split('cifar10-sample', 'test')
    assert s.images.shape == (500, 3, 32, 32) and s.images.dtype == torch.uint8 and s.num_classes == 10
    assert torch.bincount(s.labels, minlength=10).min() >= 30  # every class is there
    hwc = s.images.permute(0, 2, 3, 1).contiguous().numpy()
    sha = hashlib.sha256(hwc.tobytes() + s.labels.numpy().tobytes()).hexdigest()
    assert sha[:16] in s.source
    assert torch.equal(load_split('cifar10-sample', 'test', limit=7).labels, s.labels[:7])
    with pytest.raises(DataError, match='--split test') as exc:
        load_split('cifar10-sample', 'train')
    assert not isinstance(exc.value, TooFewExamples)  # a missing split is not a count to lower
    with pytest.raises(TooFewExamples, match='has 500') as exc:
        load_split('cifar10-sample', 'test', limit=501)
    assert (exc.value.asked, exc.value.have) == (501, 500)
    with pytest.raises(DataError, match='bundled samples'):
        load_split(str(Path('/nonexistent/x.npz')), 'test')


def test_write_sample_round_trips_through_load_split(ds, tmp_path):
    from timm_mmc.data import main, write_sample
    out = write_sample(str(ds), tmp_path / 's.npz', 5, split='test')
    a, b = load_split(str(out), 'test'), load_split(str(ds), 'test', limit=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.class_names == b.class_names
    assert main(['sample', '--dataset', str(ds), '--n', '100000', '--out', str(tmp_path / 'big.npz')]) == 2
    assert not (tmp_path / 'big.npz').exists()  # nothing half-written
    with pytest.raises(SystemExit) as e:
        main(['sample', '--dataset', str(ds), '--n', '3', '--out', str(tmp_path / 'x.bin')])
    assert e.value.code == 2


@pytest.mark.slow
def test_bundled_sample_is_the_first_500_real_test_images(cifar10_path):
    a, b = load_split('cifar10-sample', 'test'), load_split(cifar10_path, 'test', limit=500)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.class_names == b.class_names


def test_npz_folder_from_parquet_without_datasets_matches_the_hub_loader(ds, tmp_path, monkeypatch):
    """``python -m timm_mmc.data npz`` (pyarrow and Pillow only, for machines without ``datasets``) writes a folder of
    per-split .npz that --dataset takes: the same pixels, labels and class names as the Hub-layout loader."""
    import shutil
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    from timm_mmc.data import main, parquet_split_path
    from timm_mmc.npz import parquet_to_npz_folder
    out = parquet_to_npz_folder(ds, tmp_path / 'npz')
    assert sorted(p.name for p in out.iterdir()) == ['test.npz', 'train.npz']
    for split in ('train', 'test'):
        a, b = load_split(str(out), split), load_split(str(ds), split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.class_names == b.class_names
        assert b.source.split('sha256 ')[-1] in a.source  # the same pixel digest, named in the provenance
        assert a.digest == b.digest == b.source.split('sha256 ')[-1]  # what a resume compares
    monkeypatch.setitem(sys.modules, 'datasets', None)  # reading the folder never needs datasets
    assert torch.equal(load_split(str(out), 'train', limit=4).labels, load_split(str(out), 'train').labels[:4])
    with pytest.raises(DataError, match=r"has no split 'validation' \(it has \['test', 'train'\]\)"):
        load_split(str(out), 'validation')
    assert main(['npz', '--dataset', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'x')]) == 2
    assert not (tmp_path / 'x').exists()  # nothing half-written
    assert main(['npz', '--dataset', str(ds), '--splits', 'train', 'validation', '--out', str(tmp_path / 'z')]) == 2
    assert not (tmp_path / 'z').exists()  # the missing split is found before the train split is written
    bad = tmp_path / 'bad'
    shutil.copytree(ds, bad)
    pq.write_table(pa.table({'x': [1, 2], 'y': [0, 1]}), parquet_split_path(bad, 'test'))
    with pytest.raises(DataError, match=r"has columns \['x', 'y'\]: no Hub image struct or label column"):
        parquet_to_npz_folder(bad, tmp_path / 'b')
    assert not (tmp_path / 'b').exists()  # train decoded fine, but nothing was written
    table = pq.read_table(parquet_split_path(ds, 'test'))
    i = table.column_names.index('label')
    pq.write_table(table.set_column(i, 'label', table.column(i).cast(pa.float32())), parquet_split_path(bad, 'test'))
    with pytest.raises(DataError, match="label column 'label' holds float, not integer class labels"):
        parquet_to_npz_folder(bad, tmp_path / 'b')
    assert not (tmp_path / 'b').exists()
    for limit in ('0', '-1'):  # refused before anything is read
        assert main(['npz', '--dataset', str(ds), '--limit', limit, '--out', str(tmp_path / 'y')]) == 2
    assert not (tmp_path / 'y').exists()
    assert main(['npz', '--dataset', str(ds), '--splits', 'test', '--limit', '3', '--out', str(tmp_path / 'y')]) == 0
    assert load_split(str(tmp_path / 'y'), 'test').labels.shape == (3,)


def test_both_decoders_turn_images_upright_refuse_16_bit_and_count_classes_before_a_limit(tmp_path):
    """The parquet folder read by ``datasets`` and converted by ``timm_mmc.data npz`` give the same pixels for a JPEG
    with an EXIF orientation (turned upright), both refuse a 16-bit image (an 8-bit conversion would clip it at 255)
    and images of different sizes, and without class names a --limit slice still counts every class of the split."""
    import io

    import datasets
    import numpy as np
    from PIL import Image

    from timm_mmc.data import parquet_split_path
    from timm_mmc.npz import parquet_to_npz_folder

    def write(root, images, labels):  # the encoded bytes as they are (EXIF kept), integer labels without names
        cells = []
        for img, fmt, extra in images:
            buf = io.BytesIO()
            img.save(buf, format=fmt, **extra)
            cells.append({'bytes': buf.getvalue(), 'path': None})
        feats = datasets.Features(img=datasets.Image(), label=datasets.Value('int64'))
        for split in ('train', 'test'):
            path = parquet_split_path(root, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(dict(img=cells, label=labels), features=feats).to_parquet(str(path))

    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))  # not square: a turn changes its shape
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated 90 degrees
    square = [(Image.fromarray(rng.integers(0, 255, (48, 32, 3), dtype=np.uint8)), 'JPEG', {}) for _ in range(3)]
    write(tmp_path / 'exif', [(wide, 'JPEG', dict(exif=exif.tobytes())), *square], [0, 1, 2, 3])
    out = parquet_to_npz_folder(tmp_path / 'exif', tmp_path / 'npz', limit=2)
    a = load_split(str(out), 'train')
    b = load_split(str(tmp_path / 'exif'), 'train', cache_dir=tmp_path / 'cache', limit=2)
    assert a.images.shape == b.images.shape == (2, 3, 48, 32)  # upright: 48 high, as the other images
    assert torch.equal(a.images, b.images)
    assert a.class_names == b.class_names == ['0', '1', '2', '3']  # the slice holds classes 0 and 1 only
    deep = Image.fromarray(np.full((32, 32), 1000, np.uint16))
    assert deep.mode.startswith('I;16')
    write(tmp_path / 'deep', [(deep, 'PNG', {})] * 2, [0, 1])
    with pytest.raises(DataError, match='more than 8 bits'):
        parquet_to_npz_folder(tmp_path / 'deep', tmp_path / 'npz2')
    with pytest.raises(DataError, match='more than 8 bits'):
        load_split(str(tmp_path / 'deep'), 'train', cache_dir=tmp_path / 'cache')
    assert not (tmp_path / 'npz2').exists()
    small = (Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), 'PNG', {})
    write(tmp_path / 'mixed', [square[0], small], [0, 1])  # both decoders refuse images of different sizes
    with pytest.raises(DataError, match=r'image 1 has shape \(32, 32, 3\), the first \(48, 32, 3\); resize'):
        parquet_to_npz_folder(tmp_path / 'mixed', tmp_path / 'npz3')
    with pytest.raises(DataError, match='image 1 has shape'):
        load_split(str(tmp_path / 'mixed'), 'train', cache_dir=tmp_path / 'cache')
    assert not (tmp_path / 'npz3').exists()


def test_the_npz_converter_writes_every_split_or_none(ds, tmp_path, monkeypatch):
    import timm_mmc.npz as npz
    write = npz.write_npz_split

    def failing(path, *a, **k):
        if path.name == 'test.npz':
            raise OSError('disk full')
        return write(path, *a, **k)
    monkeypatch.setattr(npz, 'write_npz_split', failing)
    with pytest.raises(OSError, match='disk full'):
        npz.parquet_to_npz_folder(ds, tmp_path / 'out')
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the folder nor a temporary one
    monkeypatch.setattr(npz, 'write_npz_split', write)
    out = npz.parquet_to_npz_folder(ds, tmp_path / 'out')
    assert sorted(p.name for p in out.iterdir()) == ['test.npz', 'train.npz']
    from timm_mmc.fileio import current_umask
    assert out.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # a folder as mkdir makes it, not mkdtemp's 0o700
