"""Tests for ``timm_mmc.hub``: export, card, push and the offline ``pretrained=True`` paths (issue #6).

Every fixture is built here: a tiny trained ``resnet20_mmc`` (registered defaults, two SGD steps on random data), a
run folder as ``timm_mmc/train.py`` writes it and an evaluation JSON as ``python -m eval.robustness`` writes it.
"""
from __future__ import annotations

import copy
import dataclasses
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
from timm_mmc import hub, report
from timm_mmc.centers import mm_centers
from timm_mmc.data import write_parquet_split
from timm_mmc.io import file_sha256
from timm_mmc.models.cifar_resnet import CIFAR10_LABELS

ARCH, TAG = 'resnet20_mmc', 'cifar10'
REPO = f'timm-mmc/{ARCH}.{TAG}'  # the registered hf_hub_id of resnet20_mmc.cifar10
FAKE_TOKEN = 'hf_FAKEtokenThatMustNeverBePrinted123'
N = 64


def _attack(name, family, eps, targeted, config, accuracy, column=None, n=N, threat='Linf', **extra):
    typed = {k: config.get(k) for k in ('steps', 'objective', 'method')}
    typed['version'] = config.get('version') if family == 'autoattack' else None
    return report.AttackResult(name=name, family=family, threat=threat, eps=eps, targeted=targeted, n=n,
                               n_attacked=n // 2, accuracy=accuracy, clean_accuracy=27 / 64, config=config,
                               column=column, time_s=1.0, **typed, **extra)


def _pgd(steps, targeted, eps255, objective, accuracy, skip_after=()):
    tu = 'tar' if targeted else 'un'
    return _attack(f'pgd{steps}-{tu}-{eps255}-{objective}', 'pgd', eps255 / 255, targeted,
                   dict(steps=steps, alpha=2 / 255, objective=objective, random_start=True, keep_best=True), accuracy,
                   column=f'PGD{steps} {tu} {eps255}', skip_after=list(skip_after))


def _column(name, accuracy, attacks, n=N):
    a = attacks[0]
    return report.Column(name=name, family=a.family, eps=a.eps, targeted=a.targeted, n=n, accuracy=accuracy,
                         attacks=[m.name for m in attacks], steps=a.steps, version=a.version, method=a.method,
                         objectives=[m.objective for m in attacks if m.objective])


def make_report(sha=None) -> report.EvalReport:
    """An evaluation report built through the schema (timm_mmc.report), as eval.robustness builds one; n = 64."""
    noise = _attack('noise-0.05', 'noise', None, False, dict(sigma=0.05), 25 / 64, column='noise 0.05',
                    threat='corruption')
    p10t8 = [_pgd(10, True, 8, 'mm', 22 / 64), _pgd(10, True, 8, 'margin', 21 / 64)]
    p10u8 = [_pgd(10, False, 8, 'mm', 19 / 64), _pgd(10, False, 8, 'margin', 18 / 64)]
    p10u16 = [_pgd(10, False, 16, o, a, [f'pgd10-un-8-{o}']) for o, a in (('mm', 10 / 64), ('margin', 9 / 64))]
    p50u8 = [_pgd(50, False, 8, o, a, [f'pgd10-un-8-{o}']) for o, a in (('mm', 16 / 64), ('margin', 17 / 64))]
    linf8 = p10t8 + p10u8 + p50u8
    aa = _attack('autoattack-standard-8', 'autoattack', 8 / 255, False,
                 dict(version='standard', n_iter=None, target_classes=None, target_margin=10.0), 3 / 32,
                 column='AA standard 8', n=32, skip_after=[a.name for a in linf8], logit_scale=0.05,
                 max_clean_margin=190.0, components=['apgd-ce', 'apgd-t', 'fab-t', 'square'])
    cw = _attack('cw-un', 'cw', None, False, dict(binary_steps=9, max_iter=1000), 0.0, column='C&W un', n=16,
                 threat='L2', success_rate=1.0, l2_mean=0.1234, l2_median=0.1111, l2_paper=0.0617)
    attacks = [noise, *p10t8, *p10u8, *p10u16, *p50u8, aa, cw]
    names8 = [a.name for a in linf8 + [aa]]
    return report.EvalReport(
        model='local-dir:runs/mmc', dataset='../shared/data/cifar10', split='test', n=N, suite='full', seed=0,
        checkpoint_sha256=sha, logits='distance', own_objective='mm',
        dataset_source='../shared/data/cifar10:test [img, label] fingerprint 0123456789abcdef',
        indices=list(range(N)), options={'eps': [8 / 255, 16 / 255], 'pgd_steps': [10, 50], 'standalone': False},
        clean_accuracy=27 / 64, attacks={a.name: a for a in attacks},
        columns={c.name: c for c in [
            _column('noise 0.05', 25 / 64, [noise]), _column('PGD10 tar 8', 20 / 64, p10t8),
            _column('PGD10 un 8', 17 / 64, p10u8), _column('PGD10 un 16', 8 / 64, p10u16),
            _column('PGD50 un 8', 15 / 64, p50u8), _column('AA standard 8', 3 / 32, [aa], n=32)]},
        worst_case={'8': report.WorstCase(8 / 255, 5 / 64, N, names8),
                    '16': report.WorstCase(16 / 255, 4 / 64, N, names8 + [a.name for a in p10u16])},
        # AutoAttack covered the first 32 points only: the worst case there, where every attack ran
        worst_case_slice={'8': report.WorstCase(8 / 255, 2 / 32, 32, names8)},
        diagnostics={'zero_input_gradient_fraction': {'ce': 0.0, 'mm': 0.037, 'margin': 0.0}},
        warnings=["gradient masking: the 'mm' objective has an exactly zero input gradient on 3.7% of the "
                  "clean-correct points; attacks with it are unreliable on this model."],
        timings={'total_s': 12.0}, versions={'python': '3.11', 'torch': torch.__version__, 'pyautoattack': '0.2.1'},
        device='cpu: x86_64, 2 cores', command='python -m eval.robustness --model local-dir:runs/mmc --suite full')


def make_eval(sha=None) -> dict:
    """The JSON of :func:`make_report`, as eval.robustness writes it."""
    return make_report(sha).to_dict()


EVAL = make_eval()
# the model-index values by (name, config, n): clean, the table columns, the worst cases
EXPECTED = {('Clean accuracy', 'clean', 64): 27 / 64, ('Gaussian noise', 'corruption, sigma=0.05', 64): 25 / 64,
            ('PGD-10', 'Linf, eps=8/255, targeted', 64): 20 / 64,
            ('PGD-10', 'Linf, eps=8/255, untargeted', 64): 17 / 64,
            ('PGD-10', 'Linf, eps=16/255, untargeted', 64): 8 / 64,
            ('PGD-50', 'Linf, eps=8/255, untargeted', 64): 15 / 64,
            ('AutoAttack standard on the survivors of the cheaper attacks', 'Linf, eps=8/255', 32): 3 / 32,
            ('Worst case over the suite', 'Linf, eps=8/255', 64): 5 / 64,
            ('Worst case over the suite', 'Linf, eps=16/255', 64): 4 / 64,
            ('Worst case over the suite, on the first points where every attack ran', 'Linf, eps=8/255', 32): 2 / 32}


def _by_key(results):
    return {(r.metric_name, r.metric_config, r.metric_args['n']): r for r in results}


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
    (run / 'summary.json').write_text(json.dumps(dict(test_acc=0.5555, wall_time_s=3725.0, cpu_time_s=7020.0,
                                                      paused_time_s=600.0,
                                                      hardware='2 CPU cores',
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
    data = make_eval(sha=file_sha256(run / 'model.safetensors'))  # the evaluation of exactly these weights
    eval_path.write_text(json.dumps(data))
    out = hub.export(run, eval_path, root / 'hub_cards' / f'{ARCH}.{TAG}', log=lambda s: None)
    return dict(root=root, run=run, eval=eval_path, out=out, model=model, data=data)


def _load_safetensors(path: Path):
    from safetensors.torch import load_file
    return load_file(str(path))


def _leftovers(parent: Path):
    return [p.name for p in parent.iterdir() if p.name.startswith('.')] if parent.exists() else []


# ---------------------------------------------------------------------------------------------------------- export

def test_export_writes_safetensors_timm_config_card_and_results(release):
    out = release['out']
    assert hub.release_files(out) == ['README.md', 'config.json', 'model.safetensors', 'results/eval.json',
                                      'results/robust_accuracy.png', 'results/robustbench.json', 'training/args.yaml',
                                      'training/metrics.jsonl', 'training/summary.json']
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


def test_export_draws_the_plot_the_card_command_redraws_in_the_final_folder(release, tmp_path):
    """The export draws in a temporary folder; its plot is titled with the release's name, not that folder's: `hub
    card` in a folder of the same name redraws it byte for byte."""
    folder = tmp_path / release['out'].name
    shutil.copytree(release['out'], folder)
    assert hub.main(['card', str(folder)]) == 0
    assert (folder / hub.PLOT_FILE).read_bytes() == (release['out'] / hub.PLOT_FILE).read_bytes()


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
    bad.write_text(json.dumps(dict(EVAL, model='local-dir:hub_cards/resnet56_sce.cifar10')))
    with pytest.raises(hub.HubError, match='resnet56_sce'):
        hub.export(release['run'], bad, out, log=lambda s: None)
    # evaluation JSON of other weights (its checkpoint_sha256 says so)
    bad.write_text(json.dumps(make_eval(sha='0' * 64)))
    with pytest.raises(hub.HubError, match='other weights'):
        hub.export(release['run'], bad, out, log=lambda s: None)
    # weights of another architecture
    from safetensors.torch import save_file
    other = tmp_path / 'sce.safetensors'
    save_file({k: v.contiguous() for k, v in timm.create_model('resnet20_sce').state_dict().items()}, str(other))
    with pytest.raises(hub.HubError, match='does not fit .*Export the run folder whose config.json matches'):
        hub.export(release['run'], release['eval'], out, checkpoint=other, log=lambda s: None)
    # existing folder without --overwrite
    with pytest.raises(hub.HubError, match='--overwrite'):
        hub.export(release['run'], release['eval'], release['out'], log=lambda s: None)
    assert not out.exists() and _leftovers(out.parent) == []


def test_export_overwrite_names_the_files_it_drops(release, tmp_path):
    out = tmp_path / 'cards' / f'{ARCH}.{TAG}'
    shutil.copytree(release['out'], out)
    (out / 'results' / 'mine.json').write_text('{}')
    lines = []
    hub.export(release['run'], release['eval'], out, overwrite=True, log=lines.append)
    assert not (out / 'results' / 'mine.json').exists() and (out / 'model.safetensors').is_file()
    assert any('--overwrite dropped 1 file' in line and 'results/mine.json' in line for line in lines), lines
    lines.clear()
    hub.export(release['run'], release['eval'], out, overwrite=True, log=lines.append)  # same files: nothing dropped
    assert lines and not any('dropped' in line for line in lines), lines
    assert _leftovers(out.parent) == []


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


def test_export_of_other_weights_leaves_out_the_run_summary_that_describes_the_run_own(release, tmp_path):
    """summary.json says which weights the run exported and their accuracy: a --checkpoint of other weights must not
    carry it into the card or the README table; the same weights by --checkpoint keep it."""
    from safetensors.torch import load_file, save_file
    state = load_file(str(release['run'] / 'model.safetensors'))
    key = next(k for k, v in state.items() if v.is_floating_point())
    other = tmp_path / 'other.safetensors'
    save_file(dict(state, **{key: state[key] * 0.5}), str(other))
    lines = []
    out = hub.export(release['run'], release['eval'], tmp_path / 'cards' / 'other', checkpoint=other, plot=False,
                     allow_unverified_eval=True, log=lines.append)
    files = hub.release_files(out)
    assert 'training/summary.json' not in files and {'training/args.yaml', 'training/metrics.jsonl'} <= set(files)
    assert any('other weights' in line and 'left out' in line for line in lines), lines
    assert 'From `training/summary.json`' not in (out / 'README.md').read_text()
    same = tmp_path / 'same.safetensors'
    shutil.copyfile(release['run'] / 'model.safetensors', same)
    out = hub.export(release['run'], release['eval'], tmp_path / 'cards' / 'same', checkpoint=same, plot=False,
                     log=lambda s: None)
    assert 'training/summary.json' in hub.release_files(out)


def test_export_names_the_classes_as_the_run_data_did(release, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(release['run'], run)
    cfg = json.loads((run / 'config.json').read_text())
    names = [f'class {i}' for i in range(10)]
    (run / 'config.json').write_text(json.dumps(dict(cfg, label_names=names)))
    out = hub.export(run, release['eval'], tmp_path / 'cards' / 'named', plot=False, log=lambda s: None)
    assert json.loads((out / 'config.json').read_text())['label_names'] == names


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
    assert sorted(map(repr, results)) == sorted(map(repr, hub.eval_results(report.from_dict(release['data']),
                                                                            'cifar10')))
    got = _by_key(results)
    assert {k: r.metric_value for k, r in got.items()} == EXPECTED  # the report's numbers, unchanged
    pgd = got[('PGD-10', 'Linf, eps=8/255, untargeted', 64)]
    assert pgd.metric_type == 'robust_accuracy'
    assert pgd.metric_args['eps'] == 8 / 255 and pgd.metric_args['steps'] == 10 and not pgd.metric_args['targeted']
    assert pgd.metric_args['attacks'] == ['pgd10-un-8-mm', 'pgd10-un-8-margin']
    assert pgd.metric_args['composite'] == 'per point, the worst case over the objectives mm/margin'
    assert 'smaller budgets' in got[('PGD-50', 'Linf, eps=8/255, untargeted', 64)].metric_args['composite']
    aa = got[('AutoAttack standard on the survivors of the cheaper attacks', 'Linf, eps=8/255', 32)]
    assert aa.metric_args['version'] == 'standard' and aa.metric_args['package'] == 'pyautoattack 0.2.1'
    assert 'worst case over those attacks and AutoAttack' in aa.metric_args['composite']
    assert got[('Clean accuracy', 'clean', 64)].metric_type == 'accuracy'
    assert got[('Gaussian noise', 'corruption, sigma=0.05', 64)].metric_type == 'accuracy'
    worst = got[('Worst case over the suite', 'Linf, eps=8/255', 64)]
    assert worst.metric_args['eps'] == 8 / 255 and len(worst.metric_args['attacks']) == 7
    assert all('JPEG' in r.dataset_name and r.dataset_split == 'test' and r.dataset_args == {'n': N} for r in results)
    assert not any(re.search(r'\d+/255|n=\d', r.metric_name) for r in results)  # eps and n never in a name


def _numbers(text: str):
    return set(re.findall(r'\d+\.\d+', text))


def _table_column(body: str, header_cell: str):
    """Cells of the column ``header_cell`` of the first Markdown table that has it."""
    lines = body.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith('|') and header_cell in ln)
    col = [c.strip() for c in lines[start].strip('|').split('|')].index(header_cell)
    cells = []
    for ln in lines[start + 2:]:
        if not ln.startswith('|'):
            break
        cells.append([c.strip() for c in ln.strip('|').split('|')][col])
    return cells


def _json_numbers(data) -> set:
    """Every number the evaluation JSON holds, as the card may print it: 2-decimal %, 4-decimal, or verbatim."""
    out = set()

    def walk(v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            out.update({f'{v * 100:.2f}', f'{v:.4f}', f'{v:.2f}', repr(v)})
        elif isinstance(v, str):
            out.update(re.findall(r'\d+\.\d+', v))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(data)
    return out


def test_card_shows_only_numbers_from_the_eval_json(release, tmp_path):
    text = (release['out'] / 'README.md').read_text()
    body = text.split('\n---\n', 1)[1]
    ours = _table_column(body, 'This model (%)')
    assert ours == ['42.19', '39.06', '31.25', '26.56', '12.50', '23.44', '9.38']  # clean + the 6 columns
    suite = body[body.index('| Robust accuracy under the whole suite'):]
    assert _table_column(suite, 'This model (%)') == ['7.81', '6.25', '6.25']  # 8/255, 16/255, 8/255 on the first 32
    # every decimal in the evaluation section is an evaluation-JSON number or a labelled paper figure
    section = body.split('## Robustness evaluation')[1].split('## Usage')[0]
    assert _numbers(section) <= _json_numbers(release['data']), _numbers(section) - _json_numbers(release['data'])
    percents = set(re.findall(r'(\d+(?:\.\d+)?)%', body))  # every percentage anywhere in the card, summary included
    assert {'42.19', '7.81', '6.25'} <= percents <= _json_numbers(release['data'])
    assert '55.55' not in text  # summary.json's test_acc is not an evaluation result: never shown
    assert 'JPEG' in section and 'quality 75' in body and 'JPEG' in body.split('## What the model is')[0]
    assert '3.7% of the clean-correct points' in section  # the evaluation's own warnings are carried
    assert 'standalone = false' in section  # and how its figures compose
    assert 'import timm_mmc' in body and '@inproceedings{pang2020' in body
    assert 'pip install timm-mmc\n' not in body and 'not on PyPI' in body  # no claim of a package that does not exist
    assert 'must come before' in body and 'it is this release\'s `model.safetensors`' in body
    assert f'timm.create_model("{ARCH}.{TAG}", pretrained=True)' in body
    assert '2 CPU cores' in body and '1 h 02 min' in body  # hardware and wall time from summary.json
    assert 'Wall time: 1 h 02 min (3725 s), of which the process stood still (stopped) 0 h 10 min (600 s)' in body
    assert 'CPU time of the training process, all threads: 1 h 57 min (7020 s)' in body

    # re-render from new results: the old numbers go, the new ones come, all from the JSON
    folder = tmp_path / 'rerender'
    shutil.copytree(release['out'], folder)
    new = copy.deepcopy(release['data'])
    new['clean_accuracy'] = 0.5123
    new['columns'] = {'PGD10 un 8': dict(new['columns']['PGD10 un 8'], accuracy=0.2001)}
    new['attacks'] = {k: v for k, v in new['attacks'].items() if k.startswith('pgd10-un-8')}
    new['worst_case'], new['worst_case_slice'], new['warnings'] = {}, {}, []
    (folder / 'results/eval.json').write_text(json.dumps(new))
    assert hub.main(['card', str(folder)]) == 0
    assert (folder / hub.PLOT_FILE).read_bytes() != (release['out'] / hub.PLOT_FILE).read_bytes()  # redrawn
    text2 = (folder / 'README.md').read_text()
    body2 = text2.split('\n---\n', 1)[1]
    assert _table_column(body2, 'This model (%)') == ['51.23', '20.01']
    assert not {'42.19', '31.25', '9.38', '7.81'} & _numbers(text2)
    section2 = body2.split('## Robustness evaluation')[1].split('## Usage')[0]
    # beyond the JSON: only the cited AutoAttack re-evaluation, shown because this JSON has no AutoAttack
    assert _numbers(section2) - _json_numbers(new) == {'55.0', '43.48'} and 'Croce & Hein' in section2
    from huggingface_hub import ModelCard
    assert [r.metric_value for r in ModelCard.load(folder / 'README.md').data.eval_results] == [0.5123, 0.2001]
    assert json.loads((folder / hub.ROBUSTBENCH_FILE).read_text())['clean_acc'] == '51.23'  # rewritten too


def test_export_reads_what_eval_robustness_writes(release, tmp_path, monkeypatch):
    """Contract with the eval package: its report of these weights exports, and the card carries its numbers."""
    from eval.robustness import main as eval_main

    monkeypatch.setenv('TIMM_MMC_CACHE', str(tmp_path / 'cache'))
    imgs = torch.randint(0, 256, (8, 32, 32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():  # labels = the model's predictions: clean accuracy 100%, every attack has work to do
        pred = release['model'](imgs.permute(0, 3, 1, 2).float() / 255).argmax(1).tolist()
    data = tmp_path / 'cifar10'
    write_parquet_split(data, 'test', imgs.numpy(), pred, CIFAR10_LABELS)
    rc = eval_main(['--model', ARCH, '--checkpoint', str(release['run'] / 'model.safetensors'), '--dataset', str(data),
                    '--n-examples', '8', '--suite', 'quick', '--attacks', 'pgd', '--out', str(tmp_path / 'results'),
                    '--name', 'tiny', '--no-progress', '--batch-size', '8'])
    assert rc == 0
    rep = report.load(tmp_path / 'results' / 'tiny.json')
    out = hub.export(release['run'], tmp_path / 'results' / 'tiny.json', tmp_path / 'cards' / 'x', plot=False,
                     log=lambda s: None)
    from huggingface_hub import ModelCard
    results = ModelCard.load(out / 'README.md').data.eval_results
    expected = [rep.clean_accuracy] + [c.accuracy for c in rep.columns.values()] + \
        [w.accuracy for w in rep.worst_case.values()]
    assert [r.metric_value for r in results] == expected and len(results) >= 3
    assert [r.metric_name for r in results[1:len(rep.columns) + 1]] == ['PGD-10'] * len(rep.columns)


def test_paper_numbers_are_matched_and_labelled(release):
    from timm_mmc.hub.paper import paper_rows, paper_value

    args = dict(head='mmc', center_norm=10.0, center_kind='mm')
    pgd, aa, sources, caveat = paper_rows('cifar10', 'resnet32v2_mmc', args, {'adv': 'none'})
    assert pgd['label'] == 'MMC-10' and aa is None and caveat is None
    assert 'arXiv:1905.10626' in sources['pang2020']['cite']
    rep = make_report()
    col = (lambda **kw: rep.find_column(**kw))
    assert paper_value(col(family='pgd', steps=10, targeted=True, eps=8 / 255), {}, pgd, aa) == '48.7 (Table A)'
    assert paper_value(col(family='pgd', steps=10, targeted=False, eps=16 / 255), {}, pgd, aa) == '25.2 (Table A)'
    assert paper_value(col(family='pgd', steps=50, targeted=False, eps=8 / 255), {}, pgd, aa) == '24.8 (Table A)'
    assert paper_value(col(family='noise'), {'sigma': 0.05}, pgd, aa) == '69.3 (Table B)'
    assert paper_value(col(family='autoattack'), {}, pgd, aa) == '-'
    pgd, aa, _, caveat = paper_rows('cifar10', 'resnet32_mmc', args, {'adv': 'pgd', 'adv_targeted': False})
    assert pgd['label'] == 'AT-un (MMC-10)' and aa['autoattack'] == '43.48' and 'architecture-approximate' in caveat
    assert paper_value(col(family='autoattack'), {}, pgd, aa) == '43.48 (AutoAttack)'
    assert paper_rows('cifar10', 'resnet32_mmc', args, {'adv': 'pgd', 'adv_targeted': True})[0]['label'] == \
        'AT-tar (MMC-10)'
    assert paper_rows('cifar10', 'resnet32_sce', dict(head='linear'), {})[0]['label'] == 'SCE'
    assert paper_rows('cifar10', 'resnet32_mmc', dict(args, center_kind='random'), {})[0]['label'] == 'MMC-10 (rand)'
    assert paper_rows('cifar10', 'resnet32_mmc', dict(args, center_norm=5.0), {})[0] is None
    assert paper_rows('cifar10', 'resnet20_mmc', args, {})[0] is None


def test_paper_rows_follow_the_heads_table():
    """Every head variant of timm_mmc.heads.HEADS finds the paper's Table A row HEADS names (no adversarial
    training)."""
    from timm_mmc.heads import HEADS
    from timm_mmc.hub.paper import paper_rows

    for suffix, spec in HEADS.items():
        args = dict(head=spec.kind, center_kind=spec.center_kind, center_norm=10.0)
        row = paper_rows('cifar10', f'resnet32_{suffix}', args, {'adv': 'none'})[0]
        assert row is not None and row['label'] == spec.paper_row, suffix


def test_card_puts_the_papers_numbers_beside_ours_labelled(release, tmp_path):
    """A release of the paper's architecture (config.json says resnet32v2_mmc): the Paper column fills in."""
    folder = tmp_path / 'resnet32v2_mmc.cifar10'
    shutil.copytree(release['out'], folder)
    cfg = json.loads((folder / 'config.json').read_text())
    cfg['architecture'] = 'resnet32v2_mmc'
    (folder / 'config.json').write_text(json.dumps(cfg))
    hub.write_card(folder, repo_id='timm-mmc/resnet32v2_mmc.cifar10')
    body = (folder / 'README.md').read_text().split('\n---\n', 1)[1]
    assert _table_column(body, 'Paper (%)') == ['92.7 (Table A)', '69.3 (Table B)', '48.7 (Table A)',
                                                '36.0 (Table A)', '25.2 (Table A)', '24.8 (Table A)', '-']
    assert _table_column(body, 'Paper mean L2') == ['0.17 (Table B)']
    assert 'published figures, not ours' in body and 'arXiv:1905.10626' in body and 'row "MMC-10"' in body
    section = body.split('## Robustness evaluation')[1].split('## Usage')[0]
    paper = {'92.7', '69.3', '48.7', '36.0', '25.2', '24.8', '0.17', '1905.10626'}  # + the arXiv id
    assert _numbers(section) <= _json_numbers(release['data']) | paper
    assert _table_column(body, 'This model (%)') == _table_column((release['out'] / 'README.md').read_text(),
                                                                   'This model (%)')


def test_non_default_model_args_are_named_in_the_card(release, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=10, feature_dim=8).eval()
    run = _write_run(tmp_path / 'run8', model)
    notes = []
    (tmp_path / 'eval.json').write_text(json.dumps(make_eval(sha=file_sha256(run / 'model.safetensors'))))
    out = hub.export(run, tmp_path / 'eval.json', tmp_path / 'cards' / 'fd8', plot=False, log=notes.append)
    body = (out / 'README.md').read_text()
    assert f'timm.create_model("{ARCH}.{TAG}", pretrained=True, feature_dim=8)' in body
    assert any('feature_dim' in n for n in notes)
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)  # config.json carries feature_dim
    assert loaded.head.centers.shape == (10, 8)


def test_a_run_whose_export_did_not_finish_is_refused_and_a_hand_made_folder_is_not(tmp_path):
    """The trainer writes summary.json after the weights and removes it before replacing them: a folder with its
    checkpoints and no summary.json is a run cut inside its export, whose weights need not be its final ones. Every
    reader of a run folder refuses it: hub export, --init-from and local-dir: loading."""
    model = timm.create_model(ARCH, num_classes=10).eval()
    run = _write_run(tmp_path / 'run', model)
    (tmp_path / 'eval.json').write_text(json.dumps(make_eval(sha=file_sha256(run / 'model.safetensors'))))
    (run / 'summary.json').unlink()
    assert hub.read_run(run)['dir'] == run  # weights and config put there by hand: nothing says a run was cut
    step = run / 'checkpoints' / 'step_00000002'
    step.mkdir(parents=True)
    (step / 'state.json').write_text('{}')
    for attempt in (lambda: hub.read_run(run),
                    lambda: hub.export(run, tmp_path / 'eval.json', tmp_path / 'cards' / 'x', plot=False)):
        with pytest.raises(hub.HubError, match=r'export did not finish.*--output .* --resume'):
            attempt()
    assert not (tmp_path / 'cards').exists()
    from timm_mmc.io import ModelLoadError, load_model, load_named_weights
    for attempt in (lambda: load_named_weights(str(run)), lambda: load_named_weights(f'local-dir:{run}'),
                    lambda: load_model(f'local-dir:{run}')):  # --init-from, and eval.robustness --model local-dir:
        with pytest.raises(ModelLoadError, match=r'export has not finished.*--output .* --resume'):
            attempt()


def test_only_the_report_schema_is_read_and_bad_reports_fail_clearly(release, tmp_path, capsys):
    bad = tmp_path / 'bad.json'
    cases = [({'attacks': {}}, 'version'),  # no version: not a report eval.robustness wrote
             (dict(EVAL, version='0.9'), "version '0.9'"),
             (dict(EVAL, clean_accuracy='high'), 'report.clean_accuracy must be a finite number'),
             (dict(EVAL, clean_accuracy=41.37), 'outside [0, 1]'),  # percentages are not fractions
             (dict(EVAL, attacks=[{'name': 'pgd', 'accuracy': 0.3}]), 'report.attacks must be an object'),  # flat list
             (dict(EVAL, clean_acc=0.5), "keys the schema does not know: ['clean_acc']"),
             (dict(EVAL, columns={'PGD10 un 8': dict(EVAL['columns']['PGD10 un 8'], accuracy=-0.5)}),
              'outside [0, 1]')]
    out = tmp_path / 'cards' / 'x'
    for data, message in cases:
        bad.write_text(json.dumps(data))
        assert hub.main(['export', '--run', str(release['run']), '--eval', str(bad), '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(bad) in err and 'Traceback' not in err, (message, err)
    assert not out.exists() and _leftovers(out.parent) == []


def test_export_requires_the_report_of_these_weights(release, tmp_path, capsys):
    """A forged report (another weights hash, or none) is refused; --allow-unverified-eval exports and says so."""
    forged = copy.deepcopy(release['data'])
    forged['clean_accuracy'] = 0.99
    forged['checkpoint_sha256'] = '0' * 64
    path = tmp_path / 'forged.json'
    out = tmp_path / 'cards' / f'{ARCH}.{TAG}'
    for sha in ('0' * 64, None):
        forged['checkpoint_sha256'] = sha
        path.write_text(json.dumps(forged))
        assert hub.main(['export', '--run', str(release['run']), '--eval', str(path), '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert '--allow-unverified-eval' in err and ('other weights' in err if sha else 'no weights sha256' in err)
        assert not out.exists() and _leftovers(out.parent) == []
    assert hub.main(['export', '--run', str(release['run']), '--eval', str(path), '--out', str(out),
                     '--allow-unverified-eval', '--no-plot']) == 0
    assert 'WARNING' in capsys.readouterr().out
    body = (out / 'README.md').read_text()
    assert '**Provenance not verified**' in body and 'records no weights sha256' in body
    assert 'it is this release' not in body
    assert 'Provenance not verified' not in (release['out'] / 'README.md').read_text()
    hub.check_release(out, REPO)  # a consistent folder still: the card carries the (unverified) report's numbers


def test_an_adversarially_trained_run_never_gets_a_standard_tag(release, tmp_path, capsys):
    """The tag follows the run's args.yaml: an adversarially trained run is refused a standard tag (given or derived
    from the data set), where before it was exported as the standard release of its data set."""
    run = tmp_path / 'at_run'
    shutil.copytree(release['run'], run)
    args = yaml.safe_load((run / 'args.yaml').read_text())
    (run / 'args.yaml').write_text(yaml.safe_dump(dict(args, adv='nfgsm')))
    for extra, words in (([], 'has no adversarially trained tag'),
                         (['--tag', 'cifar10'], '--tag cifar10 does not fit')):
        out = tmp_path / 'cards' / 'x'
        assert hub.main(['export', '--run', str(run), '--eval', str(release['eval']), '--out', str(out), '--no-plot',
                         *extra]) == 2
        assert words in capsys.readouterr().err and not out.exists()
    assert hub.main(['export', '--run', str(release['run']), '--eval', str(release['eval']), '--out',
                     str(tmp_path / 'cards' / 'y'), '--no-plot', '--tag', 'cifar10_at']) == 2  # and the other way
    assert 'does not fit the run' in capsys.readouterr().err


def test_export_of_a_checkpoint_whose_bytes_the_release_changes_is_not_silently_verified(release, tmp_path, capsys):
    """--checkpoint weights that were evaluated but re-save as other bytes (here: extra metadata) cannot be tied to
    the released file by the card: export refuses and names the fix, or with --allow-unverified-eval says so."""
    from safetensors.torch import load_file, save_file
    from timm_mmc.io import file_sha256
    source = tmp_path / 'ckpt' / 'model.safetensors'
    source.parent.mkdir()
    save_file(load_file(str(release['run'] / 'model.safetensors')), str(source), metadata={'format': 'pt', 'x': 'y'})
    report = copy.deepcopy(release['data'])
    report['checkpoint_sha256'] = file_sha256(source)
    path = tmp_path / 'ckpt.json'
    path.write_text(json.dumps(report))
    out = tmp_path / 'cards' / f'{ARCH}.{TAG}'
    argv = ['export', '--run', str(release['run']), '--eval', str(path), '--out', str(out), '--checkpoint',
            str(source), '--no-plot']
    assert hub.main(argv) == 2
    err = capsys.readouterr().err
    assert 'whose bytes differ' not in err and 're-saves it as other bytes' in err and 'local-dir:' in err
    assert not out.exists()
    assert hub.main([*argv, '--allow-unverified-eval']) == 0
    assert 'WARNING' in capsys.readouterr().out
    assert '**Provenance not verified**' in (out / 'README.md').read_text()


def test_plot_draws_measured_points_only_with_n_in_every_label():
    from timm_mmc.plot import robustness_figure

    rep = make_report()
    ax = robustness_figure(rep).axes[0]
    measured = {0.0, 8.0, 16.0}  # clean, and the two budgets the report has
    assert sorted(ax.get_xticks()) == sorted(measured)
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith('_')]
    labels = [ln.get_label() for ln in lines]
    assert len(set(labels)) == len(labels) and all(re.search(r'\(n=\d+\)$', lab) for lab in labels), labels
    for ln in lines:
        assert {round(float(x), 6) for x in ln.get_xdata()} <= measured and ln.get_marker() not in (None, 'None', '')
    by_label = {ln.get_label(): ln for ln in lines}
    aa = by_label['AutoAttack standard on the survivors of the cheaper attacks (n=32)']
    worst = by_label['worst case over the suite (n=64)']
    assert aa.get_zorder() > worst.get_zorder() and aa.get_markersize() > worst.get_markersize()  # stays visible
    assert 'PGD-10 untargeted, worst of mm/margin (n=64)' in by_label
    assert list(by_label['PGD-10 untargeted, worst of mm/margin (n=64)'].get_ydata()) == [100 * 17 / 64, 100 * 8 / 64]
    assert 'worst case over the suite, first points where every attack ran (n=32)' in by_label


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
    assert f'delete every file of {REPO} not in this list' in out  # the real push's delete_patterns, said


def test_push_refuses_a_card_that_does_not_match_its_results(release, tmp_path, capsys):
    folder = tmp_path / 'edited'
    shutil.copytree(release['out'], folder)
    card = (folder / 'README.md').read_text()
    (folder / 'README.md').write_text(card.replace('value: 0.265625', 'value: 0.665625', 1))  # a hand "fix"
    assert hub.main(['push', str(folder), '--repo-id', REPO, '--dry-run']) == 2
    assert f'python -m timm_mmc.hub card {folder}' in capsys.readouterr().err
    shutil.copyfile(release['out'] / 'README.md', folder / 'README.md')
    info = json.loads((folder / hub.ROBUSTBENCH_FILE).read_text())
    (folder / hub.ROBUSTBENCH_FILE).write_text(json.dumps(dict(info, clean_acc='99.00')))  # a hand "fix" there too
    assert hub.main(['push', str(folder), '--repo-id', REPO, '--dry-run']) == 2
    assert 'robustbench.json' in capsys.readouterr().err
    shutil.copyfile(release['out'] / hub.ROBUSTBENCH_FILE, folder / hub.ROBUSTBENCH_FILE)
    (folder / 'model.pth').write_bytes(b'not uploaded')
    assert hub.main(['push', str(folder), '--repo-id', REPO, '--dry-run']) == 2
    assert 'safetensors only' in capsys.readouterr().err
    (folder / 'model.pth').unlink()
    # other weights of the same shapes under a card that names the evaluated ones' sha256: refused
    from safetensors.torch import load_file, save_file
    w = load_file(str(folder / 'model.safetensors'))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in w.items()}, str(folder / 'model.safetensors'),
              metadata={'format': 'pt'})
    assert hub.main(['push', str(folder), '--repo-id', REPO, '--dry-run']) == 2
    assert 'is not what the folder\'s files render' in capsys.readouterr().err
    shutil.copyfile(release['out'] / 'model.safetensors', folder / 'model.safetensors')
    assert hub.main(['push', str(folder), '--repo-id', REPO, '--dry-run']) == 0  # restored: passes again
    capsys.readouterr()
    (folder / 'results' / 'notes.txt').symlink_to(tmp_path / 'secret.txt')  # would upload what it points to
    (tmp_path / 'secret.txt').write_text('not for the Hub')
    assert hub.main(['push', str(folder), '--repo-id', REPO, '--dry-run']) == 2
    assert 'symbolic link' in capsys.readouterr().err


def test_push_calls_create_repo_and_upload_folder(release, monkeypatch, capsys):
    """The real upload path, with the two Hub calls replaced by recorders (no network here)."""
    from huggingface_hub import HfApi, constants

    calls = {}

    def create_repo(self, repo_id, **kw):
        calls['create_repo'] = dict(kw, repo_id=repo_id, token=self.token)
        return type('RepoUrl', (str,), {'repo_id': repo_id})(f'https://huggingface.co/{repo_id}')

    def upload_folder(self, **kw):
        calls['upload_folder'] = kw
        return 'commit-info'

    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', FAKE_TOKEN)
    monkeypatch.setattr(HfApi, 'create_repo', create_repo)
    monkeypatch.setattr(HfApi, 'upload_folder', upload_folder)
    assert hub.push(release['out'], REPO, private=True) == 'commit-info'
    assert calls['create_repo'] == dict(repo_id=REPO, private=True, exist_ok=True, repo_type='model',
                                        token=FAKE_TOKEN)
    up = calls['upload_folder']
    assert up['repo_id'] == REPO and up['folder_path'] == str(release['out']) and up['repo_type'] == 'model'
    assert up['allow_patterns'] == hub.release_files(release['out']) and up['delete_patterns'] == ['*']
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err and 'pushed 9 files' in captured.out


def test_a_write_that_fails_half_way_exits_1_and_names_the_path(release, tmp_path, monkeypatch, capsys):
    """Refused before any work is status 2; a write that fails once the work has begun is 1 (timm_mmc.ExitStatus)."""
    from timm_mmc.hub import cli

    def fail(args):
        raise PermissionError(13, 'Permission denied', str(tmp_path / 'cache' / 'blob'))

    monkeypatch.setattr(cli, '_run', fail)
    assert hub.main(['cache', str(release['out']), '--cache-dir', str(tmp_path / 'cache')]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / 'cache' / 'blob') in err and 'Permission denied' in err and 'Traceback' not in err


def test_an_upload_that_fails_after_its_repo_was_created_exits_1(release, monkeypatch, capsys):
    from huggingface_hub import HfApi, RepoUrl, constants

    monkeypatch.setenv('HF_TOKEN', FAKE_TOKEN)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(HfApi, 'create_repo', lambda self, repo_id, **kw: RepoUrl(f'https://huggingface.co/{repo_id}'))

    def upload_folder(self, **kw):
        raise ConnectionError('connection reset during the upload')

    monkeypatch.setattr(HfApi, 'upload_folder', upload_folder)
    assert hub.main(['push', str(release['out']), '--repo-id', REPO]) == 1  # the repo was written: not bad input
    err = capsys.readouterr().err
    assert 'connection reset' in err and f'The repo {REPO} exists now' in err and FAKE_TOKEN not in err


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
    weights = snapshot / 'model.safetensors'
    assert weights.is_symlink() and weights.resolve() == (storage / 'blobs' / file_sha256(weights)).resolve()
    assert not os.path.isabs(os.readlink(weights))
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob('*') if p.is_file()) == \
        hub.release_files(release['out'])
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    info = scan_cache_dir(cache)  # huggingface_hub's own cache reader accepts the layout
    assert not info.warnings and [r.repo_id for r in info.repos] == [REPO]
    (rev,) = next(iter(info.repos)).revisions
    assert rev.commit_hash == snapshot.name and rev.refs == {'main'} and rev.nb_files == len(hub.release_files(
        release['out']))
    assert try_to_load_from_cache(REPO, 'config.json', cache_dir=cache) == str(snapshot / 'config.json')


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
        for spec in ['{ARCH}', '{ARCH}.{TAG}', 'hf-hub:{REPO}', 'local-dir:{release['out']}']:  # no tag: default
            m = timm.create_model(spec, pretrained=True).eval()
            sd = m.state_dict()
            res[spec] = set(sd) == set(ref) and all(sd[k].equal(ref[k]) for k in ref)
            with torch.no_grad():
                outs.append(m(x))
        res['same_outputs'] = all(o.equal(outs[0]) for o in outs)
        from timm_mmc.io import file_sha256, load_named_weights  # --init-from: the same four names
        sha = file_sha256({str(release['out'] / 'model.safetensors')!r})
        for spec in ['{ARCH}.{TAG}', 'hf-hub:{REPO}', 'local-dir:{release['out']}', {str(release['out'])!r}]:
            w = load_named_weights(spec)
            res['init ' + spec] = (w.sha256 == sha and set(w.state) == set(ref) and w.config['num_classes'] == 10
                                   and all(w.state[k].equal(ref[k]) for k in ref))
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
    # the timeout only guards against a hang: at nice 19 beside a training run this took over 120 s
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.split('RESULT', 1)[1])
    assert res == {'cached': True, ARCH: True, f'{ARCH}.{TAG}': True, f'hf-hub:{REPO}': True,
                   f'local-dir:{release["out"]}': True, 'same_outputs': True,
                   'label_names': ['airplane', 'automobile'], 'five_classes': True, 'uncached_fails': True,
                   **{f'init {spec}': True for spec in [f'{ARCH}.{TAG}', f'hf-hub:{REPO}',
                                                        f'local-dir:{release["out"]}', str(release['out'])]}}
    with torch.no_grad():
        assert torch.load(tmp_path / 'y.pt', weights_only=True).equal(release['model'](x))


def test_local_dir_num_classes_change_rebuilds_centers(release):
    model = timm.create_model(f'local-dir:{release["out"]}', pretrained=True, num_classes=7).eval()
    assert model.head.centers.shape == (7, 256)
    assert model.head.centers.equal(mm_centers(7, 256, 10.0))
    trained = release['model'].state_dict()
    assert all(v.equal(trained[k]) for k, v in model.state_dict().items())  # the whole backbone + fc1 came along


def test_results_table_reads_every_figure_from_the_release(release, tmp_path):
    table = hub.results_table([release['out']]).splitlines()
    assert len(table) == 3 and table[0].count('|') == len(hub.RESULTS_COLUMNS) + 1
    cells = [c.strip() for c in table[2].strip('|').split('|')]
    row = dict(zip(hub.RESULTS_COLUMNS, cells))
    assert row['training'] == '1 ep, 62 min (10 of them paused)'  # args.yaml and summary.json (3725 s, 600 s)
    assert row['clean, 10k test'] == '55.55' and row['n'] == '64' and row['clean'] == '42.2'
    assert row['PGD-50 un 8 (worst over objectives)'] == '23.4'  # the column: 15/64
    assert row['AutoAttack 8'] == '9.4 (standard, first 32)'
    assert row['worst case 8'] == '**7.8; 6.2 on the first 32**' and row['worst case 16'] == '6.2'
    assert row["C&W un L2, paper's mean (n)"] == '0.062 (16)'  # l2_paper
    assert hub.main(['table', str(release['out'])]) == 0
    with pytest.raises(hub.HubError, match='pass release folders'):
        hub.results_table([tmp_path])


def test_card_and_table_say_when_a_run_started_from_earlier_weights(release, tmp_path):
    """A run made with --init-from counts only its own epochs and wall time: the card and the README table say that
    the weights were trained before it, so that "20 epochs, 80 min" is not read as the whole training."""
    folder = tmp_path / f'{ARCH}.{TAG}'
    shutil.copytree(release['out'], folder)
    args_file = folder / 'training/args.yaml'
    args = yaml.safe_load(args_file.read_text())
    assert 'Started from' not in (folder / 'README.md').read_text()
    assert 'earlier weights' not in hub.results_table([folder])
    args['init_from'] = 'hub_cards/resnet32_mmc.cifar10/model.safetensors'
    args_file.write_text(yaml.safe_dump(args))
    assert hub.main(['card', str(folder)]) == 0
    body = (folder / 'README.md').read_text()
    assert ('- Started from: the weights in `hub_cards/resnet32_mmc.cifar10/model.safetensors` (`--init-from`), '
            'trained before this run; the epochs and wall time here are this run\'s alone') in body
    assert 'sha256' not in body.split('- Started from:')[1].splitlines()[0]  # a run from before it was recorded
    args.update(init_from='resnet32_mmc.cifar10', init_from_sha256='ab' * 32)  # a release by name, and its file
    args_file.write_text(yaml.safe_dump(args))
    assert hub.main(['card', str(folder)]) == 0
    line = (folder / 'README.md').read_text().split('- Started from:')[1].splitlines()[0]
    assert line.startswith(' the weights in `resnet32_mmc.cifar10`') and \
        line.endswith(f'made its starting weights; that weights file had sha256 `{"ab" * 32}` when the run began')
    row = hub.results_table([folder]).splitlines()[2]
    assert '1 ep, from earlier weights (--init-from), 62 min' in row


def test_card_shows_the_held_out_curve_and_the_exported_epoch(release, tmp_path):
    """An adversarially trained run with --holdout / --select-best: the card has its held-out PGD curve, marks the
    exported epoch and a collapse, and says which weights were exported and why."""
    folder = tmp_path / f'{ARCH}.{TAG}'
    shutil.copytree(release['out'], folder)
    attack = 'PGD-10 untargeted eps 8/255, worst of mm and margin, the 500 held-out training images'
    recs = [dict(epoch=1, heldout_clean_acc=0.5, robust_acc=0.25, heldout_clean_acc_ema=0.45, robust_acc_ema=0.2),
            dict(epoch=2, heldout_clean_acc=0.6, robust_acc=0.3, heldout_clean_acc_ema=0.55, robust_acc_ema=0.35),
            dict(epoch=3, heldout_clean_acc=0.7, robust_acc=0.05, heldout_clean_acc_ema=0.6, robust_acc_ema=0.3,
                 collapse=True)]
    (folder / 'training/metrics.jsonl').write_text(''.join(json.dumps(dict(r, robust_attack=attack)) + '\n'
                                                           for r in recs))
    summary = json.loads((folder / 'training/summary.json').read_text())
    summary.update(weights='ema', selected=dict(epoch=2, weights='ema', robust_acc=0.35, clean_acc=0.55))
    (folder / 'training/summary.json').write_text(json.dumps(summary))
    args = yaml.safe_load((folder / 'training/args.yaml').read_text())
    (folder / 'training/args.yaml').write_text(yaml.safe_dump(dict(args, holdout=500)))
    hub.write_card(folder)
    body = (folder / 'README.md').read_text()
    assert "epoch 2's weight average (EMA), exported because they had the best PGD-10 accuracy (35.00%)" in body
    assert 'on 500 training images held out from training' in body and attack in body
    assert '| 2 | 60.00 | 30.00 | **55.00** | **35.00** (exported) |' in body
    assert '| 3 (collapse) | 70.00 | 5.00 | 60.00 | 30.00 |' in body
    assert 'best held-out epoch (2)' in hub.results_table([folder])  # ranked by robust accuracy
    # chosen with --select-tolerance: the card says so instead of claiming the best
    summary.update(selected=dict(epoch=2, weights='last', robust_acc=0.3, clean_acc=0.6, tolerance=0.06))
    (folder / 'training/summary.json').write_text(json.dumps(summary))
    hub.write_card(folder)
    body = (folder / 'README.md').read_text()
    assert "epoch 2's last weights, exported as the latest epoch whose PGD-10 accuracy (30.00%)" in body
    assert 'within 6.0 points of the best' in body and 'exported because they had the best' not in body
    # chosen on held-out clean accuracy (standard training, --select-on clean): the card names clean accuracy
    summary.update(selected=dict(epoch=2, weights='ema', robust_acc=None, clean_acc=0.55, tolerance=0.0,
                                 select_on='clean'))
    (folder / 'training/summary.json').write_text(json.dumps(summary))
    hub.write_card(folder)
    body = (folder / 'README.md').read_text()
    assert "epoch 2's weight average (EMA), exported because they had the best clean accuracy (55.00%)" in body
    assert 'PGD-10 accuracy (' not in body
    assert 'clean accuracy after every epoch, which chose the exported epoch' in body
    assert '| 2 | 60.00 | 30.00 | **55.00** (exported) | **35.00** |' in body  # the clean figure chose it
    row = dict(zip(hub.RESULTS_COLUMNS, (c.strip() for c in
                                         hub.results_table([folder]).splitlines()[2].strip('|').split('|'))))
    assert 'best held-out clean epoch (2)' in row['training']
    # no --select-best: the weight average chose over the last weights on the held-out images, or on the test split
    for chosen_on, weights, words in (
            ('heldout', 'ema', 'beat the last weights on the training images held out from training'),
            (None, 'ema', 'beat the last weights on the test split'),
            ('recipe', 'ema', "weight average (EMA), fixed before training (`--export-weights ema`"),
            ('recipe', 'last', 'last weights, fixed before training (`--export-weights last`)'),
            ('heldout', 'last', 'last weights, exported because they beat (or tied) the weight average on the '
             'training'),
            (None, 'last', 'last weights, exported because they beat (or tied) the weight average on the test split')):
        summary.update(selected=None, weights=weights, weights_chosen_on=chosen_on, test_acc_ema=0.5)
        (folder / 'training/summary.json').write_text(json.dumps(summary))
        hub.write_card(folder)
        assert words in (folder / 'README.md').read_text()
    summary.update(weights='last', weights_chosen_on='test', test_acc_ema=None)  # no weight average: nothing chose
    (folder / 'training/summary.json').write_text(json.dumps(summary))
    hub.write_card(folder)
    assert '- Weights:' not in (folder / 'README.md').read_text()
    # a bad record is a clear error, not a traceback
    (folder / 'training/metrics.jsonl').write_text('{"epoch": "one"}\n')
    with pytest.raises(hub.HubError, match='not an epoch record'):
        hub.write_card(folder)


def test_every_committed_release_summary_reads_through_its_owner():
    """``training/summary.json`` of every release (of every version of the trainer) reads as a RunSummary."""
    from timm_mmc.runfolder import RunSummary
    folders = sorted(p for p in (Path(__file__).resolve().parents[1] / 'hub_cards').iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        s = RunSummary.read(folder / 'training' / 'summary.json')
        assert isinstance(s.epochs, int) and 0 < s.test_acc < 1 and s.wall_time_s > 0, folder.name
        assert RunSummary(**s.to_dict()) == s


def test_a_mistyped_summary_is_a_clear_error(release, tmp_path):
    folder = tmp_path / f'{ARCH}.{TAG}'
    shutil.copytree(release['out'], folder)
    (folder / 'training/summary.json').write_text(json.dumps(dict(epochs='ten')))
    with pytest.raises(hub.HubError, match="epochs is 'ten'"):
        hub.write_card(folder)
    (folder / 'training/summary.json').write_text('[1, 2]')
    with pytest.raises(hub.HubError, match='not a JSON object'):
        hub.write_card(folder)


# ----------------------------------------------------------------------------------------------------------- curve

def test_curve_prints_the_runs_own_records(tmp_path, capsys):
    from timm_mmc.runfolder import EpochRecord, RunFolder
    run = RunFolder(tmp_path / 'run')
    run.path.mkdir()
    ema = [0.10, 0.50, 0.70, 0.80, 0.85, 0.83, 0.82]  # best at epoch 5, not the last
    run.write_metrics([EpochRecord(epoch=e, train_acc=0.1 * e, test_acc=0.05 * e, test_acc_ema=a, lr=0.01,
                                   elapsed_s=60.0 * e) for e, a in enumerate(ema, 1)])
    assert hub.main(['curve', str(run.path), '--every', '3']) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == '| epoch | lr | train | test, last weights | test, weight average | elapsed min |'
    assert [row.split(' | ')[0] for row in out[2:]] == ['| 1', '| 3', '| 5', '| 6', '| 7']  # first, every 3rd, best
    assert out[4] == '| 5 | 0.0100 | 50.00 | 25.00 | **85.00** (best) | 5.0 |'
    assert out[-1] == '| 7 | 0.0100 | 70.00 | 35.00 | 82.00 | 7.0 |'
    release = tmp_path / 'release'
    (release / 'training').mkdir(parents=True)
    shutil.copyfile(run.path / 'metrics.jsonl', release / 'training' / 'metrics.jsonl')
    assert hub.learning_curve(release, every=3) == '\n'.join(out)  # a release folder reads the same
    (run.path / 'summary.json').write_text(json.dumps(dict(selected=dict(epoch=2, weights='ema'))))
    exported = hub.learning_curve(run.path, every=3).splitlines()  # a --select-best run: its epoch is shown and named
    assert exported[3] == '| 2 (exported) | 0.0100 | 20.00 | 10.00 | 50.00 | 2.0 |' and len(exported) == len(out) + 1
    assert hub.main(['curve', str(tmp_path / 'none')]) == 2
    assert 'holds no metrics.jsonl' in capsys.readouterr().err
    (run.path / 'metrics.jsonl').write_text('{"epoch": "one"}\n')
    assert hub.main(['curve', str(run.path)]) == 2 and 'Traceback' not in capsys.readouterr().err


def test_curve_against_another_run_sets_them_side_by_side_where_both_measured(tmp_path, capsys):
    from timm_mmc.runfolder import EpochRecord, RunFolder
    for name, shift, test_every, last in (('seed0', 0.0, 1, 7), ('seed1', 0.01, 2, 6)):  # seed1 still going
        run = RunFolder(tmp_path / name)
        run.path.mkdir()
        run.write_metrics([EpochRecord(epoch=e, train_acc=0.1 * e + shift, lr=0.01,
                                       test_acc=0.05 * e + shift if e % test_every == 0 else None,
                                       test_acc_ema=0.06 * e + shift if e % test_every == 0 else None)
                           for e in range(1, last + 1)])
    assert hub.main(['curve', str(tmp_path / 'seed0'), '--against', str(tmp_path / 'seed1'), '--every', '4']) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == ('| epoch | train, seed0 | train, seed1 | test, last, seed0 | test, last, seed1 | '
                      'test, weight average, seed0 | test, weight average, seed1 |')
    assert out[2:] == ['| 4 | 40.00 | 41.00 | 20.00 | 21.00 | 24.00 | 25.00 |',  # every 4th epoch both measured
                       '| 6 | 60.00 | 61.00 | 30.00 | 31.00 | 36.00 | 37.00 |']  # and the last both measured
    with pytest.raises(hub.HubError, match='two runs'):
        hub.compare_curves([tmp_path / 'seed0'])
    RunFolder(tmp_path / 'odd').path.mkdir()
    RunFolder(tmp_path / 'odd').write_metrics([EpochRecord(epoch=1, train_acc=0.1, test_acc=0.1)])
    assert hub.main(['curve', str(tmp_path / 'seed1'), '--against', str(tmp_path / 'odd')]) == 2
    assert 'no epoch in which all of them' in capsys.readouterr().err


def test_runs_table_names_what_each_run_changed_and_what_it_reached(tmp_path, capsys):
    """Runs in one table from their own files: the options that set the weights and differ (from the first run, or
    from a recipe), an option a run's args.yaml lacks read as its default, a run still going as far as it got, and a
    release folder (its training/) read like a run folder."""
    from timm_mmc.config import parse_config
    from timm_mmc.runfolder import EpochRecord, RunFolder, RunSummary
    base = dataclasses.asdict(parse_config(['-c', 'resnet32_mmc']))
    done, going = RunFolder(tmp_path / 'done' / 'training'), RunFolder(tmp_path / 'going')
    for run, extra in ((done, dict(precision='fp32')), (going, dict(lr=0.05, mixup=0.2, threads=1, precision='fp32'))):
        run.path.mkdir(parents=True)
        args = dict(base, **extra, dataset=str(tmp_path / 'elsewhere'), output=str(run.path))
        if run is done:
            del args['mixup']  # written before the option existed: it trained without mixup
        (run.path / 'args.yaml').write_text(yaml.safe_dump(args))
    done.write_metrics([EpochRecord(epoch=e, train_acc=0.5 + 0.1 * e, test_acc=0.4 + 0.1 * e, elapsed_s=120.0 * e)
                        for e in (1, 2, 3)])
    (done.path / 'summary.json').write_text(json.dumps(RunSummary(
        model='resnet32_mmc', test_acc=0.7125, test_acc_last=0.7, test_acc_ema=0.7125, epochs=3, wall_time_s=366.0,
        cpu_time_s=700.0, paused_time_s=90.0, hardware='AMD EPYC (AVX2), 2 threads x 1 proc').to_dict()))
    going.write_metrics([EpochRecord(epoch=1, train_acc=0.3, test_acc=0.25, test_acc_ema=0.2, elapsed_s=60.0,
                                     cpu_s=110.0), EpochRecord(epoch=2, train_acc=0.35, elapsed_s=120.0, cpu_s=230.0,
                                                               paused_s=0.0)])
    assert hub.main(['runs', str(tmp_path / 'done'), str(going.path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith('| run | changed (against done) | epochs | wall min | CPU min | machine | clean, exported')
    assert out[2] == ('| `done` | none | 3 | 6.1 (1.5 paused) | 12 | AMD EPYC (AVX2), 2 threads x 1 proc | 71.25 '
                      '| 70.00 | 71.25 | 80.00 |')
    assert out[3] == ('| `going` | mixup 0.2 (0.0), lr 0.05 (0.02) | 2 of 75 | 2.0 | 4 | - | - (running) '
                      '| 25.00 (epoch 1) | 20.00 (epoch 1) | 35.00 |')  # threads, dataset and output set no weight
    assert hub.main(['runs', str(going.path), '--base', 'resnet32_mmc']) == 0  # a recipe's "auto" is no change
    assert '| `going` | mixup 0.2 (0.0), lr 0.05 (0.02) | 2 of 75 |' in capsys.readouterr().out
    assert hub.main(['runs', str(tmp_path)]) == 0  # a folder of runs: each of them, by name
    assert [line.split(' | ')[0] for line in capsys.readouterr().out.strip().splitlines()[2:]] == ['| `done`',
                                                                                                   '| `going`']
    (tmp_path / 'none').mkdir()
    assert hub.main(['runs', str(tmp_path / 'none')]) == 2 and 'holds no args.yaml' in capsys.readouterr().err
    assert hub.main(['runs', str(going.path), '--base', 'nosuch']) == 2
    assert 'neither a file nor a recipe name' in capsys.readouterr().err
