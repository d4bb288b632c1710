import pytest
import torch
import torch.nn.functional as F

from timm_mmc.centers import mm_centers
from timm_mmc.heads import distance_logits
from timm_mmc.losses import build_loss, default_loss_for_head


def _setup():
    torch.manual_seed(0)
    z = torch.randn(6, 4)
    mu = torch.randn(3, 4) * 3
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return z, mu, y


def test_distance_logits_exact():
    z, mu, _ = _setup()
    expected = -0.5 * ((z[:, None] - mu[None]) ** 2).sum(-1)
    torch.testing.assert_close(distance_logits(z, mu), expected, atol=1e-5, rtol=1e-5)


def test_distance_logits_stay_float32_under_autocast():
    """MMC-10 features near their centers (logits ~-170): under bf16 autocast the logits must still match a float64
    reference to 1e-3, which the same formula in bf16 misses by ~0.5 (so the test fails without the guard)."""
    g = torch.Generator().manual_seed(0)
    mu = mm_centers(10, 256)  # norm 10, as the released heads
    z = mu[torch.arange(64) % 10] + 0.5 * torch.randn(64, 256, generator=g)
    reference = -0.5 * ((z.double()[:, None] - mu.double()[None]) ** 2).sum(-1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = distance_logits(z, mu)
        unguarded = -0.5 * ((z * z).sum(1, keepdim=True) - 2.0 * (z @ mu.t()) + (mu * mu).sum(1)[None])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference, atol=1e-3, rtol=0)
    assert (unguarded.double() - reference).abs().max() > 1e-2  # bf16 cannot meet the tolerance above


def test_mmc_is_half_squared_distance():
    z, mu, y = _setup()
    loss = build_loss('mmc', 3, 4)(distance_logits(z, mu), y)
    torch.testing.assert_close(loss, ((z - mu[y]) ** 2).sum(1).mean() / 2)


def test_mmlda_is_ce_on_distance_logits():
    z, mu, y = _setup()
    h = distance_logits(z, mu)
    torch.testing.assert_close(build_loss('mmlda', 3, 4)(h, y), F.cross_entropy(h, y))


def test_center_loss_adds_pull_term():
    z, mu, y = _setup()
    logits = torch.randn(6, 3)
    loss_fn = build_loss('center', 3, 4, lambda_c=0.5)
    with torch.no_grad():
        loss_fn.centers.copy_(mu)
    expected = F.cross_entropy(logits, y) + 0.5 * ((z - mu[y]) ** 2).sum(1).mean() / 2
    torch.testing.assert_close(loss_fn(logits, y, z), expected)
    with pytest.raises(ValueError, match='features'):
        loss_fn(logits, y)


def test_lgm_margin_and_likelihood():
    z, mu, y = _setup()
    h = distance_logits(z, mu)
    d = -2 * h
    alpha, lam = 0.3, 0.1
    margin = -0.5 * d * (1 + alpha * F.one_hot(y, 3))
    expected = F.cross_entropy(margin, y) + lam * d.gather(1, y[:, None]).mean() / 2
    torch.testing.assert_close(build_loss('lgm', 3, 4, alpha=alpha, lambda_lkd=lam)(h, y), expected)


def test_registry_and_pairing():
    assert [default_loss_for_head(h) for h in ('linear', 'mmc', 'mmlda', 'lgm')] == ['sce', 'mmc', 'mmlda', 'lgm']
    with pytest.raises(ValueError, match='unknown loss'):
        build_loss('focal', 10, 8)
    with pytest.raises(ValueError, match='head'):
        build_loss('mmc', 10, 8, head='linear')  # MMC on linear logits is meaningless


def test_mixup_of_the_mmc_loss_pulls_toward_the_weighted_mean_of_the_two_centers():
    """lam * ||z - mu_a||^2 / 2 + (1 - lam) * ||z - mu_b||^2 / 2 is ||z - (lam mu_a + (1 - lam) mu_b)||^2 / 2 plus a
    constant lam (1 - lam) ||mu_a - mu_b||^2 / 2: the gradient of the training step's mixed loss is that of a pull
    toward the mixed center."""
    import torch.nn as nn
    from timm_mmc.train_parts import ModelWithLoss

    z, mu, y = _setup()
    y_pair = y.flip(0)
    lam = torch.tensor(0.3)

    class Features(nn.Module):  # forward_features / forward_head / get_classifier of a model whose z is given
        def forward_features(self, x):
            return x

        def forward_head(self, x, pre_logits=False):
            return x

        def get_classifier(self):
            return lambda feats: distance_logits(feats, mu)

    zz = z.clone().requires_grad_(True)
    loss, logits = ModelWithLoss(Features(), build_loss('mmc', 3, 4))(zz, y, y_pair, lam)
    mixed_center = lam * mu[y] + (1 - lam) * mu[y_pair]
    constant = (lam * (1 - lam) * ((mu[y] - mu[y_pair]) ** 2).sum(1) / 2).mean()
    torch.testing.assert_close(loss, ((z - mixed_center) ** 2).sum(1).mean() / 2 + constant)
    loss.backward()
    torch.testing.assert_close(zz.grad, (z - mixed_center) / len(z))
    torch.testing.assert_close(logits, distance_logits(z, mu))
    # without a pair the loss is the plain one
    plain, _ = ModelWithLoss(Features(), build_loss('mmc', 3, 4))(z, y)
    torch.testing.assert_close(plain, ((z - mu[y]) ** 2).sum(1).mean() / 2)
