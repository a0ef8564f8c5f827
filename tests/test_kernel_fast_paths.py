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


def test_libm_distinct_value_path_gives_the_element_by_element_bits():
    import math

    from dask_tracking.flow import libm

    rng = np.random.default_rng(5)
    x = rng.choice(rng.random(300).astype(np.float32) * 50 + 1e-3, size=9000)  # many repeats
    got = libm.log10f(x.reshape(90, 100))
    one = np.array([libm.log10f(np.array([v]))[0] for v in x[:500]])
    np.testing.assert_array_equal(got.ravel()[:500].view(np.uint32), one.view(np.uint32))
    y = x.astype(np.float64)
    np.testing.assert_array_equal(libm.log10(y), np.array([math.log10(v) for v in y]))
    base = np.concatenate([np.round(rng.normal(size=3000), 2), [0.0, -0.0, -0.0]])[:, None]
    for b_, exp in ((base, np.array([[0.0, 1.0, 2.0, 3.0]])), (np.abs(base), np.array([[1.5, 2.5, 3.0]]))):
        got = libm.power(b_, exp)
        want = np.array([[1.0 if e == 0 else (b if e == 1 else math.pow(b, e)) for e in exp[0]]
                         for b in b_[:, 0]])
        np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))
    got = libm.power(base, np.array([[3.0]]))
    assert np.signbit(got[-1, 0]) and not np.signbit(got[-3, 0])  # pow(-0.0, 3) = -0.0, pow(0.0, 3) = 0.0


def test_frame_index_counts_are_the_blocks_ball_counts():
    """compat reassignment reuses the frame index's per-voxel counts: they equal a fresh ball query."""
    from dask_tracking.interpolate.kernel import frame_anchors
    from dask_tracking.reassign.candidates import frame_index

    rng = np.random.default_rng(0)
    shape = (10, 40, 40)
    vox = np.argwhere(rng.random(shape) > 0.7)
    rows = np.column_stack([np.zeros(80), rng.random((80, 3)) * shape, rng.normal(size=(80, 3)), -rng.random(80)])
    sp, r = (0.5, 0.2, 0.2), 1.5
    fw, bw = frame_anchors(rows, 3, True), frame_anchors(rows, 3, False)
    idx = frame_index([vox[1000:], vox[:1000]], shape, sp, r, fw, bw)  # pieces in any order
    block = vox[(vox[:, 1] >= 10) & (vox[:, 1] < 27)]
    for anchors, forward in ((fw, True), (bw, False)):
        got = idx.counts_of(block, forward)
        np.testing.assert_array_equal(got, neighbour_counts(anchors, block.astype(float), sp, r))
        assert got.max() > 1
    assert idx.counts_of(np.array([[0, 0, 0]]) if not (vox == 0).all(axis=1).any() else np.array([[99, 0, 0]]),
                         True) is None  # a voxel the frame does not have: no reuse
