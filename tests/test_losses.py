import pytest
import torch
import torch.nn.functional as F

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
    z, mu, _ = _setup()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = distance_logits(z.bfloat16(), mu)
    assert out.dtype == torch.float32


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
