import math

import pytest
import torch

from timm_mmc.centers import max_pairwise_cosine, mm_centers


@pytest.mark.parametrize('L,d', [(10, 256), (100, 256), (100, 99), (100, 64), (10, 9), (2, 1), (10, 3)])
def test_equal_norms(L, d):
    c = mm_centers(L, d, norm=10.0, dtype=torch.float64)
    assert c.shape == (L, d)
    torch.testing.assert_close(c.norm(dim=1), torch.full((L,), 10.0, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize('L,d', [(10, 256), (100, 256), (100, 99), (10, 9), (2, 1)])
def test_simplex_inner_product(L, d):
    c = mm_centers(L, d, norm=10.0, dtype=torch.float64)
    gram = c @ c.t()
    expected = torch.full((L, L), -100.0 / (L - 1), dtype=torch.float64)
    expected.fill_diagonal_(100.0)
    torch.testing.assert_close(gram, expected, atol=1e-9, rtol=0)
    assert torch.equal(c, mm_centers(L, d, norm=10.0, dtype=torch.float64))  # deterministic


def test_cross_polytope_regime_reaches_zero_cosine():
    c = mm_centers(100, 64, norm=10.0)
    assert max_pairwise_cosine(c) <= 1e-4
    # every center has exactly one antipode and is orthogonal to the rest
    cos = (c @ c.t()) / 100
    assert torch.equal((cos < -0.99).sum(1), torch.ones(100, dtype=torch.long))
    off = cos.clone().fill_diagonal_(0)
    assert off[off > -0.99].abs().max() <= 1e-6


def test_optimised_regime_spreads_better_than_random():
    L, d = 10, 3  # L > 2d: no closed form
    c = mm_centers(L, d, norm=1.0, seed=0)
    r = mm_centers(L, d, norm=1.0, kind='random', seed=0)
    achieved = max_pairwise_cosine(c)
    # the best known packing of 10 points on S^2 has max cosine ~0.41 (Tammes problem, angle ~65.5 deg)
    assert achieved < 0.5
    assert achieved < max_pairwise_cosine(r)
    assert torch.equal(c, mm_centers(L, d, norm=1.0, seed=0))


def test_random_centers_are_seeded():
    a = mm_centers(10, 16, kind='random', seed=1)
    b = mm_centers(10, 16, kind='random', seed=1)
    c = mm_centers(10, 16, kind='random', seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=1), torch.full((10,), 10.0))


@pytest.mark.parametrize('kwargs,needle', [
    (dict(num_classes=1, dim=8), 'num_classes'),
    (dict(num_classes=10, dim=0), 'feature_dim'),
    (dict(num_classes=10, dim=8, norm=0.0), 'center_norm'),
    (dict(num_classes=10, dim=8, norm=-1.0), 'center_norm'),
    (dict(num_classes=10, dim=8, norm=math.nan), 'center_norm'),
    (dict(num_classes=10, dim=8, kind='bogus'), 'center kind'),
])
def test_bad_configuration(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        mm_centers(**kwargs)
