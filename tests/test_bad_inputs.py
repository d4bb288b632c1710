"""Bad input, one row each, for every command: a non-zero exit, a message that names the problem, nothing written.

To add a case, add a row to TRAIN, EVAL or HUB: an id, the arguments (``{data}``: a tiny image data set, ``{tmp}``:
this test's folder, ``{weights}``: weights of a tiny model with its config.json, ``{report}``: an evaluation report
of those weights), the words the message must contain, and optionally a setup function that plants files in
``{tmp}`` first. The test runs the command in-process and checks that ``{tmp}/out`` was not created.
"""
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import pytest
import timm
import torch

import eval.robustness as robustness
from timm_mmc import hub
from timm_mmc import train
from timm_mmc.data import write_synthetic_dataset


@dataclass
class Case:
    id: str
    argv: List[str]
    needles: Sequence[str]
    setup: Optional[Callable[[Path], None]] = None
    extra: List[str] = field(default_factory=list)


def _write(name: str, text: str) -> Callable[[Path], None]:
    def f(tmp: Path) -> None:
        (tmp / name).write_text(text)
    return f


def _npz(images: np.ndarray, labels: np.ndarray, **more) -> Callable[[Path], None]:
    def f(tmp: Path) -> None:
        np.savez(tmp / 'bad.npz', images=images, labels=labels, **more)
    return f


def _npz_folder(folder: Path, **classes: int) -> None:
    """An .npz data set folder, one file a split, each with its own number of class names."""
    folder.mkdir()
    for split, n in classes.items():
        np.savez(folder / f'{split}.npz', images=U8, labels=np.arange(8) % n, class_names=NAMES[:n], split=split)


def _save_tiny(folder: Path) -> None:
    """The tiny model's release-style folder (model.safetensors + config.json), the same weights every call."""
    from timm.models import save_for_hf
    torch.manual_seed(0)
    model = timm.create_model('resnet20_mmc', num_classes=4, feature_dim=16)
    save_for_hf(model, folder, model_args=model.model_args(), safe_serialization=True)


def _weights_copy(mutate: Callable[[Path], None]) -> Callable[[Path], None]:
    """The tiny model's folder in {tmp}/w, then ``mutate`` it."""
    def f(tmp: Path) -> None:
        _save_tiny(tmp / 'w')
        mutate(tmp / 'w')
    return f


def _truncate(folder: Path) -> None:
    p = folder / 'model.safetensors'
    p.write_bytes(p.read_bytes()[:200])


def _pickle_weights(folder: Path) -> None:
    (folder / 'model.safetensors').write_bytes(pickle.dumps({'a': 1}))


def _bad_config(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / 'config.json').write_text(text)


def _float_labels(tmp: Path) -> None:
    """A parquet data set in the Hub layout whose label column holds floats (they must not be rounded to classes)."""
    import datasets
    from PIL import Image
    feats = datasets.Features(img=datasets.Image(), label=datasets.Value('float32'))
    for split in ('train', 'test'):
        ds = datasets.Dataset.from_dict(dict(img=[Image.fromarray(a) for a in U8], label=[0.4, 1.9, 2.5, 0.99] * 2),
                                        features=feats)
        (tmp / 'fl').mkdir(exist_ok=True)
        ds.to_parquet(str(tmp / 'fl' / f'{split}-00000-of-00001.parquet'))


def _file(name: str) -> Callable[[Path], None]:
    return _write(name, 'not a folder')


def _existing_report(tmp: Path) -> None:
    (tmp / 'res').mkdir()
    (tmp / 'res' / 'r.json').write_text('{}')


U8 = np.zeros((8, 32, 32, 3), np.uint8)
NAMES = np.array(['a', 'b', 'c', 'd'])
# no --epochs / --batch-size here, so that the YAML rows can set them (flags override YAML); batch 128 is one step
TRAIN_BASE = ['--model', 'resnet20_mmc', '--dataset', '{data}', '--output', '{tmp}/out', '--feature-dim', '16',
              '--robust-every', '0', '--no-progress', '--threads', '1']

TRAIN = [
    Case('unknown-model', ['--model', 'resnet33_mmc'], ['unknown model']),
    Case('missing-dataset', ['--dataset', '{tmp}/nope'], ['does not exist']),
    Case('epochs-zero', ['--epochs', '0'], ['--epochs must be >= 1 (got 0)']),
    Case('lr-inf', ['--lr', 'inf'], ['--lr', 'finite']),
    Case('lr-nan', ['--lr', 'nan'], ['--lr', 'finite']),
    Case('cutout-negative', ['--cutout', '-1'], ['--cutout must be >= 0', '(got -1)']),
    Case('ema-decay-one', ['--ema-decay', '1'], ['--ema-decay must lie in [0, 1)', '(got 1.0)']),
    Case('schedule-choice', ['--schedule', 'linear'], ['schedule', 'onecycle']),
    Case('yaml-epochs-float', ['-c', '{tmp}/c.yaml'], ['epochs', 'integer', '1.5'], _write('c.yaml', 'epochs: 1.5\n')),
    Case('yaml-batch-float', ['-c', '{tmp}/c.yaml'], ['batch_size', 'integer'], _write('c.yaml', 'batch_size: 64.0\n')),
    Case('yaml-bool-as-string', ['-c', '{tmp}/c.yaml'], ['nesterov', 'true or false'],
         _write('c.yaml', 'nesterov: "yes"\n')),
    Case('yaml-malformed', ['-c', '{tmp}/c.yaml'], ['not valid YAML', 'c.yaml'], _write('c.yaml', 'epochs: [1,\n')),
    Case('yaml-not-mapping', ['-c', '{tmp}/c.yaml'], ['mapping'], _write('c.yaml', '- 1\n- 2\n')),
    Case('yaml-unknown-key', ['-c', '{tmp}/c.yaml'], ['unknown options', 'epochz'], _write('c.yaml', 'epochz: 3\n')),
    Case('recipe-unknown', ['-c', 'resnet99_mmc'], ['recipes', 'resnet32_mmc']),
    Case('resume-nothing', ['--resume'], ['no complete checkpoint', '--resume']),
    Case('resume-and-overwrite', ['--resume', '--overwrite'], ['contradict']),
    Case('output-is-file', ['--output', '{tmp}/f'], ['is a file'], _file('f')),
    Case('output-under-file', ['--output', '{tmp}/f/run'], ['cannot be written'], _file('f')),
    Case('test-every-zero', ['--test-every', '0'], ['--test-every', '>= 1']),
    Case('select-best-without-holdout', ['--select-best'], ['--holdout N']),
    Case('select-on-robust-not-every-epoch', ['--select-best', '--holdout', '10', '--robust-every', '5'],
         ['--robust-every 1', '--select-on clean']),
    Case('select-tolerance-percent', ['--select-tolerance', '1.5'], ['--select-tolerance', 'fraction', '0.015']),
    Case('holdout-too-large', ['--holdout', '100000'], ['--holdout 100000', 'between']),
    Case('adv-noise-negative', ['--adv-noise', '-1'], ['--adv-noise', '>= 0']),
    Case('mixup-off-last-without-mixup', ['--mixup-off-last', '1'], ['--mixup-off-last', 'acts only with --mixup']),
    Case('select-on-without-select-best', ['--select-on', 'clean'], ['--select-on', 'only with --select-best']),
    Case('select-tolerance-without-select-best', ['--select-tolerance', '0.01'],
         ['--select-tolerance', '--select-best']),
    Case('milestones-with-onecycle', ['--milestones', '1'], ['--milestones', 'only with --schedule step']),
    Case('gamma-with-cosine', ['--schedule', 'cosine', '--gamma', '0.5'], ['--gamma', 'only with --schedule step']),
    Case('adv-noise-without-nfgsm', ['--adv', 'fgsm', '--adv-noise', '1'], ['--adv-noise', 'only with --adv nfgsm']),
    Case('label-smoothing-two', ['--label-smoothing', '2'], ['--label-smoothing', '[0, 1)']),
    Case('label-smoothing-mmc', ['--label-smoothing', '0.1', '--batch-size', '8'],
         ['--label-smoothing', 'sce loss only', 'drop it']),
    Case('lambda-c-mmc', ['--lambda-c', '0.1', '--batch-size', '8'], ['--lambda-c', 'center loss only', 'drop it']),
    Case('lgm-alpha-mmc', ['--lgm-alpha', '0.3', '--batch-size', '8'], ['--lgm-alpha', 'lgm loss only', 'drop it']),
    Case('eps-not-a-number', ['--adv', 'pgd', '--eps', '8/x'], ["'8/x' is not a number", '8/255']),
    Case('grad-clip-negative', ['--grad-clip', '-1'], ['--grad-clip', '> 0']),
    Case('grad-clip-nan', ['--grad-clip', 'nan'], ['--grad-clip', 'finite']),
    Case('grad-clip-zero', ['--grad-clip', '0'], ['--grad-clip', 'leave it out']),
    Case('adv-ratio-no-image', ['--adv', 'fgsm', '--adv-ratio', '0.01', '--batch-size', '8'],
         ['--adv-ratio 0.01', 'no image', '0.125']),
    Case('test-split-more-classes', ['--dataset', '{tmp}/two', '--batch-size', '8'],
         ['test split has 4 classes', 'train split 3'],
         lambda tmp: _npz_folder(tmp / 'two', train=3, test=4)),
    Case('momentum-negative', ['--momentum', '-1'], ['--momentum', '[0, 1)']),
    Case('weight-decay-negative', ['--weight-decay', '-5'], ['--weight-decay', '>= 0']),
    Case('warmup-frac-seven', ['--warmup-frac', '7'], ['--warmup-frac', '[0, 1)']),
    Case('zero-init-with-init-from', ['--zero-init-last', '--init-from', '{tmp}/w.safetensors'],
         ['--zero-init-last', '--init-from', 'drop one of them']),
    Case('feature-dim-too-small', ['--feature-dim', '1'], ['too small', 'feature_dim']),
    Case('npz-float-images', ['--dataset', '{tmp}/bad.npz'], ['uint8', '255'],
         _npz(np.random.rand(8, 32, 32, 3).astype(np.float32), np.arange(8) % 4, class_names=NAMES)),
    Case('npz-negative-labels', ['--dataset', '{tmp}/bad.npz'], ['outside', '-1'],
         _npz(U8, np.arange(8) % 4 - 1, class_names=NAMES)),
    Case('npz-one-channel', ['--dataset', '{tmp}/bad.npz', '--batch-size', '8'],
         ['have 1 channel(s)', 'takes 3', 'gray channel repeated'],
         _npz(U8[..., :1], np.arange(8) % 4, class_names=NAMES)),
    Case('npz-constant-channel', ['--dataset', '{tmp}/bad.npz', '--batch-size', '8'],
         ['channel(s) [1]', 'one value', 'divide by zero'],
         _npz(np.random.default_rng(0).integers(0, 256, U8.shape, np.uint8) * np.array([1, 0, 1], np.uint8),
              np.arange(8) % 4, class_names=NAMES)),
    Case('npz-missing-keys', ['--dataset', '{tmp}/bad.npz'], ['no labels'],
         lambda tmp: np.savez(tmp / 'bad.npz', images=U8)),
    Case('npz-not-npz', ['--dataset', '{tmp}/bad.npz'], ['not a readable .npz'], _write('bad.npz', 'hello')),
    Case('parquet-float-labels', ['--dataset', '{tmp}/fl'], ['label', 'not integer class labels'], _float_labels),
    Case('init-from-truncated', ['--init-from', '{tmp}/w/model.safetensors'], ['not a readable safetensors'],
         _weights_copy(_truncate)),
    Case('init-from-pickle', ['--init-from', '{tmp}/w/model.safetensors'], ['not a readable safetensors'],
         _weights_copy(_pickle_weights)),
    Case('init-from-bad-config', ['--init-from', '{tmp}/w/model.safetensors'], ['not readable JSON'],
         _weights_copy(_bad_config('{"architecture": '))),
    Case('init-from-missing-file', ['--init-from', '{tmp}/gone/model.safetensors'],
         ['no such file or folder', 'a release or run folder', 'hf-hub:ORG/REPO']),
    Case('init-from-folder-without-weights', ['--init-from', '{tmp}/empty'], ['folder without model.safetensors'],
         lambda tmp: (tmp / 'empty').mkdir()),
    Case('init-from-unknown-name', ['--init-from', 'resnet99_mmc.cifar10'],
         ['no file or folder here', 'resnet99_mmc', 'released name with its tag']),
]

EVAL_BASE = ['--model', 'resnet20_mmc', '--checkpoint', '{weights}', '--dataset', '{data}', '--n-examples', '8',
             '--suite', 'quick', '--attacks', 'pgd', '--pgd-steps', '1', '--eps', '8/255', '--out', '{tmp}/out',
             '--no-progress', '--threads', '1']

EVAL = [
    Case('out-is-file', ['--out', '{tmp}/f'], ['is a file'], _file('f')),
    Case('out-under-file', ['--out', '{tmp}/f/res'], ['cannot be written'], _file('f')),
    Case('name-with-folder', ['--name', '../x'], ['plain file name']),
    Case('name-dotdot', ['--name', '..'], ['plain file name']),
    Case('existing-report', ['--out', '{tmp}/res', '--name', 'r'], ['already exists', '--overwrite'],
         _existing_report),
    Case('bad-out-before-bad-checkpoint', ['--out', '{tmp}/f', '--checkpoint', '{tmp}/none.safetensors'],
         ['is a file'], _file('f')),  # output checks come before any loading
    Case('checkpoint-missing', ['--checkpoint', '{tmp}/none.safetensors'], ['does not exist']),
    Case('eps-repeated', ['--eps', '8/255', '4/255', '8/255'], ['--eps repeats 8', 'once']),
    Case('pgd-steps-repeated', ['--pgd-steps', '1', '1'], ['--pgd-steps repeats 1']),
    Case('noise-sigma-repeated', ['--suite', 'paper', '--attacks', 'noise', '--noise-sigma', '0.05', '0.050'],
         ['--noise-sigma repeats 0.05']),
    Case('checkpoint-truncated', ['--checkpoint', '{tmp}/w/model.safetensors'], ['not a readable safetensors'],
         _weights_copy(_truncate)),
    Case('checkpoint-pickle', ['--checkpoint', '{tmp}/w/model.safetensors'], ['not a readable safetensors'],
         _weights_copy(_pickle_weights)),
    Case('config-corrupt', ['--checkpoint', '{tmp}/w/model.safetensors'], ['not readable JSON'],
         _weights_copy(_bad_config('{oops'))),
    Case('config-bad-model-args', ['--checkpoint', '{tmp}/w/model.safetensors'], ['model_args'],
         _weights_copy(_bad_config(json.dumps(dict(architecture='resnet20_mmc', num_classes=4,
                                                   model_args=dict(feature_dim='wide')))))),
    Case('npz-float-images', ['--dataset', '{tmp}/bad.npz'], ['uint8'],
         _npz(np.random.rand(8, 32, 32, 3).astype(np.float32), np.arange(8) % 4, class_names=NAMES, split='test')),
    Case('npz-labels-out-of-range', ['--dataset', '{tmp}/bad.npz'], ['outside'],
         _npz(U8, np.arange(8) % 4 + 1, class_names=NAMES, split='test')),
    Case('unknown-model', ['--model', 'resnet33_mmc'], ['unknown model']),
    Case('npz-changed-after-writing', ['--dataset', '{tmp}/bad.npz'], ['stored sha256', 'changed after writing'],
         _npz(U8, np.arange(8) % 4, class_names=NAMES, split='test', sha256='0' * 64)),
    Case('image-column-not-images', ['--image-column', 'label'], ['--image-column', "'label'", 'not images']),
    Case('label-column-not-labels', ['--label-column', 'img'], ['--label-column', "'img'", 'not integer class labels']),
    Case('parquet-float-labels', ['--dataset', '{tmp}/fl'], ['label', 'not integer class labels'], _float_labels),
]

HUB = [
    Case('export-run-missing', ['export', '--run', '{tmp}/none', '--eval', '{report}', '--out', '{tmp}/out'],
         ['not a folder']),
    Case('export-eval-missing', ['export', '--run', '{weights_dir}', '--eval', '{tmp}/none.json', '--out',
                                 '{tmp}/out'], ['none.json']),
    Case('export-eval-not-json', ['export', '--run', '{weights_dir}', '--eval', '{tmp}/r.json', '--out', '{tmp}/out'],
         ['r.json'], _write('r.json', '{not json')),
    Case('card-not-a-release', ['card', '{tmp}'], ['not a release folder']),
    Case('export-out-under-file', ['export', '--run', '{weights_dir}', '--eval', '{report}', '--out', '{tmp}/f/rel'],
         ['--out', 'cannot be written'], _file('f')),
    Case('cache-dir-under-file', ['cache', '{weights_dir}', '--cache-dir', '{tmp}/f/cache'],
         ['--cache-dir', 'cannot be written'], _file('f')),
    Case('push-not-a-release', ['push', '{tmp}', '--repo-id', 'me/x', '--dry-run'], ['model.safetensors', 'missing']),
]


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp('bad_inputs')
    data = write_synthetic_dataset(root / 'ds')
    weights_dir = root / 'weights'
    _save_tiny(weights_dir)
    return dict(data=str(data), weights=str(weights_dir / 'model.safetensors'), weights_dir=str(weights_dir),
                report=str(root / 'report.json'))


def _fill(args: Sequence[str], values) -> List[str]:
    return [a.format(**values) for a in args]


def _call(fn, argv) -> int:
    try:
        return fn(argv)
    except SystemExit as e:  # argparse
        return e.code


def _check(case: Case, fn, base: Sequence[str], env, tmp_path, capsys) -> None:
    values = dict(env, tmp=str(tmp_path))
    if case.setup:
        case.setup(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob('*'))
    code = _call(fn, _fill([*base, *case.argv], values))
    err = capsys.readouterr().err
    assert code == 2, (code, err)  # bad input: 2 from every command, as argparse gives it
    message = err.rsplit('error:', 1)[-1]  # not argparse's usage lines, which name every flag
    for needle in case.needles:
        assert needle in message, (needle, err)
    assert 'Traceback' not in err
    assert sorted(str(p) for p in tmp_path.rglob('*')) == before  # nothing written, not even an empty folder


@pytest.mark.parametrize('case', TRAIN, ids=[c.id for c in TRAIN])
def test_train_bad_input(case, env, tmp_path, capsys):
    _check(case, train.main, TRAIN_BASE, env, tmp_path, capsys)


@pytest.mark.parametrize('case', EVAL, ids=[c.id for c in EVAL])
def test_eval_bad_input(case, env, tmp_path, capsys):
    _check(case, robustness.main, EVAL_BASE, env, tmp_path, capsys)


@pytest.mark.parametrize('case', HUB, ids=[c.id for c in HUB])
def test_hub_bad_input(case, env, tmp_path, capsys):
    _check(case, hub.main, [], env, tmp_path, capsys)


def test_the_table_is_large_enough():
    assert len(TRAIN) + len(EVAL) + len(HUB) >= 30
