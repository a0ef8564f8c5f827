"""Nellie's dense matching computed from the gated pairs only equals the whole-matrix computation."""

import numpy as np
import pytest

from dask_tracking.flow import features as F
from dask_tracking.flow import matching as M


def _features(rng, n, nh, coarse):
    stats = rng.random((n, 4)) * 100
    hu = rng.random((n, nh)) * 10
    if coarse:  # few distinct values: many equal costs, so the tie rules decide
        stats, hu = np.round(stats / 25) * 25, np.round(hu / 5) * 5
    return F.FrameFeatures(np.zeros((n, 3), np.int64), stats.astype(np.float32), hu)


@pytest.mark.parametrize("sizes", [(300, 280, 18, 20.0), (40, 900, 6, 8.0), (1, 500, 18, 5.0),
                                   (200, 1, 18, 5.0), (120, 150, 18, 60.0)])
@pytest.mark.parametrize("coarse", [False, True])
def test_gated_dense_matching_is_bit_identical(sizes, coarse):
    na, nb, nh, extent = sizes
    rng = np.random.default_rng(na * 7 + nb + int(coarse))
    qa, qb = rng.random((na, 3)) * extent, rng.random((nb, 3)) * extent
    if coarse:
        qa, qb = np.round(qa), np.round(qb)  # equal distances too
    a, b = _features(rng, na, nh, coarse), _features(rng, nb, nh, coarse)
    want = M._select_dense_compat(M._cost_dense_compat(qa, qb, a, b, 2.0, block_elements=10**12))
    got = M._gated_dense_compat(qa, qb, a, b, 2.0)
    assert len(want[0]) > 0
    for w, g in zip(want, got):
        assert w.dtype == g.dtype
        np.testing.assert_array_equal(g, w)


def test_gated_dense_matching_without_pairs_in_the_gate():
    rng = np.random.default_rng(3)
    a, b = _features(rng, 5, 18, False), _features(rng, 6, 18, False)
    qa, qb = rng.random((5, 3)), rng.random((6, 3)) + 100.0
    got = M._gated_dense_compat(qa, qb, a, b, 2.0)
    want = M._select_dense_compat(M._cost_dense_compat(qa, qb, a, b, 2.0))
    assert all(len(x) == 0 for x in got) and all(len(x) == 0 for x in want)


def test_features_that_could_overflow_take_the_whole_matrix():
    rng = np.random.default_rng(4)
    a, b = _features(rng, 5, 18, False), _features(rng, 6, 18, False)
    assert M._gate_exact(a, b)
    big = F.FrameFeatures(a.coords, a.stats, a.hu * 1e200)
    assert not M._gate_exact(big, b)
    nan = F.FrameFeatures(a.coords, np.where(np.eye(5, 4, dtype=bool), np.nan, a.stats).astype(np.float32), a.hu)
    assert not M._gate_exact(nan, b)
