"""timm's own style: every registered model name goes through the same contract checks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import timm_mmc
from timm_mmc.heads import HeadConfig

MODELS = sorted(timm.list_models(module='cifar_resnet'))
# the deep ones are slow on 2 cores in float32 backward; their blocks are the same code as the shallow ones
FAST = [m for m in MODELS if not m.startswith(('resnet110', 'resnet56'))]


def _x(n=2):
    torch.manual_seed(0)
    return torch.rand(n, 3, 32, 32)


def test_registry():
    for depth in (20, 32, 56, 110):
        for head in ('sce', 'mmc', 'mmlda', 'lgm', 'mmc_rand'):
            assert f'resnet{depth}_{head}' in MODELS
    assert {'resnet32v2_mmc', 'resnet32v2_sce'} <= set(MODELS)
    assert 'resnet32_mmc' in timm.list_models('*_mmc')
    assert 'mmc_wrapper' in timm.list_models(module='wrapper')


def test_list_pretrained_lists_the_released_tags_only():
    ours = timm.list_models(module=['cifar_resnet', 'wrapper'])
    listed = [n for n in timm.list_pretrained() if n.split('.', 1)[0] in ours]
    assert sorted(listed) == sorted(timm_mmc.models.RELEASED)
    assert 'resnet32_mmc.cifar100' not in timm.list_pretrained('resnet32*')
    assert timm.create_model('resnet32_mmc.cifar100').num_classes == 100  # unreleased tags are still creatable
    assert timm.get_pretrained_cfg('resnet32_mmc').tag == 'cifar10'  # the default tag is a released one


def test_released_tags_are_the_release_folders():
    hub_cards = Path(__file__).resolve().parents[1] / 'hub_cards'
    if not hub_cards.is_dir():
        pytest.skip('no hub_cards/ beside the tests (an installed package)')
    folders = sorted(p.name for p in hub_cards.iterdir() if (p / 'model.safetensors').is_file())
    assert folders == sorted(timm_mmc.models.RELEASED)


@pytest.mark.parametrize('name,needles', [
    ('resnet32_mmc.cifar10', ['timm-mmc/resnet32_mmc.cifar10',
                              'python -m timm_mmc.hub cache hub_cards/resnet32_mmc.cifar10',
                              'local-dir:hub_cards/resnet32_mmc.cifar10']),
    ('resnet20_mmc.cifar100', ['has no released weights', 'resnet32_mmc.cifar10', 'local-dir:FOLDER']),
])
def test_pretrained_offline_names_the_repo_and_the_local_route(name, needles, tmp_path):
    script = (f'import timm, timm_mmc\n'
              f'try:\n    timm.create_model({name!r}, pretrained=True)\n'
              f'except timm_mmc.models.PretrainedWeightsError as e:\n    print("ERROR", e)\n')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), HF_HUB_CACHE=str(tmp_path / 'hf' / 'hub'))
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    message = proc.stdout.split('ERROR', 1)[1]
    assert all(n in message for n in needles), message


@pytest.mark.parametrize('name', MODELS)
def test_forward_contract(name):
    m = timm.create_model(name).eval()
    x = _x()
    with torch.no_grad():
        feats = m.forward_features(x)
        z = m.forward_head(feats, pre_logits=True)
        logits = m(x)
    assert feats.shape == (2, m.num_features, 8, 8)
    assert z.shape == (2, m.head_hidden_size)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(m.get_classifier()(z), logits)


@pytest.mark.parametrize('name', ['resnet20_mmc', 'resnet32v2_sce'])
def test_forward_intermediates_and_features_only(name):
    m = timm.create_model(name).eval()
    x = _x()
    widths = [f['num_chs'] for f in m.feature_info]
    with torch.no_grad():
        final, maps = m.forward_intermediates(x)
        torch.testing.assert_close(final, m.forward_features(x))
        assert [t.shape[1:] for t in maps] == [(c, 32 // r, 32 // r) for c, r in
                                               zip(widths, [f['reduction'] for f in m.feature_info])]
        torch.testing.assert_close(maps[1], m.stages[0](m.stem(m.normalize(x))))  # normalised inside, as forward
        last = m.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(last[0], final)  # the last map with the final norm is forward_features
        early = m.forward_intermediates(x, indices=[0, 2], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[1], maps[2])
    with pytest.raises(ValueError, match='NCHW'):
        m.forward_intermediates(x, output_fmt='NHWC')

    f = timm.create_model(name, features_only=True, out_indices=(1, 2)).eval()
    assert f.feature_info.channels() == widths[1:3] and f.feature_info.reduction() == [1, 2]
    missing, _ = f.model.load_state_dict(m.state_dict(), strict=False)  # the same weights, fewer stages
    assert not missing
    with torch.no_grad():
        out = f(x)
    assert len(out) == 2
    torch.testing.assert_close(out[1], maps[2])
    assert not any(k.startswith(('stages.2', 'head.')) for k in f.model.state_dict())  # unused parts pruned
    f(x)[1].sum().backward()
    assert all(p.grad is not None for p in f.parameters())  # no parameter left unused (DDP would refuse it)
    assert f.model.num_features == widths[2]


@pytest.mark.parametrize('name', FAST)
def test_backward_reaches_every_parameter(name):
    m = timm.create_model(name, feature_dim=16)
    out = m(_x(4))
    loss = timm_mmc.build_loss(timm_mmc.default_loss_for_head(m.head_config.head), 10, 16)(out, torch.arange(4))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize('name', MODELS)
def test_reset_classifier(name):
    m = timm.create_model(name, feature_dim=16).eval()
    m.reset_classifier(5)
    assert m.num_classes == 5
    assert m(_x()).shape == (2, 5)
    m.reset_classifier(0)
    assert m(_x()).shape == (2, 16)


@pytest.mark.parametrize('name', MODELS)
def test_pretrained_cfg_complete(name):
    for tag, classes in (('cifar10', 10), ('cifar100', 100)):
        cfg = timm.get_pretrained_cfg(f'{name}.{tag}').to_dict()
        released = f'{name}.{tag}' in timm_mmc.models.RELEASED
        assert cfg.get('hf_hub_id') == (f'timm-mmc/{name}.{tag}' if released else None)
        assert cfg['num_classes'] == classes and len(cfg['label_names']) == classes
        assert cfg['classifier'] == 'head.classifier' and cfg['first_conv'] == 'stem.0'
        assert cfg['mean'] == (0.0, 0.0, 0.0) and cfg['std'] == (1.0, 1.0, 1.0)  # normalisation is inside
        assert cfg['license'] and cfg['paper_ids'] and cfg['input_size'] == (3, 32, 32)
    m = timm.create_model(f'{name}.cifar100')
    assert m.num_classes == 100
    assert isinstance(m.get_submodule('stem.0'), torch.nn.Conv2d)
    assert m.get_submodule('head.classifier') is m.get_classifier()


@pytest.mark.parametrize('name', MODELS)
def test_safetensors_round_trip(name, tmp_path):
    torch.manual_seed(1)
    m = timm.create_model(name, feature_dim=16).eval()
    path = tmp_path / 'w.safetensors'
    save_file(m.state_dict(), str(path))
    torch.manual_seed(2)
    m2 = timm.create_model(name, feature_dim=16).eval()
    m2.load_state_dict(load_file(str(path)))
    x = _x()
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_centers_not_in_state_dict_and_rebuilt():
    m = timm.create_model('resnet20_mmc')
    assert not any('centers' in k for k in m.state_dict())
    sd = m.state_dict()
    m100 = timm.create_model('resnet20_mmc', num_classes=100)
    m100.load_state_dict(sd)  # no size mismatch: the centers are not loaded
    assert m100.head.centers.shape == (100, 256)


def test_model_args_json_round_trip():
    m = timm.create_model('resnet20_mmc_rand', center_norm=5.0, feature_dim=32)
    args = json.loads(json.dumps(m.model_args()))
    assert args['center_kind'] == 'random' and args['center_norm'] == 5.0 and args['feature_dim'] == 32
    m2 = timm.create_model('resnet20_sce', **args)  # the args override the entry point's head
    assert torch.equal(m2.head.centers, m.head.centers)


def test_normalisation_is_a_buffer():
    m = timm.create_model('resnet20_mmc')
    assert 'mean' in dict(m.named_buffers()) and 'std' in dict(m.named_buffers())
    assert 'mean' in m.state_dict()


def test_drop_rate_drops_features_in_training_only():
    x = _x()
    m = timm.create_model('resnet20_mmc', drop_rate=0.5, feature_dim=16)
    assert m.head.drop.p == 0.5
    m.train()
    assert not torch.equal(m(x), m(x))  # a new mask each pass
    m.eval()
    assert torch.equal(m(x), m(x))
    plain = timm.create_model('resnet20_mmc', feature_dim=16).train()
    assert torch.equal(plain(x), plain(x))  # without it, training-mode passes agree (batch statistics are the same)


@pytest.mark.parametrize('name', ['resnet20_mmc', 'resnet32v2_sce'])
def test_zero_init_last_starts_every_block_as_its_shortcut(name):
    """With ``zero_init_last`` each residual block's output at initialisation is what its shortcut alone gives (after
    the ReLU of a basic block); without it, no block is."""
    import torch.nn.functional as F
    from timm_mmc.models.cifar_resnet import BasicBlock
    for zero in (True, False):
        torch.manual_seed(0)
        m = timm.create_model(name, zero_init_last=zero).train()
        h = m.stem(m.normalize(_x(4)))
        blocks = [b for stage in m.stages for b in stage]
        for block in blocks:
            shortcut = F.relu(block.shortcut(h)) if isinstance(block, BasicBlock) else block.proj(h)
            out = block(h)
            assert torch.allclose(out, shortcut, atol=1e-6) == zero, (name, zero)
            h = out
        assert 'zero_init_last' not in m.model_args()  # an initialisation, not part of the architecture


def test_param_counts_match_he_et_al():
    def backbone(name):
        m = timm.create_model(name)
        return sum(p.numel() for n, p in m.named_parameters() if not n.startswith('head'))
    assert round(backbone('resnet32_sce') / 1e6, 2) == 0.46
    assert round(backbone('resnet110_sce') / 1e6, 1) == 1.7


@pytest.mark.parametrize('kwargs,needle', [
    (dict(num_classes=1), 'num_classes'),
    (dict(feature_dim=0), 'feature_dim'),
    (dict(center_norm=0.0), 'center_norm'),
    (dict(head='bogus'), 'head'),
])
def test_bad_configuration(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        timm.create_model('resnet20_mmc', **kwargs)


def test_head_config_validation():
    with pytest.raises(ValueError, match='center_kind'):
        HeadConfig(center_kind='spiral')


@pytest.mark.parametrize('backbone', ['resnet18', 'convnext_atto', 'vit_tiny_patch16_224'])
def test_any_timm_backbone(backbone):
    kwargs = dict(img_size=32) if backbone.startswith('vit') else {}
    m = timm_mmc.create_mmc_model(backbone, head='mmc', num_classes=10, feature_dim=32, **kwargs).eval()
    x = _x()
    logits = m(x)
    z = m.forward_head(m.forward_features(x), pre_logits=True)
    assert logits.shape == (2, 10) and z.shape == (2, 32)
    torch.testing.assert_close(m.get_classifier()(z), logits)
    # logits are -||z - mu||^2 / 2 to the MM centers
    torch.testing.assert_close(logits, -0.5 * torch.cdist(z, m.head.centers) ** 2, atol=1e-3, rtol=1e-4)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)


def test_create_mmc_model_on_own_family_and_errors():
    m = timm_mmc.create_mmc_model('resnet20_mmlda', head='mmlda', num_classes=10)
    assert isinstance(m, timm_mmc.CifarResNet) and m.head_config.head == 'mmlda'
    # the name carries the head: another head under it would be a model whose name lies (and whose weights never load)
    with pytest.raises(ValueError, match=r"carries its own 'sce' head.*resnet20_mmlda"):
        timm_mmc.create_mmc_model('resnet20_sce', head='mmlda', num_classes=10)
    tagged = timm_mmc.create_mmc_model('resnet20_mmc.cifar10', num_classes=10)  # a tag: still built directly
    assert isinstance(tagged, timm_mmc.CifarResNet)
    with pytest.raises(ValueError, match='its own head'):  # never two heads stacked
        timm.create_model('mmc_wrapper', backbone='resnet32_mmc.cifar10')
    with pytest.raises(ValueError, match='unknown backbone'):
        timm_mmc.create_mmc_model('no_such_net')
    with pytest.raises(ValueError, match='num_classes'):
        timm_mmc.create_mmc_model('resnet18', num_classes=1)


@pytest.mark.parametrize('name', ['resnet20_sce', 'resnet20_mmc', 'resnet20_mmlda', 'resnet20_lgm'])
def test_pretrained_with_another_class_count(name, tmp_path):
    src = timm.create_model(name, feature_dim=16)
    path = tmp_path / 'w.safetensors'
    save_file(src.state_dict(), str(path))
    m = timm.create_model(name, pretrained=True, num_classes=5, feature_dim=16,
                          pretrained_cfg_overlay=dict(file=str(path)))
    assert m(_x()).shape == (2, 5)
    assert torch.equal(m.stem[0].weight, src.stem[0].weight)  # the backbone came from the file
    assert torch.equal(m.head.fc1.weight, src.head.fc1.weight)
