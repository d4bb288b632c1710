"""An MM head on any timm backbone (issue 15): one name, ``BACKBONE+HEAD``, through every command.

The backbone is timm's ``test_resnet`` (0.37M parameters, builds and runs on 32x32 input in milliseconds). The
commands run as a user runs them, in fresh interpreters with ``HF_HUB_OFFLINE=1`` and an empty Hugging Face cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf

import timm_mmc  # noqa: F401  registers the models
from timm_mmc.data import write_synthetic_dataset
from timm_mmc.heads import HEADS
from timm_mmc.io import ModelLoadError, load_model
from timm_mmc.models import (WRAPPER_ARCH, MMCWrapper, PretrainedWeightsError, model_display_name, release_name,
                             resolve_model_name)

REPO = Path(__file__).resolve().parents[1]
BACKBONE = 'test_resnet'
NAME = f'{BACKBONE}+mmc'
RELEASE = f'{BACKBONE}-mmc.cifar10'


def _x(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _same_weights(model: torch.nn.Module, ref: dict) -> bool:
    sd = model.state_dict()
    return set(sd) == set(ref) and all(sd[k].equal(ref[k]) for k in ref)


@pytest.mark.parametrize('spec,timm_name,args', [
    ('resnet18+mmc', WRAPPER_ARCH, dict(backbone='resnet18', head='mmc', center_kind='mm')),
    ('resnet18+sce.cifar100', f'{WRAPPER_ARCH}.cifar100', dict(backbone='resnet18', head='linear', center_kind='mm')),
    ('convnext_atto+mmc_rand', WRAPPER_ARCH, dict(backbone='convnext_atto', head='mmc', center_kind='random')),
    ('test_resnet-mmlda.cifar10_at', f'{WRAPPER_ARCH}.cifar10_at', dict(backbone='test_resnet', head='mmlda',
                                                                         center_kind='mm')),
    ('resnet32_mmc.cifar10', 'resnet32_mmc.cifar10', {}),
    ('resnet18', 'resnet18', {}),
])
def test_resolve_model_name(spec, timm_name, args):
    assert resolve_model_name(spec) == (timm_name, args)


@pytest.mark.parametrize('spec,needle', [
    ('resnet18+bogus', 'one of sce, mmc'),
    ('no_such_net+mmc', 'unknown backbone'),
    ('resnet32_mmc+mmc', 'own head'),
    ('resnet33_mmc', 'unknown model'),
    ('resnet18.a1_in1k+mmc', r'takes no pretrained tag .*write resnet18\+mmc .*--pretrained-backbone'),
])
def test_resolve_model_name_refuses_with_the_fix(spec, needle):
    with pytest.raises(ValueError, match=needle):
        resolve_model_name(spec)


@pytest.mark.parametrize('suffix', list(HEADS))
def test_every_head_round_trips_through_its_names(suffix):
    timm_name, args = resolve_model_name(f'{BACKBONE}+{suffix}.cifar10')
    model = timm.create_model(timm_name, feature_dim=8, **args)
    assert model.name == model_display_name(WRAPPER_ARCH, model.model_args()) == f'{BACKBONE}+{suffix}'
    name = release_name(WRAPPER_ARCH, model.model_args(), 'cifar10')
    assert name == f'{BACKBONE}-{suffix}.cifar10' and set(name) <= set('abcdefghijklmnopqrstuvwxyz0123456789-_.')
    assert resolve_model_name(name) == (timm_name, args)  # the release name is a model name too


def test_registered_model_follows_the_timm_contract_with_its_own_cfg():
    m = timm.create_model(WRAPPER_ARCH, backbone=BACKBONE, head='mmc', num_classes=10, feature_dim=16).eval()
    assert isinstance(m, MMCWrapper) and m.head_config.head == 'mmc' and m.head_hidden_size == 16
    x = _x()
    with torch.no_grad():
        z = m.forward_head(m.forward_features(x), pre_logits=True)
        logits = m(x)
    assert logits.shape == (2, 10) and z.shape == (2, 16)
    torch.testing.assert_close(logits, -0.5 * torch.cdist(z, m.head.centers) ** 2, atol=1e-3, rtol=1e-4)
    cfg = m.pretrained_cfg
    assert not cfg.get('hf_hub_id') and cfg['mean'] == (0.0, 0.0, 0.0) and cfg['std'] == (1.0, 1.0, 1.0)
    assert cfg['input_size'] == (3, 32, 32) and cfg['classifier'] == 'head.classifier'
    assert isinstance(m.get_submodule(cfg['first_conv']), torch.nn.Conv2d)  # the backbone's stem, seen from here
    assert {'mean', 'std'} <= set(m.state_dict())  # normalisation travels with the weights
    assert not any('centers' in k for k in m.state_dict())
    assert WRAPPER_ARCH not in ' '.join(timm.list_pretrained())  # no weights of its own to list


def test_export_reloads_through_config_json(tmp_path):
    torch.manual_seed(3)
    m = timm.create_model(WRAPPER_ARCH, backbone=BACKBONE, head='lgm', num_classes=4, feature_dim=8,
                          norm_mean=(0.4, 0.5, 0.6), norm_std=(0.2, 0.25, 0.3)).eval()
    save_for_hf(m, str(tmp_path), model_args=m.model_args(), safe_serialization=True)
    cfg = json.loads((tmp_path / 'config.json').read_text())
    assert cfg['architecture'] == WRAPPER_ARCH and cfg['model_args']['backbone'] == BACKBONE
    assert cfg['pretrained_cfg']['first_conv'] == m.pretrained_cfg['first_conv']
    ref = load_file(str(tmp_path / 'model.safetensors'))
    with torch.no_grad():
        y = m(_x())
    for loaded in (timm.create_model(f'local-dir:{tmp_path}', pretrained=True),
                   load_model(f'local-dir:{tmp_path}'),
                   load_model('test_resnet+lgm', checkpoint=tmp_path / 'model.safetensors'),
                   timm.create_model(WRAPPER_ARCH, pretrained=True, **cfg['model_args'],
                                     pretrained_cfg_overlay=dict(file=str(tmp_path / 'model.safetensors')))):
        assert _same_weights(loaded, ref)
        with torch.no_grad():
            assert loaded.eval()(_x()).equal(y)
    with pytest.raises(ModelLoadError, match="is a 'test_resnet\\+lgm'.*--model test_resnet\\+lgm"):
        load_model('test_resnet+mmc', checkpoint=tmp_path / 'model.safetensors')


def test_features_only_gives_the_backbone_maps_of_the_normalised_input(tmp_path):
    torch.manual_seed(4)
    m = timm.create_model(WRAPPER_ARCH, backbone=BACKBONE, num_classes=10, norm_mean=(0.4, 0.5, 0.6),
                          norm_std=(0.2, 0.25, 0.3)).eval()
    assert [f['num_chs'] for f in m.feature_info] == [f['num_chs'] for f in m.backbone.feature_info]
    assert all(isinstance(m.get_submodule(f['module']), torch.nn.Module) for f in m.feature_info)
    save_for_hf(m, str(tmp_path), model_args=m.model_args(), safe_serialization=True)
    f = timm.create_model(f'local-dir:{tmp_path}', pretrained=True, features_only=True, out_indices=(1, 2)).eval()
    assert f.feature_info.channels() == [m.feature_info[i]['num_chs'] for i in (1, 2)]
    assert f.model.num_classes == 0 and f.model.num_features == m.feature_info[2]['num_chs']
    pruned = ('model.backbone.layer3.', 'model.backbone.layer4.', 'model.head.')  # after map 2, and the MM head
    assert not any(k.startswith(pruned) for k in f.state_dict())
    assert 'model.backbone.layer2.0.conv1.weight' in f.state_dict()
    x = _x()
    with torch.no_grad():
        maps = f(x)
        ref = m.backbone.forward_intermediates(m.normalize(x), indices=[1, 2], intermediates_only=True)
    assert len(maps) == 2 and all(a.equal(b) for a, b in zip(maps, ref))  # the released weights, normalised inside
    assert not maps[0].equal(m.backbone.forward_intermediates(x, indices=[1], intermediates_only=True)[0])


def test_features_only_defaults_to_every_map_of_the_backbone():
    for backbone in ('test_convnext', BACKBONE):  # 4 and 5 maps: no fixed default count
        m = timm.create_model(WRAPPER_ARCH, backbone=backbone, features_only=True).eval()
        n = len(timm.create_model(backbone).feature_info)
        with torch.no_grad():
            assert len(m(_x())) == n == len(m.feature_info.channels())


def test_create_mmc_model_builds_the_registered_wrapper():
    m = timm_mmc.create_mmc_model(BACKBONE, head='mmlda', num_classes=10, feature_dim=8)
    assert isinstance(m, MMCWrapper) and m.name == f'{BACKBONE}+mmlda'
    assert m.pretrained_cfg['architecture'] == WRAPPER_ARCH and not m.pretrained_cfg.get('hf_hub_id')


def test_a_backbone_file_is_adapted_as_timm_adapts_its_own_weights(tmp_path):
    """A ViT built for 32x32 images takes its default-size weights as timm would (position embedding resampled by
    the family's checkpoint filter); a tensor that still does not fit is a clear refusal, not a traceback."""
    src = timm.create_model('test_vit', num_classes=0)
    path = tmp_path / 'vit.safetensors'
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    m = timm.create_model(WRAPPER_ARCH, backbone='test_vit', num_classes=10, img_size=32)
    assert m.backbone.pos_embed.shape[1] < src.pos_embed.shape[1]
    assert 'test_vit from' in m.load_backbone_weights(path)
    assert m.backbone.blocks[0].attn.qkv.weight.equal(src.blocks[0].attn.qkv.weight)
    wide = timm.create_model(WRAPPER_ARCH, backbone='test_vit', num_classes=10, img_size=32, embed_dim=32)
    with pytest.raises(PretrainedWeightsError, match='does not fit'):
        wide.load_backbone_weights(path)


def test_a_new_global_pool_survives_the_rebuild_from_model_args():
    m = timm.create_model(WRAPPER_ARCH, backbone=BACKBONE, num_classes=10, feature_dim=16).eval()
    m.reset_classifier(10, global_pool='max')
    assert m.model_args()['global_pool'] == 'max'
    again = timm.create_model(WRAPPER_ARCH, **m.model_args()).eval()
    again.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(again(_x()), m(_x()))


def test_backbone_weights_from_a_file_and_refused_when_they_do_not_fit(tmp_path):
    src = timm.create_model(BACKBONE, num_classes=1000)  # with its classifier, as timm's own files hold it
    path = tmp_path / 'backbone.safetensors'
    save_file(src.state_dict(), str(path))
    m = timm.create_model(WRAPPER_ARCH, backbone=BACKBONE, num_classes=10)
    head_before = m.head.fc1.weight.clone()
    assert 'test_resnet from' in m.load_backbone_weights(path)
    own = m.backbone.state_dict()
    assert all(own[k].equal(v) for k, v in src.state_dict().items() if k in own)
    assert m.head.fc1.weight.equal(head_before)  # the head is not the backbone's
    other = tmp_path / 'other.safetensors'
    save_file(timm.create_model('test_convnext', num_classes=0).state_dict(), str(other))
    with pytest.raises(PretrainedWeightsError, match='does not hold the weights'):
        m.load_backbone_weights(other)


def test_a_pretrained_backbone_keeps_the_normalisation_its_weights_were_trained_with(tmp_path):
    """From scratch the model normalises by the training images' statistics; a --pretrained-backbone keeps the mean
    and std of its timm pretrained config (inputs scaled as in its pretraining), and says so."""
    from timm_mmc.config import TrainConfig
    from timm_mmc.data import load_split
    from timm_mmc.train_parts import build_model, resolve_model
    data = write_synthetic_dataset(tmp_path / 'd', n_train=16, n_test=8)
    train_set = load_split(str(data), 'train', cache_dir=tmp_path / 'cache')
    path = tmp_path / 'backbone.safetensors'
    save_file(timm.create_model(BACKBONE, num_classes=0).state_dict(), str(path))
    own = timm.create_model(BACKBONE).pretrained_cfg
    said = []
    for backbone in (None, str(path)):
        cfg = TrainConfig(model=NAME, dataset=str(data), pretrained_backbone=backbone)
        model = build_model(cfg, *resolve_model(cfg), train_set, said.append)
        got = (model.mean.flatten().tolist(), model.std.flatten().tolist())
        if backbone is None:
            pixels = train_set.images.float().div(255)
            assert got[0] == pytest.approx(pixels.mean((0, 2, 3)).tolist(), abs=1e-5)
        else:
            assert got == (pytest.approx(list(own['mean'])), pytest.approx(list(own['std'])))
    assert len(said) == 1 and 'input normalisation: its own' in said[0]


def test_zero_init_last_reaches_the_model_and_a_backbone_without_it_is_refused_clearly(tmp_path):
    """``--zero-init-last`` builds a CIFAR ResNet with every block's last batch-norm scale zero and reaches a wrapped
    timm ResNet; a wrapped backbone that has no such argument is refused with the model named, not a traceback."""
    from timm_mmc.config import TrainConfig
    from timm_mmc.data import load_split
    from timm_mmc.train_parts import TrainError, build_model, resolve_model
    data = write_synthetic_dataset(tmp_path / 'd', n_train=16, n_test=8)
    train_set = load_split(str(data), 'train', cache_dir=tmp_path / 'cache')
    for zero in (True, False, None):
        cfg = TrainConfig(model='resnet20_mmc', dataset=str(data), zero_init_last=zero)
        model = build_model(cfg, *resolve_model(cfg), train_set, print)
        scales = [b.bn2.weight for stage in model.stages for b in stage]
        assert len(scales) == 9 and all(bool((w == 0).all()) == bool(zero) for w in scales)
    for zero in (True, False):  # timm's ResNet zeroes by default: --no-zero-init-last reaches it too
        cfg = TrainConfig(model=NAME, dataset=str(data), zero_init_last=zero)
        assert build_model(cfg, *resolve_model(cfg), train_set, print).backbone.layer1[0].bn2.weight.any() != zero
    cfg = TrainConfig(model='test_efficientnet+mmc', dataset=str(data), zero_init_last=True)
    with pytest.raises(TrainError, match="cannot build 'test_efficientnet\\+mmc' with --zero-init-last.*drop the flag"):
        build_model(cfg, *resolve_model(cfg), train_set, print)


# -- the commands, as a user runs them ---------------------------------------------------------------------------

def _env(tmp: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp / 'hf_home'), HF_HUB_CACHE=str(tmp / 'hf_cache'),
               OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    env.pop('HF_TOKEN', None)
    return env


def _run(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], env=_env(tmp), cwd=str(tmp), capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """``python -m timm_mmc.train --model test_resnet+mmc`` on the tiny synthetic set, then its evaluation."""
    tmp = tmp_path_factory.mktemp('wrapped')
    data = write_synthetic_dataset(tmp / 'cifar10', n_train=64, n_test=32)  # named so: the release tag is cifar10
    run = tmp / 'runs' / 'wrapped'
    train = _run(tmp, '-m', 'timm_mmc.train', '--model', NAME, '--dataset', str(data), '--output', str(run),
                 '--epochs', '2', '--batch-size', '32', '--feature-dim', '16', '--robust-every', '0', '--no-progress',
                 '--threads', '1')
    ev = _run(tmp, '-m', 'eval.robustness', '--model', NAME, '--checkpoint', str(run / 'model.safetensors'),
              '--dataset', str(data), '--n-examples', '8', '--suite', 'quick', '--attacks', 'pgd', '--out',
              str(tmp / 'results'), '--name', 'wrapped', '--no-progress', '--batch-size', '8')
    return dict(tmp=tmp, data=data, run=run, train=train, eval=ev, report=tmp / 'results' / 'wrapped.json')


def test_train_and_evaluate_by_name(trained):
    cfg = json.loads((trained['run'] / 'config.json').read_text())
    assert cfg['architecture'] == WRAPPER_ARCH and cfg['num_classes'] == 4
    assert model_display_name(cfg['architecture'], cfg['model_args']) == NAME
    assert cfg['model_args']['feature_dim'] == 16 and len(cfg['model_args']['norm_mean']) == 3
    assert not cfg['pretrained_cfg'].get('hf_hub_id')  # never the backbone's ImageNet repo
    assert f'claim: {NAME}, 2 epochs' in trained['train'].stdout + trained['train'].stderr
    hist = [json.loads(line) for line in (trained['run'] / 'metrics.jsonl').read_text().splitlines()]
    assert len(hist) == 2 and hist[-1]['train_loss'] < hist[0]['train_loss']
    rep = json.loads(trained['report'].read_text())
    assert rep['model'] == NAME and rep['n'] == 8
    # the same weights through local-dir: give the same clean accuracy
    again = _run(trained['tmp'], '-m', 'eval.robustness', '--model', f'local-dir:{trained["run"]}', '--dataset',
                 str(trained['data']), '--n-examples', '8', '--suite', 'quick', '--attacks', 'pgd', '--out',
                 str(trained['tmp'] / 'results'), '--name', 'wrapped_local_dir', '--no-progress', '--batch-size', '8')
    assert again.returncode == 0
    rep2 = json.loads((trained['tmp'] / 'results' / 'wrapped_local_dir.json').read_text())
    assert rep2['clean_accuracy'] == rep['clean_accuracy'] and rep2['checkpoint_sha256'] == rep['checkpoint_sha256']


def test_export_cache_and_reload_by_name_offline(trained):
    tmp = trained['tmp']
    out = tmp / 'hub_cards' / RELEASE
    proc = _run(tmp, '-m', 'timm_mmc.hub', 'export', '--run', str(trained['run']), '--eval', str(trained['report']),
                '--out', str(out), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'exported {NAME}.cifar10' in proc.stdout
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == WRAPPER_ARCH and cfg['pretrained_cfg']['tag'] == 'cifar10'
    assert f'timm-mmc/{RELEASE}' in (out / 'README.md').read_text()
    _run(tmp, '-m', 'timm_mmc.hub', 'cache', str(out))  # into HF_HUB_CACHE, as hub_cards/ releases are
    script = f'''
import json, timm, timm_mmc
from safetensors.torch import load_file
from timm_mmc.io import load_model
ref = load_file({str(out / "model.safetensors")!r})
same = lambda m: set(m.state_dict()) == set(ref) and all(m.state_dict()[k].equal(v) for k, v in ref.items())
res = dict(
    local_dir=same(load_model('local-dir:{out}')),
    hf_hub=same(timm.create_model('hf-hub:timm-mmc/{RELEASE}', pretrained=True)),
    by_name=same(load_model('{NAME}.cifar10', pretrained=True, feature_dim=16, num_classes=4)),
    by_release_name=same(load_model('{RELEASE}', pretrained=True, feature_dim=16, num_classes=4)),
    timm_name=same(timm.create_model('{WRAPPER_ARCH}.cifar10', backbone='{BACKBONE}', pretrained=True,
                                     feature_dim=16, num_classes=4)))
print('RESULT' + json.dumps(res))
'''
    res = json.loads(_run(tmp, '-c', script).stdout.split('RESULT', 1)[1])
    assert res == dict(local_dir=True, hf_hub=True, by_name=True, by_release_name=True, timm_name=True)


def test_pretrained_backbone_offline_names_the_offline_route(trained, tmp_path):
    proc = _run(trained['tmp'], '-m', 'timm_mmc.train', '--model', NAME, '--pretrained-backbone', 'timm',
                '--dataset', str(trained['data']), '--output', str(tmp_path / 'run'), '--epochs', '1',
                '--batch-size', '32', '--no-progress', check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'timm/test_resnet' in proc.stderr and '--pretrained-backbone path/to/model.safetensors' in proc.stderr
    assert not (tmp_path / 'run' / 'model.safetensors').exists()


@pytest.mark.parametrize('args,needle', [
    (['--model', 'resnet18'], 'resnet18+mmc'),  # a plain timm model: the fix is to name a head
    (['--model', 'resnet20_mmc', '--pretrained-backbone', 'timm'], 'BACKBONE+HEAD'),
    (['--model', NAME, '--pretrained-backbone', 'missing.safetensors'], 'existing safetensors file'),
])
def test_train_refuses_with_the_fix(trained, tmp_path, capsys, args, needle):
    from timm_mmc.train import main
    out = tmp_path / 'run'
    assert main([*args, '--dataset', str(trained['data']), '--output', str(out), '--epochs', '1', '--no-progress']) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
