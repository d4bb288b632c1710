"""Adversarial training: N-FGSM, the held-out slice, choosing the exported epoch, and the collapse warning."""
import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from _shared import train_process
from timm_mmc.adversarial import COLLAPSE_DROP, BestEpoch, best_epoch, collapse_warning, selection_rule
from timm_mmc.attacks import NFGSM, FGSMRandomStart
from timm_mmc.data import DataError, ImageSplit, hold_out, write_synthetic_dataset
from timm_mmc.runfolder import EpochRecord
from timm_mmc.train import Trainer, main

EPS = 8 / 255


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()


def _batch(n: int = 64):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 8, 8, generator=g)
    x[:8] = 0.0  # images at the box's edge: clipping must keep them in [0, 1]
    return x, torch.randint(0, 5, (n,), generator=g)


def test_nfgsm_lies_in_its_wider_ball_and_is_not_projected():
    x, y = _batch()
    attack = NFGSM(_model(), eps=EPS, noise=2.0, loss='ce', seed=3)
    x_adv = attack.perturb(x, y)
    dist = (x_adv - x).abs().flatten(1).amax(1)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert dist.max() <= 3 * EPS + 1e-6
    # the method does not project back to the eps-ball: most examples lie outside it
    assert (dist > EPS + 1e-4).float().mean() > 0.5
    # seeded: the same seed gives the same batch, another seed another one
    assert torch.equal(x_adv, NFGSM(_model(), eps=EPS, loss='ce', seed=3).perturb(x, y))
    assert not torch.equal(x_adv, NFGSM(_model(), eps=EPS, loss='ce', seed=4).perturb(x, y))


def test_nfgsm_without_noise_is_one_signed_step_that_raises_the_loss():
    x, y = _batch()
    model = _model()
    x = x.clamp(0.1, 0.9)  # away from the box, so nothing is clipped
    x_adv = NFGSM(model, eps=EPS, noise=0.0, step=1.0, loss='ce').perturb(x, y)
    assert torch.allclose((x_adv - x).abs(), torch.full_like(x, EPS), atol=1e-6)
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(x_adv), y) > ce(model(x), y)
    # FGSM with random start is a different method: projected to the eps-ball, and it moves the images uphill
    fgsm = FGSMRandomStart(model, eps=EPS, loss='ce').perturb(x, y)
    assert (fgsm - x).abs().max() <= EPS + 1e-6
    assert (fgsm - x).abs().flatten(1).amax(1).min() > EPS / 2  # every image moved (its step is 1.25 eps)
    with torch.no_grad():
        assert ce(model(fgsm), y) > ce(model(x), y)


class _Linear2(nn.Module):
    """Two classes, logits ``[0, mean(x) - 128/255]``: an Linf step of eps moves the second logit by exactly eps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1) - 128 / 255
        return torch.stack([torch.zeros_like(s), s], 1)


def test_pgd_accuracy_counts_clean_and_robust_images_exactly_and_its_shares_add_up():
    """The in-training PGD-10 (what --select-best ranks by), on a model whose answer is known: an image survives eps
    = 8/255 only if its logit lies more than 8/255 from the boundary (values of uniform grey images, in /255)."""
    import contextlib

    from timm_mmc.adversarial import pgd_accuracy
    values, labels = [150, 132, 100, 100, 124, 200], [1, 1, 1, 0, 0, 0]  # robust, broken, wrong, robust, broken, wrong
    images = torch.tensor(values, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, 4, 4).contiguous()
    y = torch.tensor(labels)
    args = dict(objectives=('ce', 'margin'), seed=0, autocast=contextlib.nullcontext, device=torch.device('cpu'),
                channels_last=False)
    assert pgd_accuracy(_Linear2(), images, y, **args).tolist() == [4.0, 2.0, 6.0]
    shares = [pgd_accuracy(_Linear2(), images, y, rank=r, world=2, batch=2, **args) for r in (0, 1)]
    assert (shares[0] + shares[1]).tolist() == [4.0, 2.0, 6.0] and shares[0][2] == shares[1][2] == 3


@pytest.mark.parametrize('noise,step', [(-1.0, 1.0), (2.0, 0.0), (float('nan'), 1.0)])
def test_nfgsm_refuses_bad_settings(noise, step):
    with pytest.raises(ValueError, match='N-FGSM'):
        NFGSM(_model(), eps=EPS, noise=noise, step=step)


def test_hold_out_is_a_seeded_partition():
    n = 50
    split = ImageSplit(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone(),
                       torch.arange(n) % 4, ['a', 'b', 'c', 'd'], 'src')
    train, held = hold_out(split, 10, seed=0)
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert len(train) == 40 and len(held) == 10
    assert ids(train) | ids(held) == set(range(n)) and not ids(train) & ids(held)
    assert torch.equal(held.labels, held.images[:, 0, 0, 0].long() % 4)  # labels travel with their images
    assert ids(hold_out(split, 10, seed=0)[1]) == ids(held) and ids(hold_out(split, 10, seed=1)[1]) != ids(held)
    assert 'held out' in train.source and 'held out' in held.source
    with pytest.raises(DataError, match='--holdout'):
        hold_out(split, n, seed=0)


def _rec(epoch, robust, clean=None, robust_ema=None, clean_ema=None):
    return EpochRecord(epoch=epoch, robust_acc=robust, heldout_clean_acc=clean, robust_acc_ema=robust_ema,
                       heldout_clean_acc_ema=clean_ema)


def test_epoch_record_round_trips_and_refuses_what_a_run_does_not_write(tmp_path):
    """metrics.jsonl has one owner: a record writes the fields every epoch has and the measured others (a 0.0 is a
    figure, not a missing one), reads back equal, and a mistyped field is a RunError naming the file and epoch."""
    from timm_mmc.runfolder import RunError, RunFolder, read_metrics
    recs = [EpochRecord(epoch=1, train_loss=2.0, train_acc=0.1, test_acc=0.2, img_per_s=100.0, lr=0.1, elapsed_s=5.0),
            EpochRecord(epoch=2, train_loss=1.0, train_acc=0.3, test_acc=0.4, robust_acc=0.0, robust_acc_ema=0.0,
                        heldout_clean_acc=0.5, heldout_clean_acc_ema=0.6, robust_attack='PGD-10', collapse=True)]
    assert set(recs[0].to_dict()) == set(EpochRecord._ALWAYS)
    assert recs[1].to_dict()['robust_acc_ema'] == 0.0 and recs[1].to_dict()['collapse'] is True
    run = RunFolder(tmp_path)
    assert run.history() == [] and run.last_epoch() == 0  # before the first epoch ends
    run.write_metrics(recs)
    assert read_metrics(tmp_path / 'metrics.jsonl') == recs == run.history() and run.last_epoch() == 2
    for bad, match in (('{"epoch": true}', 'not an epoch record'), ('[1, 2]', 'not an epoch record'),
                       ('{"epoch": 3, "test_acc": "high"}', 'epoch 3 has test_acc'),
                       ('{"epoch": 3, "collapse": 1}', 'epoch 3 has collapse')):
        (tmp_path / 'metrics.jsonl').write_text(bad + '\n')
        with pytest.raises(RunError, match=match):
            read_metrics(tmp_path / 'metrics.jsonl')


def test_the_weight_average_is_exported_by_held_out_accuracy_when_the_run_has_held_out_images():
    from timm_mmc.adversarial import ema_beats_last
    # the test split favours the average, the held-out images the last weights: with held-out images they decide
    rec = EpochRecord(epoch=3, test_acc=0.80, test_acc_ema=0.82, heldout_clean_acc=0.79, heldout_clean_acc_ema=0.78)
    assert ema_beats_last(rec, heldout=False) and not ema_beats_last(rec, heldout=True)
    rec = EpochRecord(epoch=3, test_acc=0.82, test_acc_ema=0.80, heldout_clean_acc=0.78, heldout_clean_acc_ema=0.79)
    assert ema_beats_last(rec, heldout=True) and not ema_beats_last(rec, heldout=False)
    assert not ema_beats_last(EpochRecord(epoch=3, test_acc=0.5, test_acc_ema=0.5), heldout=False)  # a tie: last
    assert not ema_beats_last(EpochRecord(epoch=3, test_acc=0.5, test_acc_ema=0.6), heldout=True)  # not measured


def test_best_epoch_takes_robust_then_clean_then_the_earlier_and_the_last_weights():
    assert best_epoch([_rec(1, None)]) is None
    hist = [_rec(1, 0.30, 0.70), _rec(2, 0.40, 0.60, 0.42, 0.65), _rec(3, 0.42, 0.70, 0.41, 0.80), _rec(4, 0.10, 0.9)]
    assert best_epoch(hist) == BestEpoch(3, 'last', 0.42, 0.70)
    hist.append(_rec(5, 0.42, 0.70, 0.42, 0.70))  # a tie with epoch 3 keeps epoch 3
    assert best_epoch(hist).epoch == 3
    hist.append(_rec(6, 0.20, 0.5, 0.45, 0.75))
    assert best_epoch(hist) == BestEpoch(6, 'ema', 0.45, 0.75)


def test_best_epoch_with_a_tolerance_takes_the_latest_epoch_near_the_best():
    hist = [_rec(1, 0.30, 0.60), _rec(2, 0.404, 0.70, 0.402, 0.74), _rec(3, 0.38, 0.80),
            _rec(4, 0.396, 0.78, 0.39, 0.79)]
    assert best_epoch(hist) == BestEpoch(2, 'last', 0.404, 0.70)
    assert best_epoch(hist, 0.01) == BestEpoch(4, 'last', 0.396, 0.78)  # epoch 4's weight average is 0.014 below
    assert best_epoch(hist, 0.015) == BestEpoch(4, 'ema', 0.39, 0.79)
    assert best_epoch(hist, 0.005) == BestEpoch(2, 'ema', 0.402, 0.74)  # within it, epoch 2's better clean
    # chosen as the run goes, the rule only moves to the newest epoch or stays (one best/ folder suffices)
    for tol in (0.0, 0.005, 0.01, 0.015, 0.1):
        chosen = [best_epoch(hist[:k], tol) for k in range(1, len(hist) + 1)]
        assert all(b.epoch in (a.epoch, k + 2) for k, (a, b) in enumerate(zip(chosen, chosen[1:])))
    assert 'within 1.5 points' in selection_rule(0.015) and selection_rule(0).startswith('best')


def test_best_epoch_on_clean_ranks_held_out_clean_accuracy_and_needs_no_robust_figure():
    """Standard training (--select-on clean): epochs with held-out clean accuracy only are candidates, ranked by it;
    the tolerance works on clean accuracy; a robust figure, measured in some epochs only, breaks no tie."""
    hist = [_rec(1, None, 0.80, None, 0.82), _rec(2, None, 0.85, None, 0.90), _rec(3, 0.1, 0.88, 0.2, 0.895),
            _rec(4, None, 0.87, None, 0.89)]
    assert best_epoch(hist) == BestEpoch(3, 'ema', 0.2, 0.895)  # robust: only epoch 3 was attacked
    assert best_epoch(hist, on='clean') == BestEpoch(2, 'ema', None, 0.90)
    assert best_epoch(hist, 0.01, 'clean') == BestEpoch(4, 'ema', None, 0.89)  # the latest within a point
    assert best_epoch(hist, 0.006, 'clean') == BestEpoch(3, 'ema', 0.2, 0.895)
    assert best_epoch([_rec(1, 0.3)], on='clean') is None  # no held-out clean figure: nothing to rank
    rule = selection_rule(0, 'clean')
    assert rule.startswith('best clean accuracy') and 'earlier epoch' in rule
    # a clean tie between epoch 74 (no PGD) and the last epoch (PGD measured, as it always is there): the earlier
    tie = [_rec(74, None, 0.904, None, 0.904), _rec(75, 0.0, 0.904, 0.0, 0.904)]
    assert best_epoch(tie, on='clean') == BestEpoch(74, 'last', None, 0.904)
    assert best_epoch(tie, 0.01, 'clean').epoch == 75  # with a tolerance: the latest within it, as always
    with pytest.raises(ValueError, match='--select-on'):
        best_epoch(hist, on='margin')


def test_select_on_clean_needs_a_holdout_but_not_pgd_every_epoch():
    from timm_mmc.config import ConfigError, TrainConfig
    base = dict(model='resnet20_mmc', select_best=True, robust_every=5)
    TrainConfig(**base, holdout=100, select_on='clean').validate()
    with pytest.raises(ConfigError, match='--robust-every 1'):
        TrainConfig(**base, holdout=100).validate()  # robust ranking, PGD only every 5th epoch
    with pytest.raises(ConfigError, match='--holdout N'):
        TrainConfig(**base, select_on='clean').validate()
    with pytest.raises(ConfigError, match='--select-on must be one of robust, clean'):
        TrainConfig(**base, holdout=100, select_on='margin').validate()


def test_select_on_clean_exports_the_best_held_out_clean_epoch(synth, tmp_path, monkeypatch, capsys):
    """A standard run with --holdout --select-best --select-on clean: clean accuracy on the held-out images (never the
    test split) is measured every epoch for both weights, no PGD runs, and the best epoch is the one exported. With
    --test-every 2 the test split is measured at epoch 2 and at the last only."""
    seen = []
    clean = iter([0.5, 0.6, 0.7, 0.65, 0.6, 0.55])  # last, weight average; epoch 2's last weights are the best

    def fake(self, model=None, attack=True):
        seen.append((self.robust_set.source, attack))
        value = next(clean)
        return value, value
    monkeypatch.setattr(Trainer, 'robust_accuracy', fake)
    out = tmp_path / 'run'
    args = ['--model', 'resnet20_mmc', '--feature-dim', '16', '--epochs', '3', '--batch-size', '32', '--lr', '0.005',
            '--holdout', '64', '--robust-every', '0', '--select-best', '--select-on', 'clean', '--ema-decay', '0.9',
            '--no-progress', '--threads', '1', '--keep-checkpoints', '5', '--precision', 'fp32', '--test-every', '2']
    assert main([*args, '--dataset', synth, '--output', str(out)]) == 0
    log = capsys.readouterr().out
    assert len(seen) == 6 and all('held out' in src and attack is False for src, attack in seen)
    hist = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [(h['heldout_clean_acc'], h['heldout_clean_acc_ema']) for h in hist] == [(0.5, 0.6), (0.7, 0.65),
                                                                                      (0.6, 0.55)]
    assert all(h['robust_acc'] is None and 'robust_acc_ema' not in h for h in hist)  # no PGD ran
    assert [h['test_acc'] is not None for h in hist] == [False, True, True]
    assert [h['test_acc_ema'] is not None for h in hist] == [False, True, True]
    lines = [line for line in log.splitlines() if line.startswith('epoch ')]
    assert 'test' not in lines[0] and 'held-out clean EMA 0.6000' in lines[0] and 'test EMA' in lines[1]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['selected'] == dict(epoch=2, weights='last', robust_acc=None, clean_acc=0.7,
                                       rule=selection_rule(0, 'clean'), tolerance=0.0, select_on='clean')
    assert 'epoch 2, last weights: the best held-out clean accuracy, 70.00%' in log
    exported = load_file(str(out / 'model.safetensors'))
    chosen = load_file(str(sorted((out / 'checkpoints').glob('step_*'))[1] / 'model.safetensors'))
    weight = 'stages.0.0.conv1.weight'
    assert torch.equal(exported[weight], chosen['model.' + weight].contiguous())


def test_collapse_warning_fires_only_on_a_large_fall():
    ok = [_rec(1, 0.40), _rec(2, None), _rec(3, 0.35)]
    assert collapse_warning(ok) is None and collapse_warning(ok[:1]) is None
    fell = ok + [_rec(4, 0.40 - COLLAPSE_DROP - 0.01)]
    msg = collapse_warning(fell)
    assert msg.startswith('warning') and 'epoch 4' in msg and 'epoch 1' in msg and '40.0%' in msg


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    return str(write_synthetic_dataset(tmp_path_factory.mktemp('synth') / 'ds', n_train=192, n_test=32))


ARGS = ['--model', 'resnet20_mmc', '--feature-dim', '16', '--epochs', '3', '--batch-size', '32', '--lr', '0.005',
        '--adv', 'nfgsm', '--holdout', '64', '--robust-every', '1', '--select-best', '--ema-decay', '0.9',
        '--no-progress', '--threads', '1', '--keep-checkpoints', '5', '--precision', 'fp32']


@pytest.mark.parametrize('tolerance,epoch', [(0.0, 1), (0.06, 2)])
def test_select_best_exports_the_best_held_out_epoch_not_the_last(synth, tmp_path, monkeypatch, capsys, tolerance,
                                                                  epoch):
    """Robust accuracy is made to peak in epoch 1 and then collapse: the export is epoch 1's weights (epoch 2's,
    0.05 below the peak, with a tolerance of 0.06), and the log warns. The held-out images are measured, never the
    test split."""
    seen = []
    robust = iter([(0.9, 0.6), (0.9, 0.5), (0.8, 0.55), (0.8, 0.2), (0.7, 0.1), (0.7, 0.1)])

    def fake(self, model=None):
        seen.append(self.robust_set.source)
        return next(robust)
    monkeypatch.setattr(Trainer, 'robust_accuracy', fake)
    out = tmp_path / 'run'
    assert main([*ARGS, '--select-tolerance', str(tolerance), '--dataset', synth, '--output', str(out)]) == 0
    log = capsys.readouterr().out
    assert all('held out' in s for s in seen) and len(seen) == 6  # last and EMA weights, every epoch
    assert 'warning: robust accuracy collapsed in epoch 3' in log
    hist = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [h.get('collapse', False) for h in hist] == [False, False, True]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['selected']['epoch'] == epoch and summary['weights'] == 'last'
    assert summary['selected']['rule'] == selection_rule(tolerance)
    assert f'epoch {epoch}, last weights' in log
    exported = load_file(str(out / 'model.safetensors'))
    steps = sorted((out / 'checkpoints').glob('step_*'))
    chosen, last = (load_file(str(steps[i] / 'model.safetensors')) for i in (epoch - 1, -1))
    weight = 'stages.0.0.conv1.weight'
    assert torch.equal(exported[weight], chosen['model.' + weight].contiguous())
    assert not torch.equal(exported[weight], last['model.' + weight].contiguous())


@pytest.mark.long(29)
def test_select_best_after_sigkill_and_resume_is_bit_identical(tmp_path):
    """96 training images after the 16 held out (fewer than ARGS holds out: PGD-10 of both weights every epoch is
    most of this test's time): 3 steps per epoch. Killed in epoch 3 (step 8), resumed from the end of epoch 2: the
    same records, the same best epoch and the same exported bytes as the uncut run."""
    data = write_synthetic_dataset(tmp_path / 'ds', n_train=112, n_test=16)
    ref, cut = tmp_path / 'ref', tmp_path / 'cut'
    args = [*ARGS, '--holdout', '16', '--dataset', str(data)]
    assert main([*args, '--output', str(ref)]) == 0
    best = json.loads((ref / 'best' / 'best.json').read_text())['epoch']
    assert best < 3, 'the best epoch must come before the kill, for the resume to have to keep it: change the data'
    assert train_process([*args, '--output', str(cut)], {'TIMM_MMC_FAULT': 'step:8'}).returncode != 0
    assert not (cut / 'model.safetensors').exists() and (cut / 'best' / 'best.json').is_file()
    assert main(['--output', str(cut), '--resume']) == 0
    for name in ('metrics.jsonl', 'best/best.json'):
        a = [{k: v for k, v in json.loads(line).items() if k not in EpochRecord.TIMINGS}
             for line in (ref / name).read_text().splitlines()]
        b = [{k: v for k, v in json.loads(line).items() if k not in EpochRecord.TIMINGS}
             for line in (cut / name).read_text().splitlines()]
        assert a == b, name
    assert (ref / 'model.safetensors').read_bytes() == (cut / 'model.safetensors').read_bytes()
    assert json.loads((ref / 'summary.json').read_text())['selected'] == \
        json.loads((cut / 'summary.json').read_text())['selected']


def test_a_kill_between_the_checkpoint_and_best_is_mended_by_the_resume(synth, tmp_path):
    """Killed after epoch 2's checkpoint, before its weights reach best/ (which still holds epoch 1): the resume
    writes best/ from the checkpoint, which holds epoch 2's weights, and exports what the uncut run exports."""
    args = ['--model', 'resnet20_mmc', '--feature-dim', '16', '--epochs', '2', '--batch-size', '32', '--lr', '0.005',
            '--holdout', '64', '--robust-every', '0', '--select-best', '--select-on', 'clean', '--select-tolerance',
            '0.99', '--no-progress', '--threads', '1', '--precision', 'fp32', '--dataset', synth]  # the latest wins
    ref, cut = tmp_path / 'ref', tmp_path / 'cut'
    assert main([*args, '--output', str(ref)]) == 0
    assert train_process([*args, '--output', str(cut)], {'TIMM_MMC_FAULT': 'best:8'}).returncode != 0  # 4 steps an epoch
    assert json.loads((cut / 'best' / 'best.json').read_text())['epoch'] == 1
    assert main(['--output', str(cut), '--resume']) == 0
    assert json.loads((cut / 'best' / 'best.json').read_text())['epoch'] == 2
    assert (ref / 'model.safetensors').read_bytes() == (cut / 'model.safetensors').read_bytes()


@pytest.mark.long(37)
def test_what_a_run_measures_never_changes_its_weights(synth, tmp_path):
    """--test-every and --robust-every may change on a resume (RESUME_MUTABLE) because measuring draws nothing the
    training uses: the same run measured every epoch (test split and held-out PGD-10) and once at the end only ends
    with the same bytes in every tensor of its last checkpoint (weights, weight average, optimizer) and its export."""
    base = [a for a in ARGS if a != '--select-best']
    outs = []
    for every in (['--robust-every', '1', '--test-every', '1'], ['--robust-every', '0', '--test-every', '3']):
        outs.append(tmp_path / f'run{len(outs)}')
        args = [*base, '--dataset', synth, '--output', str(outs[-1])]
        args[args.index('--robust-every'):args.index('--robust-every') + 2] = every
        assert main(args) == 0
    hist = [[json.loads(line) for line in (o / 'metrics.jsonl').read_text().splitlines()] for o in outs]
    assert [h['robust_acc'] is not None for h in hist[0]] == [True] * 3  # the first run measured every epoch,
    assert [h['test_acc'] is not None for h in hist[1]] == [False, False, True]  # the second at the end only
    assert hist[1][0]['robust_acc'] is None and hist[1][1]['robust_acc'] is None
    last = [sorted((o / 'checkpoints').glob('step_*'))[-1] for o in outs]
    pairs = [[c / f for c in last] for f in ('model.safetensors', 'ema.safetensors', 'optimizer.safetensors')]
    for files in (*pairs, [o / 'model.safetensors' for o in outs]):
        a, b = (load_file(str(f)) for f in files)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
