"""The column-by-column box and row reductions, and ``labels_at``'s grid lookup, against plain NumPy."""

import numpy as np
import pytest

from dask_tracking.blocks import in_box, rows_max, rows_min
from dask_tracking.reassign.block_voxels import BlockVoxels, _piece_of, labels_at


@pytest.mark.parametrize("d", [1, 2, 3])
def test_in_box_matches_all_axis1(d):
    rng = np.random.default_rng(d)
    c = rng.integers(-4, 40, (500, d))
    lo, hi = rng.integers(0, 10, d), rng.integers(10, 36, d)
    assert np.array_equal(in_box(c, lo, hi), np.all((c >= lo) & (c < hi), axis=1))
    f = c + rng.random((500, d)) - 0.5
    f[3, 0] = np.nan
    assert np.array_equal(in_box(f, lo - 0.25, hi + 0.75), np.all((f >= lo - 0.25) & (f < hi + 0.75), axis=1))
    assert np.array_equal(in_box(c, 0, 20), np.all((c >= 0) & (c < 20), axis=1))


def test_rows_min_max_same_values_nan_and_inf():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 3))
    a[4, 1], a[7, 2], a[9, 0] = np.nan, np.inf, -np.inf
    assert np.array_equal(rows_min(a), np.min(a, axis=1), equal_nan=True)
    assert np.array_equal(rows_max(a), np.max(a, axis=1), equal_nan=True)
    a0 = a.copy()
    rows_min(a), rows_max(a)
    assert np.array_equal(a, a0, equal_nan=True)  # input untouched


def _grid_pieces(rng, shape=(5, 30, 41), cuts=((0, 2, 5), (0, 7, 20, 30), (0, 13, 26, 41)), density=0.3):
    """The blocks of an uneven chunk grid over a random labelled volume, with random carried values."""
    vol = rng.random(shape) < density
    pieces, values = [], []
    for z0, z1 in zip(cuts[0][:-1], cuts[0][1:]):
        for y0, y1 in zip(cuts[1][:-1], cuts[1][1:]):
            for x0, x1 in zip(cuts[2][:-1], cuts[2][1:]):
                blk = vol[z0:z1, y0:y1, x0:x1]
                flat = np.flatnonzero(blk).astype(np.int64)
                ones = np.ones(len(flat), np.int32)
                pieces.append(BlockVoxels(blk.shape, (z0, y0, x0), flat, ones, ones, 1, 1))
                values.append(rng.integers(1, 1000, len(flat)))
    return vol, pieces, values


def _brute(points, pieces, values):
    out = np.zeros(len(points), np.int64)
    for i, p in enumerate(points):
        for b, v in zip(pieces, values):
            loc = p - np.asarray(b.offset)
            if np.all(loc >= 0) and np.all(loc < np.asarray(b.shape)):
                f = np.ravel_multi_index(tuple(loc), b.shape)
                j = np.searchsorted(b.flat, f)
                if j < len(b.flat) and b.flat[j] == f:
                    out[i] = v[j]
    return out


def test_labels_at_grid_uneven_chunks_and_outside_points():
    rng = np.random.default_rng(1)
    vol, pieces, values = _grid_pieces(rng)
    pts = np.stack([rng.integers(-2, n + 2, 3000) for n in vol.shape], axis=1)  # some outside the grid
    want = _brute(pts, pieces, values)
    assert _piece_of(pts, pieces) is not None          # the grid path is taken
    assert np.array_equal(labels_at(pts, pieces, values), want)
    assert (want > 0).sum() > 100                      # the test sees carried values


def test_labels_at_sub_grid_and_non_grid_fallback():
    rng = np.random.default_rng(2)
    vol, pieces, values = _grid_pieces(rng)
    pts = np.stack([rng.integers(0, n, 2000) for n in vol.shape], axis=1)
    # a sub-grid with a hole (the region's blocks minus one): points in the hole get 0
    keep = [i for i in range(len(pieces)) if i != 5]
    sub_p, sub_v = [pieces[i] for i in keep], [values[i] for i in keep]
    assert np.array_equal(labels_at(pts, sub_p, sub_v), _brute(pts, sub_p, sub_v))
    # boxes that are not one grid (overlapping spans on an axis): the per-piece path
    odd = BlockVoxels((5, 10, 10), (0, 3, 3), np.arange(0, 500, 7, dtype=np.int64),
                      np.ones(72, np.int32), np.ones(72, np.int32), 1, 1)
    mixed_p, mixed_v = [pieces[0], odd], [values[0], np.arange(1, 73)]
    assert _piece_of(pts, mixed_p) is None
    # the brute force gives the first piece on overlaps; these two overlap, so compare per piece
    got = labels_at(pts, [odd], [np.arange(1, 73)])
    assert np.array_equal(got, _brute(pts, [odd], [np.arange(1, 73)]))
    assert np.array_equal(labels_at(pts[:0], pieces, values), np.zeros(0, np.int64))
    assert np.array_equal(labels_at(pts, [], []), np.zeros(len(pts), np.int64))


@pytest.mark.parametrize("n, high", [(0, 5), (1, 3), (2000, 6), (50_000, 40_000), (500, 2 ** 31),
                                     (300, 2 ** 40)])
def test_unique_pairs_equals_numpy_unique_of_rows(n, high):
    """The object vote's (object, label) pairs: numpy's row-wise unique, through int64 keys
    (and numpy's own row unique where a key would overflow)."""
    from dask_tracking.reassign.vote import unique_pairs

    rng = np.random.default_rng(n + high % 97)
    a = rng.integers(0, high, n)
    b = rng.integers(0, high, n)
    if n > 10:
        b[::3] = 0
        a[1::4] = a[0]
    up, inv, cnt = unique_pairs(a, b)
    assert up.dtype == inv.dtype == cnt.dtype == np.int64
    if n == 0:
        assert up.shape == (0, 2) and len(inv) == len(cnt) == 0
        return
    want, winv, wcnt = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(up, want)
    np.testing.assert_array_equal(inv, winv.reshape(-1))
    np.testing.assert_array_equal(cnt, wcnt)
    np.testing.assert_array_equal(up[inv], np.stack([a, b], 1))
