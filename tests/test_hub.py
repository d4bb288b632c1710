"""Tests for ``timm_mmc.hub``: export, card, push and the offline ``pretrained=True`` paths (issue #6).

Every fixture is built here: a tiny trained ``resnet20_mmc`` (registered defaults, two SGD steps on random data), a
run folder as ``timm_mmc/train.py`` writes it and an evaluation JSON as ``python -m eval.robustness`` writes it.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import timm
import timm_mmc  # noqa: F401  registers the models
from timm_mmc import hub
from timm_mmc.centers import mm_centers

ARCH, TAG = 'resnet20_mmc', 'cifar10'
REPO = f'timm-mmc/{ARCH}.{TAG}'  # the registered hf_hub_id of resnet20_mmc.cifar10
FAKE_TOKEN = 'hf_FAKEtokenThatMustNeverBePrinted123'
EVAL = {
    'version': '0.1.0', 'model': ARCH, 'dataset': 'cifar10', 'split': 'test', 'n': 64, 'seed': 0,
    'clean_accuracy': 0.4137,
    'attacks': [
        {'name': 'pgd', 'config': {'eps': 8 / 255, 'steps': 10, 'targeted': False, 'loss': 'ce'}, 'accuracy': 0.2969},
        {'name': 'pgd', 'config': {'eps': 16 / 255, 'steps': 10, 'targeted': False, 'loss': 'ce'},
         'accuracy': 0.1406},
        {'name': 'pgd', 'config': {'eps': 8 / 255, 'steps': 50, 'targeted': True, 'loss': 'mmc'}, 'accuracy': 0.3281},
        {'name': 'autoattack', 'config': {'eps': 8 / 255, 'version': 'standard', 'norm': 'Linf'}, 'accuracy': 0.0938},
    ],
    'worst_case_accuracy': 0.0781,
}


def _train_tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(2):
        loss = -model(x).gather(1, y[:, None]).mean()  # MMC loss: pull z toward its center
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _write_run(run: Path, model: torch.nn.Module) -> Path:
    from timm.models import save_for_hf

    save_for_hf(model, str(run), model_args=model.model_args(), safe_serialization=True)
    (run / 'args.yaml').write_text(yaml.safe_dump(dict(
        model=ARCH, dataset='cifar10', epochs=1, batch_size=8, lr=0.05, loss='mmc', adv='none', eps=8 / 255,
        seed=0)))
    (run / 'summary.json').write_text(json.dumps(dict(test_acc=0.5555, wall_time_s=3725.0, hardware='2 CPU cores',
                                                      versions={'torch': torch.__version__})))
    (run / 'metrics.jsonl').write_text(json.dumps(dict(epoch=0, train_loss=1.0, train_acc=0.1, test_acc=0.1,
                                                       robust_acc=None, img_per_s=10.0, lr=0.05, elapsed_s=1.0)) + '\n')
    return run


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    """A trained run, its evaluation JSON and the release folder exported from them."""
    root = tmp_path_factory.mktemp('hub')
    model = _train_tiny()
    run = _write_run(root / 'runs' / 'mmc', model)
    eval_path = root / 'results' / f'{ARCH}.json'
    eval_path.parent.mkdir()
    eval_path.write_text(json.dumps(EVAL))
    out = hub.export(run, eval_path, root / 'hub_cards' / f'{ARCH}.{TAG}', log=lambda s: None)
    return dict(root=root, run=run, eval=eval_path, out=out, model=model)


def _load_safetensors(path: Path):
    from safetensors.torch import load_file
    return load_file(str(path))


def _leftovers(parent: Path):
    return [p.name for p in parent.iterdir() if p.name.startswith('.')] if parent.exists() else []


# ---------------------------------------------------------------------------------------------------------- export

def test_export_writes_safetensors_timm_config_card_and_results(release):
    out = release['out']
    assert hub.release_files(out) == ['README.md', 'config.json', 'model.safetensors', 'results/eval.json',
                                      'results/robust_accuracy.png', 'training/args.yaml', 'training/metrics.jsonl',
                                      'training/summary.json']
    assert not [f for f in hub.release_files(out) if f.endswith(hub.PICKLE_SUFFIXES)]
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == ARCH and cfg['num_classes'] == 10
    assert cfg['label_names'][:2] == ['airplane', 'automobile'] and len(cfg['label_names']) == 10
    assert cfg['model_args']['head'] == 'mmc' and cfg['model_args']['feature_dim'] == 256
    assert cfg['model_args']['center_norm'] == 10.0 and cfg['model_args']['center_kind'] == 'mm'
    assert cfg['pretrained_cfg']['tag'] == TAG and cfg['pretrained_cfg']['classifier'] == 'head.classifier'
    exported = _load_safetensors(out / 'model.safetensors')
    trained = release['model'].state_dict()
    assert set(exported) == set(trained) and all(exported[k].equal(trained[k]) for k in trained)
    assert not any('centers' in k for k in exported)  # MM centers are rebuilt from config, never stored
    assert (out / 'results/eval.json').read_bytes() == release['eval'].read_bytes()
    assert (out / 'results/robust_accuracy.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert _leftovers(out.parent) == []


def test_export_bad_input_fails_cleanly(release, tmp_path, capsys):
    # missing weights: clear message, exit 2, nothing written
    run = tmp_path / 'run'
    shutil.copytree(release['run'], run)
    (run / 'model.safetensors').unlink()
    out = tmp_path / 'cards' / 'x'
    rc = hub.main(['export', '--run', str(run), '--eval', str(release['eval']), '--out', str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and 'model.safetensors' in err and 'Traceback' not in err
    assert not out.exists() and _leftovers(out.parent) == []
    # evaluation JSON of another data set
    bad = tmp_path / 'eval100.json'
    bad.write_text(json.dumps(dict(EVAL, dataset='cifar100')))
    with pytest.raises(hub.HubError, match='cifar100'):
        hub.export(release['run'], bad, out, log=lambda s: None)
    # evaluation JSON of another model
    bad.write_text(json.dumps(dict(EVAL, model='resnet56_sce')))
    with pytest.raises(hub.HubError, match='resnet56_sce'):
        hub.export(release['run'], bad, out, log=lambda s: None)
    # existing folder without --overwrite
    with pytest.raises(hub.HubError, match='--overwrite'):
        hub.export(release['run'], release['eval'], release['out'], log=lambda s: None)
    assert not out.exists() and _leftovers(out.parent) == []


def test_malicious_pickle_is_refused_without_running(release, tmp_path):
    class Payload:
        def __init__(self, path: str) -> None:
            self.path = path

        def __reduce__(self):
            return open, (self.path, 'w')  # unpickling this creates a file

    marker, control_marker = tmp_path / 'pwned', tmp_path / 'control_pwned'
    evil, control = tmp_path / 'evil.pth', tmp_path / 'control.pth'
    state = dict(release['model'].state_dict())
    torch.save({'state_dict': dict(state, extra=Payload(str(marker)))}, evil)
    torch.save({'state_dict': dict(state, extra=Payload(str(control_marker)))}, control)
    torch.load(control, weights_only=False)  # control: the payload is real
    assert control_marker.exists()

    out = tmp_path / 'cards' / f'{ARCH}.{TAG}'
    with pytest.raises(hub.HubError, match='refused'):
        hub.export(release['run'], release['eval'], out, checkpoint=evil, log=lambda s: None)
    assert not marker.exists()
    assert not out.exists() and _leftovers(out.parent) == []


def test_weights_only_pth_checkpoint_exports_as_safetensors(release, tmp_path):
    pth = tmp_path / 'best.pth'
    torch.save({'epoch': 1, 'state_dict': release['model'].state_dict()}, pth)
    out = hub.export(release['run'], release['eval'], tmp_path / 'cards' / 'from_pth', checkpoint=pth,
                     plot=False, log=lambda s: None)
    assert 'model.safetensors' in hub.release_files(out)
    assert not any(f.endswith('.pth') for f in hub.release_files(out))
    a, b = _load_safetensors(out / 'model.safetensors'), _load_safetensors(release['out'] / 'model.safetensors')
    assert all(a[k].equal(b[k]) for k in b)


# ------------------------------------------------------------------------------------------------------------ card

def test_card_parses_back_with_the_eval_json_numbers(release):
    from huggingface_hub import ModelCard

    card = ModelCard.load(release['out'] / 'README.md')
    assert card.data.library_name == 'timm' and card.data.license == 'apache-2.0'
    assert card.data.datasets == ['uoft-cs/cifar10'] and card.data.model_name == REPO
    results = card.data.eval_results
    assert results == hub.eval_json_to_results(EVAL)
    expected = [EVAL['clean_accuracy']] + [a['accuracy'] for a in EVAL['attacks']] + [EVAL['worst_case_accuracy']]
    assert [r.metric_value for r in results] == expected
    pgd = results[1]
    assert 'eps=8/255' in pgd.metric_config and 'steps=10' in pgd.metric_config
    assert pgd.metric_args == EVAL['attacks'][0]['config']
    aa = results[4]
    assert 'version=standard' in aa.metric_config and aa.metric_args['version'] == 'standard'
    assert all('JPEG' in r.dataset_name and r.dataset_split == 'test' for r in results)


def _body_percentages(text: str):
    body = text.split('\n---\n', 1)[1]
    return body, set(re.findall(r'(\d+(?:\.\d+)?)%', body))


def _ours_column(body: str):
    lines = [ln for ln in body.splitlines() if ln.startswith('| ')]
    header = next(ln for ln in lines if 'This model (%)' in ln)
    col = [c.strip() for c in header.strip('|').split('|')].index('This model (%)')
    rows = lines[lines.index(header) + 2:]
    rows = rows[:next((i for i, r in enumerate(rows) if 'This model' in r), len(rows))]
    return [[c.strip() for c in r.strip('|').split('|')][col] for r in rows
            if len(r.strip('|').split('|')) > col]


def test_card_shows_only_numbers_from_the_eval_json(release, tmp_path):
    text = (release['out'] / 'README.md').read_text()
    allowed = {f'{v * 100:.2f}' for v in [EVAL['clean_accuracy'], EVAL['worst_case_accuracy']]
               + [a['accuracy'] for a in EVAL['attacks']]}
    body, shown = _body_percentages(text)
    assert shown and shown <= allowed, shown - allowed
    assert _ours_column(body) == ['41.37', '29.69', '14.06', '32.81', '9.38', '7.81']
    assert '55.55' not in text  # summary.json's test_acc is not an evaluation result: never shown
    assert 'JPEG' in body and 'quality 75' in body
    assert 'import timm_mmc' in body and 'pip install timm-mmc' in body and '@inproceedings{pang2020' in body
    assert f'timm.create_model("{ARCH}.{TAG}", pretrained=True)' in body
    assert '2 CPU cores' in body and '1 h 02 min' in body  # hardware and wall time from summary.json

    # re-render from new results: the old numbers go, the new ones come, all from the JSON
    folder = tmp_path / 'rerender'
    shutil.copytree(release['out'], folder)
    new = copy.deepcopy(EVAL)
    new['clean_accuracy'] = 0.5123
    new['attacks'] = new['attacks'][:1]
    new['attacks'][0]['accuracy'] = 0.2001
    del new['worst_case_accuracy']
    (folder / 'results/eval.json').write_text(json.dumps(new))
    assert hub.main(['card', str(folder)]) == 0
    text2 = (folder / 'README.md').read_text()
    body2, shown2 = _body_percentages(text2)
    assert _ours_column(body2) == ['51.23', '20.01']
    assert not {'41.37', '29.69', '9.38', '7.81'} & set(re.findall(r'\d+\.\d+', text2))
    assert shown2 - {'51.23', '20.01'} == {'55.0', '43.48'}  # the cited AutoAttack re-evaluation, only when no AA
    assert 'Croce & Hein' in body2
    from huggingface_hub import ModelCard
    assert [r.metric_value for r in ModelCard.load(folder / 'README.md').data.eval_results] == [0.5123, 0.2001]


def test_paper_numbers_are_matched_and_labelled(release):
    args = dict(head='mmc', center_norm=10.0, center_kind='mm')
    pgd, aa, sources, caveat = hub._paper_rows('cifar10', 'resnet32v2_mmc', args, {'adv': 'none'})
    assert pgd['label'] == 'MMC-10' and aa is None and caveat is None and 'arXiv:1905.10626' in sources['pang2020'][
        'cite']
    ev = hub.parse_eval(EVAL)
    assert [hub._paper_value(a, pgd, aa) for a in ev.attacks] == ['36.0 (Table A)', '25.2 (Table A)',
                                                                  '26.6 (Table A)', '-']
    pgd, aa, _, caveat = hub._paper_rows('cifar10', 'resnet32_mmc', args, {'adv': 'pgd'})
    assert pgd['label'] == 'AT-un (MMC-10)' and aa['autoattack'] == '43.48' and 'architecture-approximate' in caveat
    assert hub._paper_value(ev.attacks[3], pgd, aa) == '43.48 (AutoAttack)'
    assert hub._paper_rows('cifar10', 'resnet32_mmc', dict(args, center_norm=5.0), {})[0] is None
    assert hub._paper_rows('cifar10', 'resnet20_mmc', args, {})[0] is None


def test_eval_adapter_accepts_percent_and_rejects_bad_numbers():
    pct = dict(EVAL, clean_accuracy=41.37, attacks={'pgd10': {'eps': 8, 'steps': 10, 'targeted': False,
                                                                'accuracy': 29.69},
                                                      'fgsm': {'eps': 8, 'accuracy': None}})
    pct.pop('worst_case_accuracy')
    ev = hub.parse_eval(pct)
    assert ev.unit == 'percent' and len(ev.attacks) == 1 and ev.attacks[0].eps == pytest.approx(8 / 255)
    assert [r.metric_value for r in hub.eval_json_to_results(pct)] == [41.37, 29.69]
    assert ev.pct(ev.attacks[0].accuracy) == '29.69'
    with pytest.raises(hub.HubError, match='clean_accuracy'):
        hub.parse_eval({'attacks': []})
    with pytest.raises(hub.HubError, match='finite number'):
        hub.parse_eval(dict(EVAL, clean_accuracy='high'))
    with pytest.raises(hub.HubError, match=r'\[0, 100\]'):
        hub.parse_eval(dict(EVAL, clean_accuracy=120.0))


# ------------------------------------------------------------------------------------------------------------ push

def test_push_dry_run_lists_files_offline_without_the_token(release, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('HF_TOKEN', FAKE_TOKEN)
    assert hub.main(['push', str(release['out']), '--repo-id', REPO, '--dry-run']) == 0
    out = capsys.readouterr().out
    for f in hub.release_files(release['out']):
        assert f in out
    assert 'token: found' in out and FAKE_TOKEN not in out


def test_push_offline_or_unreachable_fails_clearly(release, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv('HF_TOKEN', FAKE_TOKEN)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    assert hub.main(['push', str(release['out']), '--repo-id', REPO]) == 2
    err = capsys.readouterr().err
    assert 'HF_HUB_OFFLINE' in err and '--dry-run' in err and 'Traceback' not in err and FAKE_TOKEN not in err

    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'ENDPOINT', 'http://127.0.0.1:9')  # nothing listens there
    assert hub.main(['push', str(release['out']), '--repo-id', REPO]) == 2
    captured = capsys.readouterr()
    assert 'could not reach the Hugging Face Hub' in captured.err and 'Traceback' not in captured.err
    assert FAKE_TOKEN not in captured.err + captured.out

    # a repo other than the one the card names: refused before any network, with the fix
    assert hub.main(['push', str(release['out']), '--repo-id', 'someone/else', '--dry-run']) == 2
    assert '--repo-id someone/else' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ loading

def test_hf_cache_layout_matches_hf_hub_download(release, tmp_path):
    cache = tmp_path / 'hf_cache'
    snapshot = hub.build_hf_cache(release['out'], REPO, cache)
    storage = cache / f'models--timm-mmc--{ARCH}.{TAG}'
    assert snapshot.parent == storage / 'snapshots'
    assert (storage / 'refs' / 'main').read_text() == snapshot.name and len(snapshot.name) == 40
    from timm_mmc.io import file_sha256
    weights = snapshot / 'model.safetensors'
    assert weights.is_symlink() and weights.resolve() == (storage / 'blobs' / file_sha256(weights)).resolve()
    assert not os.path.isabs(os.readlink(weights))
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob('*') if p.is_file()) == \
        hub.release_files(release['out'])


def test_pretrained_by_name_hf_hub_and_local_dir_offline(release, tmp_path):
    """HF_HUB_OFFLINE=1 + HF_HUB_CACHE: the real timm / huggingface_hub resolution, in a fresh interpreter."""
    cache = tmp_path / 'hf_cache'
    hub.build_hf_cache(release['out'], REPO, cache)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / 'x.pt')
    script = textwrap.dedent(f'''
        import json, sys, torch, timm
        import timm_mmc
        from huggingface_hub import constants, hf_hub_download
        from safetensors.torch import load_file
        from timm_mmc.centers import mm_centers
        ref = load_file({str(release['out'] / 'model.safetensors')!r})
        x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
        assert constants.HF_HUB_OFFLINE
        res = {{'cached': hf_hub_download({REPO!r}, 'model.safetensors').startswith({str(cache)!r})}}
        outs = []
        for spec in ['{ARCH}.{TAG}', 'hf-hub:{REPO}', 'local-dir:{release['out']}']:
            m = timm.create_model(spec, pretrained=True).eval()
            sd = m.state_dict()
            res[spec] = set(sd) == set(ref) and all(sd[k].equal(ref[k]) for k in ref)
            with torch.no_grad():
                outs.append(m(x))
        res['same_outputs'] = all(o.equal(outs[0]) for o in outs)
        res['label_names'] = list(m.pretrained_cfg['label_names'][:2])
        torch.save(outs[0], {str(tmp_path / 'y.pt')!r})
        m5 = timm.create_model('{ARCH}.{TAG}', pretrained=True, num_classes=5)
        res['five_classes'] = (tuple(m5(x).shape) == (4, 5)
                               and m5.head.centers.equal(mm_centers(5, 256, 10.0))
                               and m5.head.fc1.weight.equal(ref['head.fc1.weight']))
        try:
            timm.create_model('{ARCH}.cifar100', pretrained=True)  # not in the cache: must fail offline
            res['uncached_fails'] = False
        except Exception:
            res['uncached_fails'] = True
        print('RESULT' + json.dumps(res))
    ''')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf_home'))
    env.pop('HF_TOKEN', None)
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.split('RESULT', 1)[1])
    assert res == {'cached': True, f'{ARCH}.{TAG}': True, f'hf-hub:{REPO}': True,
                   f'local-dir:{release["out"]}': True, 'same_outputs': True,
                   'label_names': ['airplane', 'automobile'], 'five_classes': True, 'uncached_fails': True}
    with torch.no_grad():
        assert torch.load(tmp_path / 'y.pt', weights_only=True).equal(release['model'](x))


def test_local_dir_num_classes_change_rebuilds_centers(release):
    model = timm.create_model(f'local-dir:{release["out"]}', pretrained=True, num_classes=7).eval()
    assert model.head.centers.shape == (7, 256)
    assert model.head.centers.equal(mm_centers(7, 256, 10.0))
    trained = release['model'].state_dict()
    assert all(v.equal(trained[k]) for k, v in model.state_dict().items())  # the whole backbone + fc1 came along
