"""The interpolation kernel's fast block code gives the bits of the plain one it replaced.

``_reference`` below is a private copy of the kernel as it was before the
fast rewrite (masks over padded (n, K) slots, two argsorts for the canonical
order, per-slot loops over all K columns). Every comparison is bit for bit:
same NaN positions and the same 64 bits everywhere else (zero signs included).

In the default mode the reference sums each point over its own neighbours only (the old
kernel added anchor 0 times a zero weight for every padding slot of a point with fewer
neighbours than the block's largest count, which could flip the sign of a zero or spread
a NaN cost of anchor 0, depending on the other points of the block).
"""

from __future__ import annotations

import numpy as np
import pytest

from dask_tracking.interpolate import kernel
from dask_tracking.interpolate.kernel import Anchors, interpolate_points, neighbour_counts


# ---------------------------------------------------------------- the reference (old kernel)

def _ref_nellie_weights(dist, cost, k):
    n, K = dist.shape
    invalid = np.arange(K)[None, :] >= k[:, None]
    exact = dist[:, 0] == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dw = np.divide(1.0, dist)
    if exact.any():
        dw[exact] = (dist[exact] == 0) * 1.0
    w = np.negative(cost, out=cost)
    w *= dw
    w[invalid] = np.inf
    m = w.min(axis=1)
    m -= 1
    w -= m[:, None]
    w[invalid] = 0.0
    s = np.empty(n)
    ks = np.unique(k)
    if len(ks) == 1:
        kk = int(ks[0])
        s[:] = (w if kk == K else np.ascontiguousarray(w[:, :kk])).sum(axis=1)
    else:
        for kk in ks:
            sel = np.flatnonzero(k == kk)
            s[sel] = np.ascontiguousarray(w[sel, :kk]).sum(axis=1)
    w /= s[:, None]
    return w


def _ref_fixed_weights(dist, cost, valid):
    exact = valid & (dist == 0)
    has_exact = exact.any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dw = np.where(has_exact[:, None], exact * 1.0, np.where(valid, 1 / dist, 0.0))
    dw = np.where(valid, dw, 0.0)
    w = np.maximum(-cost, 0.0) * dw
    s = _ref_sequential_sum(w, valid)
    no_cost = s == 0
    if no_cost.any():
        w[no_cost] = dw[no_cost]
        s[no_cost] = _ref_sequential_sum(dw[no_cost], valid[no_cost])
    return w / s[:, None]


def _ref_sequential_sum(w, valid=None):
    """Row sums left to right; with ``valid``, over each row's own slots only (default mode)."""
    acc = w[:, 0].copy()
    for j in range(1, w.shape[1]):
        if valid is None:
            acc += w[:, j]
        else:
            acc[valid[:, j]] += w[valid[:, j], j]
    return acc


def _ref_weighted_vectors(w, idx, vectors, valid=None):
    wt = np.ascontiguousarray(w.T)
    it = np.ascontiguousarray(idx.T)
    acc = vectors[it[0]]
    acc *= wt[0][:, None]
    term = np.empty_like(acc)
    for j in range(1, w.shape[1]):
        np.take(vectors, it[j], axis=0, out=term)
        term *= wt[j][:, None]
        if valid is None:
            acc += term
        else:
            acc[valid[:, j]] += term[valid[:, j]]
    return acc


def _ref_row_blocks(rows, K, max_slots):
    step = max(1, max_slots // max(K, 1))
    for i in range(0, len(rows), step):
        yield rows[i:i + step]


def _ref_nellie_block(tree, a, q, kr, K):
    dist, idx = tree.query(q, k=K, p=2)
    dist = np.asarray(dist, dtype=np.float64).reshape(len(q), K)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(q), K)
    invalid = np.arange(K)[None, :] >= kr[:, None]
    idx[invalid] = 0
    w = _ref_nellie_weights(dist, a.costs[idx], kr)
    w[invalid] = 0.0
    return _ref_weighted_vectors(w, idx, a.vectors)


def _ref_fixed_block(tree, a, q, kr, radius_um):
    K = int(kr.max())
    dist, idx = tree.query(q, k=K, p=2, distance_upper_bound=radius_um * (1 + 1e-9) + 1e-12)
    dist = np.asarray(dist, dtype=np.float64).reshape(len(q), K)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(q), K)
    valid = np.arange(K)[None, :] < kr[:, None]
    dist = np.where(valid, dist, np.inf)
    idx = np.where(valid, idx, len(a))
    o = np.argsort(idx, axis=1, kind="stable")
    dist, idx = np.take_along_axis(dist, o, 1), np.take_along_axis(idx, o, 1)
    o = np.argsort(dist, axis=1, kind="stable")
    dist, idx = np.take_along_axis(dist, o, 1), np.take_along_axis(idx, o, 1)
    idx = np.where(valid, idx, 0)
    w = _ref_fixed_weights(dist, a.costs[idx], valid)
    return _ref_weighted_vectors(w, idx, a.vectors, valid)


def _reference(a, coords, spacing, radius_um, compat=None, n_good=None, k_max=None, offset=0,
               max_slots=kernel.MAX_SLOTS):
    """The old ``interpolate_points`` (CPU)."""
    d = a.ndim
    c = np.asarray(coords, dtype=np.float64)
    s = np.asarray(spacing, dtype=np.float64)
    N = len(c)
    out = np.full((N, d), np.nan)
    if N == 0 or len(a) == 0:
        return out
    tree = a.tree(s)
    q = c * s
    good = ~np.isnan(q[:, 0])
    k = np.zeros(N, dtype=np.int64)
    if good.any():
        k[good] = tree.query_ball_point(q[good], float(radius_um), p=2, return_length=True)
    if compat == "nellie":
        n_good_ = int(good.sum()) if n_good is None else int(n_good)
        K = int(k.max()) if k_max is None else int(k_max)
        if K <= 0 or n_good_ <= 0:
            return out
        live = good & (k > 0) & (np.arange(offset, offset + N) < n_good_)
        if K == 1:
            live &= np.arange(offset, offset + N) == 0
        for rows in _ref_row_blocks(np.flatnonzero(live), K, max_slots):
            out[rows] = _ref_nellie_block(tree, a, q[rows], k[rows], K)
        return out
    live = np.flatnonzero(good & (k > 0))
    if len(live):
        for rows in _ref_row_blocks(live, int(k[live].max()), max_slots):
            out[rows] = _ref_fixed_block(tree, a, q[rows], k[rows], float(radius_um))
    return out


# ---------------------------------------------------------------- helpers

def _assert_same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype == np.float64
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64))


def _grid_anchors(rng, n, extent, dup=0.3, neg_zero=False):
    """Anchors on an integer grid (many equal distances), a share of them duplicated."""
    pts = rng.integers(0, extent, size=(n, 3)).astype(np.float64)
    n_dup = int(n * dup)
    pts[rng.choice(n, n_dup, replace=False)] = pts[rng.choice(n, n_dup)]  # same position, other row
    vec = rng.integers(-2, 3, size=(n, 3)).astype(np.float64)  # integer steps: many exact zeros
    if neg_zero:  # -0.0 z components everywhere but anchor 0: zero signs must survive the padding
        vec[:, 0] = -0.0
        vec[0, 0] = 0.0
    cost = -rng.random(n) * 4
    cost[rng.random(n) < 0.1] = 0.0
    cost[rng.random(n) < 0.1] = rng.random() + 0.5  # positive: zero weight in the default mode
    return Anchors(pts, vec, cost)


def _queries(rng, n, extent):
    q = rng.integers(-1, extent + 1, size=(n, 3)).astype(np.float64)  # integer: exact hits and ties
    q[: n // 3] += rng.normal(scale=0.3, size=(n // 3, 3))
    q[rng.random(n) < 0.05] = np.nan
    return q


MODES = [None, "nellie"]


# ---------------------------------------------------------------- tests

@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference's 0 * inf
@pytest.mark.parametrize("compat", MODES)
@pytest.mark.parametrize("case", ["grid", "dense", "float", "neg_zero", "nan_cost"])
def test_fast_kernel_gives_the_old_bits(compat, case, monkeypatch):
    rng = np.random.default_rng(["grid", "dense", "float", "neg_zero", "nan_cost"].index(case)
                                + 10 * (compat is None))
    sp, r = (0.5, 0.3, 0.3), 1.0
    if case == "float":
        a = Anchors(rng.uniform(0, 12, (300, 3)), rng.normal(size=(300, 3)), -rng.random(300))
        q = rng.uniform(-1, 13, (4000, 3))
    elif case == "dense":  # a large K (many anchors in the ball), strongly varying k_i
        a = _grid_anchors(rng, 400, 8, dup=0.5)
        q = _queries(rng, 1500, 8)
        r = 0.9
    else:
        a = _grid_anchors(rng, 500, 12, neg_zero=case == "neg_zero")
        q = _queries(rng, 4000, 12)
        if case == "nan_cost":  # NaN weights spread over their rows (and anchor 0's over the padding)
            a.costs[[0, 7, 99]] = np.nan
            a.vectors[0, 2] = np.inf  # 0 * inf = NaN on anchor 0's padding slots too
    k = neighbour_counts(a, q, sp, r)
    assert len(np.unique(k)) > 4
    if case == "dense":
        assert k.max() > 50
    # several blocks (small slot budget), the default blocks, and one block
    for slots in (997, kernel.MAX_SLOTS, 1 << 24):
        monkeypatch.setattr(kernel, "MAX_SLOTS", slots)
        got = interpolate_points(a, q, sp, r, compat=compat)
        want = _reference(a, q, sp, r, compat=compat, max_slots=slots)
        assert np.isfinite(want).all(axis=1).sum() > (0 if case == "nan_cost" else 700)
        _assert_same_bits(got, want)
    if case == "neg_zero":  # the padding's zero sign is exercised: both signs occur in the result
        z = got[:, 0][got[:, 0] == 0]
        assert np.signbit(z).any() and not np.signbit(z).all()


@pytest.mark.parametrize("compat", MODES)
def test_fast_kernel_k_one_and_batch_quirks(compat):
    rng = np.random.default_rng(11)
    grid = np.argwhere(np.ones((6, 6, 6))).astype(np.float64)
    a = _grid_anchors(rng, 60, 6, dup=0.0)
    a = Anchors(grid[rng.choice(len(grid), 60, replace=False)] * 5, a.vectors, a.costs)  # 5 apart
    q = np.repeat(a.points, 8, axis=0) + rng.uniform(-0.5, 0.5, (480, 3))
    q[::7] = np.nan
    sp = (1.0, 1.0, 1.0)
    k = neighbour_counts(a, q, sp, 0.9)
    assert k.max() == 1 and (k == 1).sum() > 10  # K == 1: quirk Q-A in compat
    for kw in ({}, dict(n_good=400, k_max=1, offset=3), dict(n_good=300, k_max=5, offset=0)):
        kw = kw if compat else {}
        _assert_same_bits(interpolate_points(a, q, sp, 0.9, compat=compat, **kw),
                          _reference(a, q, sp, 0.9, compat=compat, **kw))
    # a batch-global K larger than any local count, and Q-B cutting the batch
    k = neighbour_counts(a, q, sp, 3.0)
    kw = dict(n_good=350, k_max=int(k.max()) + 7, offset=20) if compat else {}
    _assert_same_bits(interpolate_points(a, q, sp, 3.0, compat=compat, **kw),
                      _reference(a, q, sp, 3.0, compat=compat, **kw))


@pytest.mark.parametrize("compat", MODES)
def test_fast_kernel_one_anchor_and_all_duplicates(compat):
    rng = np.random.default_rng(5)
    q = _queries(rng, 300, 4)
    q[:2] = [[2.0, 2.0, 2.0], [2.0, 2.5, 1.0]]  # an exact hit first (K == 1 keeps row 0 only)
    one = Anchors(np.array([[2.0, 2.0, 2.0]]), np.array([[-0.0, 1.0, -2.0]]), np.array([-1.0]))
    same = Anchors(np.repeat([[2.0, 2.0, 2.0]], 40, axis=0), rng.normal(size=(40, 3)),
                   -rng.random(40))  # every anchor at one position: one long tie run
    for a in (one, same):
        got = interpolate_points(a, q, (1.0, 1.0, 1.0), 2.0, compat=compat)
        want = _reference(a, q, (1.0, 1.0, 1.0), 2.0, compat=compat)
        assert np.isfinite(want).any()
        _assert_same_bits(got, want)


def test_canonical_order_sorts_unsorted_rows_like_a_full_sort():
    """Rows that are not distance-sorted (any neighbour search) take the full (distance, index) sort."""
    rng = np.random.default_rng(2)
    n, K, A = 400, 9, 50
    dist = np.sort(rng.integers(0, 4, (n, K)).astype(np.float64), axis=1)  # many equal distances
    idx = np.array([rng.permutation(A)[:K] for _ in range(n)])
    k = np.sort(rng.integers(1, K + 1, n))[::-1].copy()
    k[0] = K
    nj = kernel._desc_prefix(k, K)
    valid = np.arange(K)[None, :] < k[:, None]
    key = np.where(valid, dist * A + idx, np.inf)
    o = np.argsort(key, axis=1)
    want_i = np.where(valid, np.take_along_axis(idx, o, 1), 0)
    want_d = np.take_along_axis(np.where(valid, dist, np.inf), o, 1)
    d1, i1 = kernel._canonical_order(dist, idx, k, nj, A)  # sorted rows: the run-key path
    np.testing.assert_array_equal(i1, want_i)
    np.testing.assert_array_equal(np.where(valid, d1, np.inf), want_d)
    p = rng.permutation(K)
    d2, i2 = kernel._canonical_order(dist[:, p], idx[:, p], k, nj, A)  # shuffled: fallback
    assert (dist[:, p][:, 1:] < dist[:, p][:, :-1]).any()
    shuffled_valid = valid  # the fallback sorts the first k_i slots of the shuffled rows
    key = np.where(shuffled_valid, dist[:, p] * A + idx[:, p], np.inf)
    o = np.argsort(key, axis=1)
    np.testing.assert_array_equal(i2, np.where(valid, np.take_along_axis(idx[:, p], o, 1), 0))


def test_desc_prefix_counts_rows_above_each_slot():
    k = np.array([5, 5, 3, 2, 2, 1])
    np.testing.assert_array_equal(kernel._desc_prefix(k, 5), [6, 5, 3, 2, 2])
    assert [g for g in kernel._count_groups(k)] == [(0, 2, 5), (2, 3, 3), (3, 5, 2), (5, 6, 1)]


def test_bounded_search_counts_like_the_ball_query():
    """The default mode's one bounded k-nearest search: each point once, its count equal to the
    ball query's (anchors exactly at the radius included), neighbours a sorted prefix."""
    rng = np.random.default_rng(7)
    sp = np.array([0.5, 0.3, 0.3])
    a = _grid_anchors(rng, 3000, 10, dup=0.4)  # dense: many points ask again past FIRST_K
    q = rng.integers(0, 10, size=(2500, 3)).astype(np.float64)  # integer: anchors at exactly r
    r = 1.0  # 2 z-steps of 0.5 um: d2 == r**2 exactly for many pairs
    tree = a.tree(sp)
    want = tree.query_ball_point(q * sp, r, return_length=True)
    assert want.max() > 2 * kernel.FIRST_K  # asked at least three times
    seen = np.zeros(len(q), dtype=np.int64)
    got = np.zeros(len(q), dtype=np.int64)
    for rows, dist, idx, k in kernel._within_radius(tree, q * sp, r):
        seen[rows] += 1
        got[rows] = k
        assert np.all(dist[:, 1:] >= dist[:, :-1])
        slots = np.arange(dist.shape[1])[None, :]
        assert np.all(dist[slots < k[:, None]] <= r * (1 + 1e-12))
        assert np.all(dist[slots >= k[:, None]] > r * (1 - 1e-12))
    np.testing.assert_array_equal(seen, 1)
    np.testing.assert_array_equal(got, want)
    c = (q[:, None, :] - a.points[None]) * sp
    assert np.any(np.isclose((c ** 2).sum(-1), r * r, rtol=0, atol=1e-15))  # exact-radius pairs exist


def test_bounded_search_holds_at_most_max_slots(monkeypatch):
    """Points asked again with a larger k come in pieces of at most MAX_SLOTS slots, and the
    vectors do not depend on the pieces."""
    rng = np.random.default_rng(8)
    sp = np.array([0.5, 0.3, 0.3])
    a = _grid_anchors(rng, 3000, 10, dup=0.4)
    q = rng.integers(0, 10, size=(600, 3)).astype(np.float64)
    want = interpolate_points(a, q, sp, 1.0)
    monkeypatch.setattr(kernel, "MAX_SLOTS", 997)
    sizes = []
    for rows, dist, idx, k in kernel._within_radius(a.tree(sp), q * sp, 1.0):
        sizes.append(dist.size)
    assert max(sizes) <= 997 and len(sizes) > 3 * (600 * 16 // 997)
    _assert_same_bits(interpolate_points(a, q, sp, 1.0), want)
