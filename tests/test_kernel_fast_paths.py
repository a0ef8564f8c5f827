"""The kernel's fast paths give the same bits as the plain ones."""

from __future__ import annotations

import numpy as np
import pytest

from dask_tracking.interpolate.kernel import Anchors, interpolate_points, neighbour_counts


def _anchors(rng, n=400):
    pts = rng.integers(0, 12, size=(n, 3)).astype(np.float64)  # integer grid: many equal distances
    return Anchors(pts, rng.normal(size=(n, 3)), -rng.random(n) * rng.integers(0, 3, n))


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_given_counts_give_the_same_bits(compat):
    rng = np.random.default_rng(7)
    a = _anchors(rng)
    q = rng.uniform(-1, 13, size=(3000, 3))
    q[::17] = np.nan
    q[5::23] = np.round(q[5::23])  # exact hits on anchors
    sp, r = (0.5, 0.3, 0.3), 1.2
    k = neighbour_counts(a, q, sp, r)
    assert k.max() > 3 and len(np.unique(k)) > 3
    kw = dict(compat=compat, n_good=2900, k_max=int(k.max())) if compat else {}
    plain = interpolate_points(a, q, sp, r, **kw)
    fast = interpolate_points(a, q, sp, r, counts=k, **kw)
    assert np.isfinite(plain).sum() > 1000
    np.testing.assert_array_equal(plain.view(np.uint64), fast.view(np.uint64))


def test_ordered_block_sum_is_numpys_whole_array_sum():
    """Nellie's dense flow cost sums (N, M, F) arrays over (0, 1); the row-block sum gives the same bits."""
    from dask_tracking.flow.matching import _ordered_sum

    rng = np.random.default_rng(3)
    x = rng.normal(size=(230, 170, 7)) * 10 ** rng.uniform(-6, 6, size=(230, 170, 7))
    want = np.sum(x, axis=(0, 1))
    for step in (1, 17, 64, 230):
        got = _ordered_sum(x[a:a + step].copy() for a in range(0, len(x), step))
        np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))
    assert not np.array_equal(want, x.reshape(-1, 7)[::-1].sum(axis=0))  # the order matters here
