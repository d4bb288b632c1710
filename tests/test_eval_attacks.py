"""Exact-answer tests of the evaluation attacks on tiny models (linear classifiers, toy MMC heads)."""
from __future__ import annotations

import dataclasses
from typing import Any, List, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval.aa import resolved_budget, run_autoattack
from eval.cw import CWL2
from eval.spsa import SPSA
from eval.suite import AttackSpec, Records, SuiteOptions, build_suite, run_suite, summarise, unused_options
from eval.threat import AttackFamily, parse_eps
from timm_mmc import (PGD, RULES, AttackResult, BestAdversarial, CenterClassifier, CheckError, EvalReport, HeadConfig,
                      ScaledLogits, adam_update, check_box, check_linf_batch, choose_logit_scale, project_linf,
                      uniform_start)


class Linear2(nn.Module):
    """Two-class linear classifier on flattened images: logits ``[0, w.x + b]``."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def _frozen(model: nn.Module) -> nn.Module:
    """The model in eval mode with no parameter gradients (attacks need input gradients only)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _self_labelled(model: nn.Module, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 3x4x4 images labelled by the model's own predictions (clean accuracy 100%)."""
    x = torch.rand(n, 3, 4, 4)
    with torch.no_grad():
        return x, model(x).argmax(1)


def _summary(model: nn.Module, specs: List[AttackSpec], opts: SuiteOptions, x: torch.Tensor, y: torch.Tensor,
             **kwargs: Any) -> EvalReport:
    """Run ``specs`` on ``(x, y)`` (targets ``y + 1``, positions 0..n-1, 10 classes) and summarise the records."""
    rec = run_suite(model, specs, opts, x, y, (y + 1) % 10, torch.arange(len(x)), 10, progress=False, **kwargs)
    return summarise(rec, specs, _toy_report())


def _toy_report() -> EvalReport:
    """A fresh report description for :func:`summarise` (its dict fields are shared with what it returns)."""
    return EvalReport(model='toy', dataset='synthetic', split='test', n=0, suite='custom', seed=0)


def _toy_mmc(center_norm: float = 30.0, seed: int = 0, d_in: int = 48, feat: int = 9, gain: float = 45.0):
    """A linear feature map and a Max-Mahalanobis head whose clean margins (~1.1 C^2) saturate cross-entropy.

    ``feat = 9``: the 10 centers span the whole feature space, so no feature direction leaves every margin unchanged.
    """
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d_in, feat)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(feat, d_in, generator=g) * gain)
        lin.bias.copy_(-lin.weight.sum(1) * 0.5)  # z(0.5) = 0
    head = CenterClassifier(10, HeadConfig(head='mmc', feature_dim=feat, center_norm=center_norm))
    model = _frozen(nn.Sequential(nn.Flatten(), lin, head))
    # clean points whose feature is (near) the center of their class: margins ~1000, far past float32 saturation
    y = torch.arange(40) % 10
    x = 0.5 + head.mu[y] @ torch.linalg.pinv(lin.weight).t() + 0.002 * torch.randn(40, d_in, generator=g)
    assert x.min() > 0 and x.max() < 1
    x = x.view(40, 3, 4, 4)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()
    return model, x, y


def test_parse_eps_units():
    assert parse_eps('8/255') == pytest.approx(8 / 255)
    assert parse_eps('0.5') == 0.5
    for bad in ('0', '-1/255', '8', '1.5', 'abc', '1/0'):
        with pytest.raises(ValueError):
            parse_eps(bad)


def test_project_linf_and_uniform_start_stay_in_the_ball_and_the_box():
    x = torch.tensor([[0.0, 0.02, 0.5, 0.99, 1.0]])
    eps = 0.03
    far = torch.tensor([[-1.0, 0.5, 0.45, 2.0, 0.9]])
    expected = torch.tensor([[0.0, 0.05, 0.47, 1.0, 0.97]])  # the ball first, then the box
    torch.testing.assert_close(project_linf(far, x, eps), expected)
    inside = torch.tensor([[0.01, 0.0, 0.52, 0.98, 0.99]])
    assert torch.equal(project_linf(inside, x, eps), inside)
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(64, 3, 4, 4)
    start = uniform_start(xs, eps, g)
    check_linf_batch(start, xs, eps)
    assert (start - xs).abs().amax() > 0.9 * eps  # it does move (and fills the ball)
    assert torch.equal(start, uniform_start(xs, eps, torch.Generator().manual_seed(0)))  # seeded


def test_run_time_checks_name_what_is_wrong():
    x = torch.full((2, 3), 0.5)
    check_linf_batch(x + 0.01, x, 0.01)  # on the sphere of the ball: fine
    for bad, needle in [(x + 0.02, 'eps-ball'), (x.clone().fill_(1.2), r'\[0, 1\]'),
                        (x.clone().fill_(float('nan')), 'NaN'), (x[:1], 'shape')]:
        with pytest.raises(CheckError, match=needle):
            check_linf_batch(bad, x, 0.01 if needle != r'\[0, 1\]' else 1.0)
    with pytest.raises(CheckError, match=r'\[0, 1\]'):
        check_box(torch.tensor([[-0.1, 0.5]]))
    check_box(torch.zeros(0, 3))  # an empty batch is in the box


def test_eval_aa_still_offers_the_scaled_logits_the_cards_name():
    import eval.aa  # the release cards point AutoAttack users at eval/aa.py's ScaledLogits
    assert eval.aa.ScaledLogits is ScaledLogits and eval.aa.choose_logit_scale is choose_logit_scale


def test_best_adversarial_keeps_the_first_fooling_iterate_or_the_smallest_score():
    start = torch.zeros(4, 1)
    first = BestAdversarial(start)
    first.update(torch.full((4, 1), 1.0), torch.tensor([True, False, False, False]))
    first.update(torch.full((4, 1), 2.0), torch.tensor([True, True, False, False]))
    # the last iterate wins where it fools the model (sample 2) or nothing fooled it before (sample 3)
    out = first.finish(torch.full((4, 1), 3.0), torch.tensor([False, False, True, False]))
    assert out.squeeze(1).tolist() == [1.0, 2.0, 3.0, 3.0]
    assert first.found.tolist() == [True, True, False, False]

    scored = BestAdversarial(start)  # C&W: the fooling candidate of smallest distance, on a subset of rows
    scored.update(torch.tensor([[5.0], [6.0]]), torch.tensor([True, True]), score=torch.tensor([0.5, 0.6]),
                  rows=torch.tensor([1, 3]))
    scored.update(torch.tensor([[7.0], [8.0]]), torch.tensor([True, False]), score=torch.tensor([0.7, 0.1]),
                  rows=torch.tensor([1, 3]))
    scored.update(torch.tensor([[9.0]]), torch.tensor([True]), score=torch.tensor([0.2]), rows=torch.tensor([1]))
    assert scored.x.squeeze(1).tolist() == [0.0, 9.0, 0.0, 6.0]
    assert scored.score.tolist() == [float('inf'), pytest.approx(0.2), float('inf'), pytest.approx(0.6)]
    assert scored.found.tolist() == [False, True, False, True]


class Detour(nn.Module):
    """Logits from the mean pixel m: class 0, but class 1 for 0.35 < m < 0.45; class 2's logit rises towards m = 0.7
    and never wins. An attack towards class 2 climbs m through class 1 and ends back in class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.ones_like(m), 2 * ((m > 0.35) & (m < 0.45)).float(), 0.5 - 10 * (m - 0.7) ** 2], 1)


@pytest.mark.parametrize('attack', ['pgd', 'spsa'])
def test_a_targeted_attack_keeps_an_iterate_in_a_third_class(attack):
    """Robust accuracy counts any wrong class: the iterate that passed through class 1 breaks the point, although
    the attack never reached its target and its last iterate is correct again."""
    x, y, target = torch.full((1, 3, 4, 4), 0.3), torch.tensor([0]), torch.tensor([2])
    model = Detour()
    if attack == 'pgd':
        att = PGD(model, eps=0.5, alpha=0.1, steps=6, loss='margin', random_start=False, targeted=True)
        last = PGD(model, eps=0.5, alpha=0.1, steps=6, loss='margin', random_start=False, targeted=True,
                   keep_best=False).perturb(x, y, target)
    else:
        att = SPSA(model, eps=0.5, steps=10, n_samples=32, delta=0.01, lr=0.05, targeted=True, random_start=False)
        last = None
    x_adv = att.perturb(x, y, target)
    assert model(x_adv).argmax(1).item() == 1
    assert RULES['targeted_keep_best'] == 'misclassified'  # what every report says this code does
    if last is not None:  # without keep-best the attack ends where the point is correct again
        assert model(last).argmax(1).item() == 0


def test_pgd_linear_matches_closed_form_worst_case():
    torch.manual_seed(0)
    d = 3 * 4 * 4
    w = torch.randn(d)
    x = torch.rand(200, 3, 4, 4) * 0.6 + 0.2
    model = Linear2(w, 0.0)
    s = x.flatten(1) @ w
    b = -s.median().item()
    model.b = b
    y = (s + b > 0).long()
    eps = 8 / 255
    # closed form, box included: every coordinate moves by eps against its class, clipped to [0, 1]
    sign = torch.where(y == 1, -1.0, 1.0)[:, None] * w.sign()[None]
    x_worst = (x.flatten(1) + eps * sign).clamp(0, 1)
    s_worst = x_worst @ w + b
    robust_exact = torch.where(y == 1, s_worst > 0, s_worst < 0)
    assert 0.2 < robust_exact.float().mean() < 0.95  # a test with something to find
    for loss in ('margin', 'ce'):
        x_adv = PGD(model, eps=eps, alpha=eps / 4, steps=10, loss=loss, seed=1).perturb(x, y)
        check_linf_batch(x_adv, x, eps)
        robust = model(x_adv).argmax(1) == y
        assert torch.equal(robust, robust_exact), loss


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a GPU'))])
def test_pgd_eps_zero_gives_clean_accuracy_through_the_suite(device):
    torch.manual_seed(0)
    model = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)))
    x, y = _self_labelled(model, 30)
    y[:7] = (y[:7] + 1) % 10  # 7 wrong: clean accuracy 23/30
    model, x, y = model.to(device), x.to(device), y.to(device)  # positions stay on the CPU, as eval.robustness has them
    x_adv = PGD(model, eps=0.0, steps=5).perturb(x, y)
    assert torch.equal(x_adv, x)
    opts = SuiteOptions(eps=(0.0,), pgd_steps=(5,), objectives=('ce', 'margin'), batch_size=8)
    specs = build_suite('quick', opts, families=None)
    specs = [s for s in specs if s.family.value == 'pgd']
    out = _summary(model, specs, opts, x, y)
    assert out.clean_accuracy == pytest.approx(23 / 30)
    assert len(out.attacks) == 4  # targeted and untargeted, two objectives
    for r in out.attacks.values():
        assert r.accuracy == pytest.approx(23 / 30)
    assert out.worst_case['0'].accuracy == pytest.approx(23 / 30)
    assert out.worst_case_slice == {}  # every attack covered every point

    # one attack on the first 10 points only (as AutoAttack with aa_n): the worst case over all 30 counts it there
    # only, and the slice entry reports the first 10, where all attacks ran (7 of them misclassified clean)
    specs[-1].n_limit = 10
    out = _summary(model, specs, opts, x, y)
    assert out.worst_case['0'].n == 30 and out.worst_case['0'].accuracy == pytest.approx(23 / 30)
    sl = out.worst_case_slice['0']
    assert sl.n == 10 and sl.accuracy == pytest.approx(3 / 10)
    assert sl.attacks == out.worst_case['0'].attacks and sl.partial == []

    # a second attack on the first 4 only (as SPSA with spsa_n): the slice stays the largest prefix, naming it
    specs[0].n_limit = 4
    out = _summary(model, specs, opts, x, y)
    sl = out.worst_case_slice['0']
    assert sl.n == 10 and sl.accuracy == pytest.approx(3 / 10) and sl.partial == [specs[0].name]


def test_adam_update_takes_torch_adams_steps():
    """C&W and SPSA share one Adam step: the same iterates as torch.optim.Adam, row by row."""
    torch.manual_seed(0)
    target = torch.randn(4, 3)
    p = torch.zeros(4, 3, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    x, m, v = torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 3)
    for t in range(1, 6):
        opt.zero_grad()
        ((p - target) ** 3).abs().sum().backward()
        opt.step()
        grad = 3 * (x - target).abs() ** 2 * torch.sign(x - target)
        step, m, v = adam_update(grad, m, v, t, 0.1)
        x = x - step
        torch.testing.assert_close(x, p.detach())


def test_cw_minimal_l2_on_linear_binary_classifier():
    torch.manual_seed(0)
    d = 3 * 4 * 4
    w = torch.randn(d)
    b = -0.5 * w.sum().item()  # score 0 at the grey image
    y = torch.arange(12) % 2
    dist = torch.linspace(0.05, 0.3, 12)  # wanted L2 distance to the boundary w.x + b = 0
    base = 0.5 + 0.05 * (torch.rand(12, d) - 0.5)
    want = torch.where(y == 1, dist, -dist) * w.norm()  # w.x + b, signed: class 1 iff > 0
    x = base + ((want - (base @ w + b)) / w.norm() ** 2)[:, None] * w[None]
    assert x.min() > 0 and x.max() < 1  # the projection onto the boundary stays inside the box
    x = x.view(12, 3, 4, 4)
    model = Linear2(w, b)
    exact = (x.flatten(1) @ w + b).abs() / w.norm()
    assert torch.allclose(exact, dist, atol=1e-5)
    assert torch.equal(model(x).argmax(1), y)
    res = CWL2(model, binary_steps=9, max_iter=1000, lr=5e-3, initial_const=0.01).perturb(x, y)
    assert res.success.all()
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    measured = (res.x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(measured, res.l2, atol=1e-6)
    rel = res.l2 / exact
    assert (rel >= 1 - 1e-3).all() and (rel <= 1.05).all(), rel


def test_cw_targeted_reaches_the_target():
    torch.manual_seed(0)
    model = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(48, 5)))
    x, y = _self_labelled(model, 6)
    t = (y + 1) % 5
    res = CWL2(model, targeted=True, binary_steps=5, max_iter=200, lr=0.05).perturb(x, y, t)
    assert res.success.all()
    assert torch.equal(model(res.x_adv).argmax(1), t)


def test_spsa_close_to_pgd_on_a_smooth_model():
    torch.manual_seed(0)
    model = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.Tanh(), nn.Linear(32, 10)))
    x, y = _self_labelled(model, 64)
    eps = 0.06
    pgd_acc = (model(PGD(model, eps=eps, alpha=eps / 8, steps=40, loss='margin', seed=0).perturb(x, y))
               .argmax(1) == y).float().mean().item()
    x_spsa = SPSA(model, eps=eps, steps=20, n_samples=128, delta=0.01, lr=0.01, seed=0).perturb(x, y)
    check_linf_batch(x_spsa, x, eps)
    spsa_acc = (model(x_spsa).argmax(1) == y).float().mean().item()
    assert 0.1 < pgd_acc < 0.9  # something to find, not everything
    assert spsa_acc >= pgd_acc - 0.05  # a gradient-free attack should not beat a white-box one on a smooth model
    assert spsa_acc - pgd_acc <= 0.15, (spsa_acc, pgd_acc)


def test_mmc_adaptive_objective_breaks_what_ce_cannot():
    model, x, y = _toy_mmc()
    eps = 8 / 255
    ce = PGD(model, eps=eps, alpha=2 / 255, steps=10, loss='ce', seed=0)
    acc_ce = (model(ce.perturb(x, y)).argmax(1) == y).float().mean().item()
    assert ce.last_zero_grad_fraction == 1.0  # cross-entropy saturated: exactly zero input gradients
    assert acc_ce == 1.0
    mm = PGD(model, eps=eps, alpha=2 / 255, steps=10, loss='mm', seed=0)
    acc_mm = (model(mm.perturb(x, y)).argmax(1) == y).float().mean().item()
    assert acc_mm <= 0.6, acc_mm  # untargeted: push z away from mu_y
    t = (y + 3) % 10
    mm_t = PGD(model, eps=eps, alpha=2 / 255, steps=10, loss='mm', targeted=True, seed=0)
    pred_t = model(mm_t.perturb(x, y, t)).argmax(1)
    assert (pred_t == t).all()  # targeted: pull z to mu_t
    # the suite's diagnostics flag it
    opts = SuiteOptions(eps=(eps,), pgd_steps=(10,), objectives=('ce', 'mm'), batch_size=40)
    specs = [s for s in build_suite('quick', opts) if s.family.value == 'pgd']
    out = _summary(model, specs, opts, x, y, diagnostic_objectives=('ce', 'mm'))
    assert out.diagnostics['zero_input_gradient_fraction']['ce'] == 1.0
    assert any('gradient masking' in w and "'ce'" in w for w in out.warnings)
    ce_acc = out.attacks['pgd10-un-8-ce'].accuracy
    mm_acc = out.attacks['pgd10-un-8-mm'].accuracy
    assert ce_acc == 1.0 and mm_acc <= 0.6
    assert out.worst_case['8'].accuracy <= mm_acc  # the worst case takes the adaptive objective (and targeted)


def test_scaled_logits_keep_predictions_and_dlr_and_unsaturate_ce():
    model, x, y = _toy_mmc()
    scale, max_margin = choose_logit_scale(model, x)
    assert max_margin > 500 and 0 < scale < 0.05
    scaled = ScaledLogits(model, scale)
    with torch.no_grad():
        raw, sc = model(x), scaled(x)
    assert torch.equal(raw.argmax(1), sc.argmax(1))

    def dlr(z):
        zs = z.sort(1).values
        zy = z.gather(1, y[:, None]).squeeze(1)
        other = z.masked_fill(F.one_hot(y, 10).bool(), float('-inf')).max(1).values
        return -(zy - other) / (zs[:, -1] - zs[:, -3] + 1e-12)

    assert torch.allclose(dlr(raw), dlr(sc), rtol=1e-4, atol=1e-6)
    xr = x.clone().requires_grad_(True)
    (g_raw,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction='sum'), xr)
    xs = x.clone().requires_grad_(True)
    (g_sc,) = torch.autograd.grad(F.cross_entropy(scaled(xs), y, reduction='sum'), xs)
    assert (g_raw.flatten(1).abs().amax(1) == 0).all()  # raw logits: CE gradient exactly zero
    assert (g_sc.flatten(1).abs().amax(1) > 0).all()  # scaled: alive


def test_apgd_ce_on_scaled_logits_differs_from_raw_on_an_mm_model():
    """What eval/README.md tells AutoAttack and RobustBench users (issue 15): on an MM head, APGD-CE on the raw logits
    has exactly zero gradients and finds nothing; on :class:`timm_mmc.ScaledLogits` it breaks the model. Both the
    robust accuracy and the adversarial examples differ."""
    model, x, y = _toy_mmc()
    x, y = x[:20], y[:20]
    eps = 8 / 255
    raw = run_autoattack(model, x, y, eps, version='custom', attacks=['apgd-ce'], n_iter=20, batch_size=20)
    scale, max_margin = choose_logit_scale(model, x)
    scaled = run_autoattack(ScaledLogits(model, scale), x, y, eps, version='custom', attacks=['apgd-ce'],
                            n_iter=20, batch_size=20)
    check_linf_batch(raw.x_adv, x, eps)
    check_linf_batch(scaled.x_adv, x, eps)
    acc_raw, acc_scaled = raw.robust.float().mean().item(), scaled.robust.float().mean().item()
    assert max_margin > 500 and scale < 0.05  # a saturating MM head, as the released ones
    assert acc_raw == 1.0  # APGD-CE on raw logits: zero gradients, nothing found
    assert torch.equal(raw.x_adv, x)  # not one pixel moved
    assert acc_scaled <= 0.2 and acc_raw - acc_scaled >= 0.8, (acc_raw, acc_scaled)
    with torch.no_grad():  # judged on the raw model: the scale changes no prediction
        assert torch.equal(scaled.robust, model(scaled.x_adv).argmax(1) == y)
    assert scaled.log  # AutoAttack's own log was captured


def test_autoattack_warnings_are_captured():
    torch.manual_seed(0)

    class Noisy(nn.Module):  # a randomised model: AutoAttack warns and we keep the warning
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(48, 10)

        def forward(self, xx):
            return self.lin(xx.flatten(1)) + 0.5 * torch.randn(xx.shape[0], 10)

    x = torch.rand(8, 3, 4, 4)
    y = torch.randint(0, 10, (8,))
    out = run_autoattack(Noisy().eval(), x, y, 8 / 255, version='custom', attacks=['apgd-ce'], n_iter=2,
                         batch_size=8)
    assert any('randomized' in w for w in out.warnings)


def test_a_shortened_standard_autoattack_is_never_named_standard():
    """--aa-version standard with fewer APGD iterations or target classes is reported as standard-shortened, so that
    no card, table or RobustBench file can publish it as the standard AutoAttack."""
    def aa(**kw):
        return next(s for s in build_suite('autoattack', SuiteOptions(aa_version='standard', **kw))
                    if s.family.value == 'autoattack')
    full = aa()
    assert full.version == 'standard' and full.name == 'autoattack-standard-8' and full.config.version == 'standard'
    assert aa(aa_n_iter=100, aa_target_classes=9).version == 'standard'
    for kw in (dict(aa_n_iter=5), dict(aa_target_classes=1)):
        short = aa(**kw)
        assert short.version == 'standard-shortened' and 'standard-shortened' in short.name + short.column
        assert short.config.version == 'standard'  # what pyautoattack is asked to run
    rep = EvalReport(model='m', dataset='d', split='test', n=1, suite='autoattack', seed=0)
    rep.attacks = {'a': AttackResult(name='a', family='autoattack', threat='Linf', eps=8 / 255, targeted=False, n=1,
                                     n_attacked=1, accuracy=0.5, version=aa(aa_n_iter=5).version)}
    from timm_mmc.hub.robustbench import model_info
    assert model_info(rep, 'resnet32_mmc', {}, {})['autoattack_acc'] is None


def test_robustbench_autoattack_acc_only_on_the_images_clean_acc_counts():
    """``--aa-n 100 --n-examples 1000``: AutoAttack's figure on the first 100 beside clean accuracy on 1000 is not a
    RobustBench pair; the file leaves autoattack_acc empty and says why, with the prefix figure in the footnote."""
    from timm_mmc.hub.robustbench import model_info
    rep = EvalReport(model='m', dataset='d', split='test', n=1000, suite='autoattack', seed=0, clean_accuracy=0.9)

    def info(aa_n: int):
        rep.attacks = {'a': AttackResult(name='a', family='autoattack', threat='Linf', eps=8 / 255, targeted=False,
                                         n=aa_n, n_attacked=aa_n, accuracy=0.4, version='standard')}
        return model_info(rep, 'resnet32_mmc', {}, {})
    part, whole = info(100), info(1000)
    assert part['autoattack_acc'] is None and part['autoattack_n'] == 100
    assert 'first 100 of the 1000' in part['footnote'] and '40.00%' in part['footnote']
    assert whole['autoattack_acc'] == '40.00' and 'first' not in whole['footnote']


def test_autoattack_bad_arguments():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    x, y = torch.rand(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match='unknown AutoAttack version'):
        run_autoattack(model, x, y, 0.03, version='plus2')
    with pytest.raises(ValueError, match='custom'):
        run_autoattack(model, x, y, 0.03, version='standard', attacks=['apgd-ce'])


class Quantised(nn.Module):
    """A linear classifier behind input quantisation: zero gradients everywhere (gradient masking by design)."""

    def __init__(self, levels: int = 20) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.lin = nn.Linear(48, 10)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.round(x * self.levels).flatten(1) / self.levels)


def test_diagnostics_catch_gradient_masking():
    model = _frozen(Quantised())
    x, y = _self_labelled(model, 40)
    opts = SuiteOptions(eps=(16 / 255, 32 / 255), pgd_steps=(5,), objectives=('ce', 'margin'), spsa_n=40,
                        spsa_samples=32, spsa_steps=10, spsa_lr=0.02, batch_size=40)
    specs = build_suite('paper', opts, families=[AttackFamily.PGD, AttackFamily.SPSA])
    out = _summary(model, specs, opts, x, y, diagnostic_objectives=('ce', 'margin'))
    assert out.diagnostics['zero_input_gradient_fraction']['margin'] == 1.0
    beat = out.diagnostics['blackbox_beats_whitebox']
    assert sum(beat.values()) > 0, out.attacks
    assert any('no model gradients' in w for w in out.warnings)
    assert out.worst_case['16'].accuracy <= out.columns['SPSA10 un 16'].accuracy


def test_runtime_check_rejects_out_of_ball_examples(monkeypatch):
    model = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)))
    x, y = _self_labelled(model, 8)
    monkeypatch.setattr(PGD, 'perturb', lambda self, xb, yb, t=None: (xb + 2 * self.eps).clamp(0, 1))
    opts = SuiteOptions(eps=(8 / 255,), pgd_steps=(2,), objectives=('margin',), batch_size=8)
    specs = build_suite('quick', opts)
    specs = [s for s in specs if s.family.value == 'pgd']
    with pytest.raises(CheckError, match='eps-ball'):
        _summary(model, specs, opts, x, y)


def test_resolved_budget_fills_in_autoattacks_defaults_and_caps_the_target_classes():
    """What a resume compares and the report names: AutoAttack's own 100 iterations and 9 target classes (3 for the
    fast version), a given value as given, and target classes beyond C - 1 as the C - 1 that run."""
    assert resolved_budget('standard') == (100, 9) and resolved_budget('fast') == (100, 3)
    assert resolved_budget('standard', 20, 5, 10) == (20, 5)
    assert resolved_budget('standard', None, 20, 10) == (100, 9) and resolved_budget('fast', None, None, 3) == (100, 2)
    assert resolved_budget('rand', 20, 5, 10) == (20, None)  # no targeted attack in it: its classes mean nothing
    with pytest.raises(ValueError, match='unknown AutoAttack version'):
        resolved_budget('plus')


@pytest.mark.parametrize('version', ['standard', 'rand', 'fast'])
def test_autoattack_versions_run_and_stay_in_the_ball(version):
    torch.manual_seed(0)
    model = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)))
    x, y = _self_labelled(model, 6)
    eps = 4 / 255
    out = run_autoattack(model, x, y, eps, version=version, n_iter=5, batch_size=6, num_classes=10)
    check_linf_batch(out.x_adv, x, eps)
    expected = {'standard': ['apgd-ce', 'apgd-t', 'fab-t', 'square'], 'rand': ['apgd-ce', 'apgd-dlr'],
                'fast': ['apgd-ce', 'apgd-t']}[version]
    assert out.attacks == expected
    assert torch.equal(out.robust, model(out.x_adv).argmax(1) == y)


def test_worst_case_slice_is_autoattacks_prefix_when_it_was_limited():
    """Records written by hand: SPSA on the first 8 of 10 points, AutoAttack on the first 4."""
    from eval.threat import AttackFamily, ThreatModel

    n, eps = 10, 8 / 255
    pos = torch.arange(n)
    clean = torch.ones(n, dtype=torch.bool)
    spsa = AttackSpec('spsa', AttackFamily.SPSA, ThreatModel.LINF, eps, False, n_limit=8)
    aa = AttackSpec('aa', AttackFamily.AUTOATTACK, ThreatModel.LINF, eps, False, n_limit=4)
    rec = Records(pos, clean)
    # SPSA breaks point 5; AutoAttack breaks points 0 and 1
    rec.attacks['spsa'] = dict(robust=pos != 5, in_slice=pos < 8, attacked=pos < 8)
    rec.attacks['aa'] = dict(robust=pos >= 2, in_slice=pos < 4, attacked=pos < 4)
    out = summarise(rec, [spsa, aa], _toy_report())
    # each attack counted on its own prefix; points 8 and 9, which no attack reached, are not counted at all
    assert (out.worst_case['8'].n, out.worst_case['8'].accuracy) == (8, pytest.approx(5 / 8))
    sl = out.worst_case_slice['8']
    assert sl.n == 4 and sl.accuracy == pytest.approx(2 / 4) and sl.partial == []
    # without AutoAttack, SPSA's prefix is all the worst case counts: no second figure
    out = summarise(rec, [spsa], _toy_report())
    assert (out.worst_case['8'].n, out.worst_case['8'].accuracy) == (8, pytest.approx(7 / 8))
    assert out.worst_case_slice == {}


def test_a_transfer_break_autoattack_skipped_still_counts_as_black_box_beating_white_box():
    """Records written by hand, as the runner writes them: the transfer attack alone breaks point 0; AutoAttack skips
    it (``skip_after``) and records it broken without attacking it. That break is the transfer attack's, so the
    gradient-masking diagnostic must still count it and warn."""
    from eval.threat import AttackFamily, ThreatModel

    n, eps = 6, 8 / 255
    pos = torch.arange(n)
    pgd = AttackSpec('pgd', AttackFamily.PGD, ThreatModel.LINF, eps, False)
    tr = AttackSpec('transfer', AttackFamily.TRANSFER, ThreatModel.LINF, eps, False)
    aa = AttackSpec('aa', AttackFamily.AUTOATTACK, ThreatModel.LINF, eps, False, skip_after=['pgd', 'transfer'])
    rec = Records(pos, torch.ones(n, dtype=torch.bool))
    everywhere = torch.ones(n, dtype=torch.bool)
    rec.attacks['pgd'] = dict(robust=pos != 5, in_slice=everywhere, attacked=everywhere)
    rec.attacks['transfer'] = dict(robust=pos != 0, in_slice=everywhere, attacked=everywhere)
    # AutoAttack attacks points 1-4 and breaks point 4; 0 and 5 it skipped, recorded broken
    rec.attacks['aa'] = dict(robust=(pos >= 1) & (pos <= 3), in_slice=everywhere, attacked=(pos >= 1) & (pos <= 4))
    out = summarise(rec, [pgd, tr, aa], _toy_report())
    assert out.diagnostics['blackbox_beats_whitebox'] == {'transfer': 1}
    assert any('transfer' in w and 'no model gradients' in w for w in out.warnings), out.warnings
    assert (out.worst_case['8'].n, out.worst_case['8'].accuracy) == (6, pytest.approx(3 / 6))


def test_a_pgd_column_is_the_per_point_worst_case_over_its_objectives():
    """Records written by hand: the mm objective breaks points 0-1, the margin objective points 2-3. Each alone leaves
    half of the four standing; the column (the cards' "worst over objectives" figure) leaves none."""
    from eval.specs import PGDConfig
    from eval.threat import AttackFamily, ThreatModel

    n, eps = 4, 8 / 255
    pos = torch.arange(n)
    everywhere = torch.ones(n, dtype=torch.bool)
    specs = [AttackSpec(f'pgd-{obj}', AttackFamily.PGD, ThreatModel.LINF, eps, False, PGDConfig(10, 2 / 255, obj),
                        column='PGD10 un 8') for obj in ('mm', 'margin')]
    rec = Records(pos, everywhere.clone())
    rec.attacks['pgd-mm'] = dict(robust=pos >= 2, in_slice=everywhere, attacked=everywhere)
    rec.attacks['pgd-margin'] = dict(robust=pos < 2, in_slice=everywhere, attacked=everywhere)
    out = summarise(rec, specs, _toy_report())
    assert [out.attacks[s.name].accuracy for s in specs] == [0.5, 0.5]
    col = out.columns['PGD10 un 8']
    assert (col.accuracy, col.n, col.objectives) == (0.0, 4, ['mm', 'margin'])


def test_a_budget_no_attack_reached_gets_no_worst_case_and_the_report_loads_back():
    from eval.threat import AttackFamily, ThreatModel
    from timm_mmc.report import loads

    n = 4
    pos = torch.arange(n)
    none = torch.zeros(n, dtype=torch.bool)
    pgd = AttackSpec('pgd', AttackFamily.PGD, ThreatModel.LINF, 8 / 255, False)
    far = AttackSpec('far', AttackFamily.SPSA, ThreatModel.LINF, 16 / 255, False)
    rec = Records(pos, torch.ones(n, dtype=torch.bool))
    rec.attacks['pgd'] = dict(robust=pos != 0, in_slice=~none, attacked=~none)
    rec.attacks['far'] = dict(robust=none.clone(), in_slice=none, attacked=none)
    out = summarise(rec, [pgd, far], _toy_report())
    assert set(out.worst_case) == {'8'} and out.worst_case['8'].accuracy == pytest.approx(3 / 4)
    assert loads(out.to_json()).worst_case == out.worst_case


def test_points_no_attack_reached_are_not_counted_robust():
    """AutoAttack alone on 2 of 10 clean-correct points, both broken: the suite's worst case is 0 of 2, not 8 of 10.
    A weaker budget's attack on every point does not count a point as attacked at the larger eps."""
    from eval.threat import AttackFamily, ThreatModel

    n = 10
    pos = torch.arange(n)
    aa = AttackSpec('aa', AttackFamily.AUTOATTACK, ThreatModel.LINF, 16 / 255, False, n_limit=2)
    pgd = AttackSpec('pgd', AttackFamily.PGD, ThreatModel.LINF, 8 / 255, False)
    rec = Records(pos, torch.ones(n, dtype=torch.bool))
    rec.attacks['aa'] = dict(robust=pos >= 2, in_slice=pos < 2, attacked=pos < 2)
    rec.attacks['pgd'] = dict(robust=pos != 9, in_slice=pos >= 0, attacked=pos >= 0)
    out = summarise(rec, [aa], _toy_report())
    assert (out.worst_case['16'].n, out.worst_case['16'].accuracy) == (2, 0.0) and out.worst_case_slice == {}
    out = summarise(rec, [pgd, aa], _toy_report())
    assert (out.worst_case['8'].n, out.worst_case['8'].accuracy) == (10, pytest.approx(9 / 10))
    assert (out.worst_case['16'].n, out.worst_case['16'].accuracy) == (2, 0.0)


def _changed(opts: SuiteOptions, name: str) -> SuiteOptions:
    """``opts`` with option ``name`` set to another valid value."""
    v = getattr(opts, name)
    other = {'aa_version': 'standard', 'objectives': ('ce',), 'aa_n': 5, 'aa_n_iter': 5, 'aa_target_classes': 2}
    if name in other:
        new = other[name]
    elif isinstance(v, tuple):
        new = (v[0] // 2 if isinstance(v[0], int) else v[0] / 2,)
    elif isinstance(v, bool):
        new = not v
    else:
        new = v + 1 if isinstance(v, int) else v / 2
    return dataclasses.replace(opts, **{name: new})


def _as_run(specs) -> list:
    return [(s.name, s.family, s.eps, s.targeted, s.config, s.n_limit, s.skip_after) for s in specs]


def test_unused_options_are_exactly_those_no_attack_of_the_suite_reads():
    """A resume ignores what no attack of the suite reads. Each option of :data:`OPTION_READERS` changes nothing in a
    suite without its readers (names, budgets, slices, skip lists: all a run takes from the options but the seed and
    batch size), and changes something in the full suite; the quick suite (PGD, AutoAttack) reads no C&W, SPSA,
    noise, rotation or transfer option, nor does ``paper`` read AutoAttack's; every key is an option."""
    from eval.options import build_parser
    from eval.suite import OPTION_READERS
    base, everything = SuiteOptions(), set(AttackFamily)
    fields = set(base.to_dict())
    for name, readers in OPTION_READERS.items():
        if name not in fields:
            continue
        without = sorted(everything - readers, key=lambda f: f.value)
        assert _as_run(build_suite('full', _changed(base, name), families=without, transfer=True)) == \
            _as_run(build_suite('full', base, families=without, transfer=True)), name
        assert _as_run(build_suite('full', _changed(base, name), transfer=True)) != \
            _as_run(build_suite('full', base, transfer=True)), name
    quick = unused_options(build_suite('quick', base))
    assert {'spsa_n', 'cw_n', 'noise_sigma', 'noise_sigmas', 'rotation', 'transfer_from'} <= quick
    assert not quick & {'eps', 'pgd_alpha', 'aa_n', 'aa_target_classes'}
    paper = unused_options(build_suite('paper', base))
    assert {'aa_version', 'aa_n', 'aa_eps'} <= paper and not paper & {'spsa_n', 'cw_n', 'eps', 'pgd_steps'}
    assert unused_options(build_suite('full', base, transfer=True)) == frozenset()
    assert unused_options(build_suite('full', base, families=[AttackFamily.AUTOATTACK])) >= {'eps', 'pgd_steps'}
    dests = {a.dest for a in build_parser()._actions}
    assert set(OPTION_READERS) <= dests | fields | {'transfer_sha256'}
    assert fields - set(OPTION_READERS) == {'seed', 'batch_size', 'standalone'}  # read by every suite


def test_resolved_budgets_count_a_slice_over_the_examples_as_all_of_them():
    """``--cw-n 1000`` on 12 examples is no change from 12 (or from none), in what a resume compares."""
    from eval.robustness import _resolved_budgets
    got = _resolved_budgets(SuiteOptions(cw_n=1000, spsa_n=None, aa_n=5), 12, (100, 9))
    assert got == dict(cw_n=12, spsa_n=12, aa_n=5, aa_n_iter=100, aa_target_classes=9)
