"""The nearest-voxel fast path (a raster-key lookup of the nearest lattice point) returns
exactly what a plain cKDTree search returns: the same index in the default mode (lowest
index among equidistant voxels) and the same voxel in compat mode (cKDTree's own tie rule).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dask_tracking.reassign.candidates import (_lattice_rows, _nearest_match, frame_index_from_keys,
                                               nearest_voxel, scaled)

YEAST = (0.25, 0.0655, 0.0655)


def reference_nearest(points, queries, spacing):
    """The search as it was before the fast path: k = 1..2**d on a cKDTree, lowest tied index."""
    tree = cKDTree(scaled(points, spacing))
    k = min(2 ** points.shape[1], len(points))
    dist, idx = tree.query(scaled(queries, spacing), k=list(range(1, k + 1)))
    tied = dist == dist[:, :1]
    return np.where(tied, idx, np.iinfo(np.int64).max).min(axis=1), dist[:, 0]


def lattice_points(rng, shape, density, *, corner=None):
    mask = rng.random(shape) < density
    if corner is not None:  # only a corner holds voxels: the rest of the frame is far from any
        keep = np.zeros(shape, bool)
        keep[tuple(slice(0, c) for c in corner)] = True
        mask &= keep
    return np.argwhere(mask).astype(np.int64)  # raster order


def mixed_queries(rng, points, shape, n):
    """Near-lattice, exactly on voxels, half-way (ties), just short of half-way, outside, far."""
    d = len(shape)
    hi = np.asarray(shape, float)
    on = points[rng.integers(0, len(points), n)].astype(np.float64)
    parts = [
        on + rng.uniform(-0.3, 0.3, (n, d)),                      # near a labelled voxel
        on,                                                       # on one
        rng.integers(0, shape, (n, d)).astype(np.float64),        # on any voxel, labelled or not
        on + 0.5 * rng.integers(-1, 2, (n, d)),                   # half-way on some axes: ties
        np.floor(on) + 0.5,                                       # half-way on every axis
        on + np.float32(0.5) - np.float32(2.0 ** -20) * rng.integers(0, 3, (n, d)),  # at/just short of half
        rng.uniform(-0.5, 0.5, (n, d)) * hi + hi * rng.integers(-1, 2, (n, d)),      # outside the frame
        rng.uniform(0, 1, (n, d)) * hi,                           # anywhere (far ones included)
        -np.ones((n, d)) * 0.5,                                   # half-way, just outside
    ]
    return np.concatenate(parts)


CASES = [((12, 40, 40), YEAST, 0.3, None), ((16, 48, 48), YEAST, 0.05, (4, 10, 10)),
         ((10, 30, 30), (0.2, 0.2, 0.2), 0.2, None), ((60, 70), (0.3, 0.1), 0.25, None),
         ((64, 64), (0.1, 0.1), 0.02, (8, 8))]


@pytest.mark.parametrize("shape, spacing, density, corner", CASES)
def test_nearest_voxel_equals_tree_search(shape, spacing, density, corner):
    rng = np.random.default_rng(len(shape) * 100 + int(density * 100))
    pts = lattice_points(rng, shape, density, corner=corner)
    q = mixed_queries(rng, pts, shape, 300)
    idx, dist = nearest_voxel(pts, q, spacing)
    ref_idx, ref_dist = reference_nearest(pts, q, spacing)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)  # the same float operations, bit for bit
    # with a prebuilt tree too
    idx2, _ = nearest_voxel(pts, q, spacing, tree=cKDTree(scaled(pts, spacing)))
    np.testing.assert_array_equal(idx2, ref_idx)


def test_nearest_voxel_points_out_of_raster_order_and_duplicates():
    rng = np.random.default_rng(7)
    pts = lattice_points(rng, (10, 32, 32), 0.2)
    pts = np.concatenate([pts, pts[::5]])[rng.permutation(len(pts) + len(pts[::5]))]
    q = mixed_queries(rng, pts, (10, 32, 32), 200)
    idx, dist = nearest_voxel(pts, q, YEAST)
    ref_idx, ref_dist = reference_nearest(pts, q, YEAST)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_nearest_voxel_far_from_the_origin():
    """Large coordinates (a frame offset of 2**17 voxels): the rounding bound grows with them."""
    rng = np.random.default_rng(3)
    pts = lattice_points(rng, (8, 24, 24), 0.3) + np.array([2 ** 17, 2 ** 17 + 5, 2 ** 16])
    q = np.concatenate([pts + rng.uniform(-0.45, 0.45, pts.shape), pts + 0.5,
                        pts + rng.integers(-2, 3, pts.shape) * 0.5])
    idx, dist = nearest_voxel(pts, q, YEAST)
    ref_idx, ref_dist = reference_nearest(pts, q, YEAST)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_nearest_voxel_empty_and_single():
    idx, dist = nearest_voxel(np.zeros((0, 3), np.int64), np.ones((4, 3)), YEAST)
    assert (idx == -1).all() and np.isinf(dist).all()
    one = np.array([[2, 3, 4]], np.int64)
    q = np.array([[2.0, 3.0, 4.0], [2.5, 3.5, 4.5], [9.0, 9.0, 9.0], [2.1, 2.9, 4.2]])
    idx, dist = nearest_voxel(one, q, YEAST)
    np.testing.assert_array_equal(idx, [0, 0, 0, 0])
    np.testing.assert_array_equal(dist, reference_nearest(one, q, YEAST)[1])


def test_lattice_rows_takes_decisive_rows_and_leaves_ties():
    q = np.array([[1.0, 2.0, 3.0], [1.49, 2.2, 2.7], [1.5, 2.0, 3.0], [1.0, 2.5, 3.0],
                  [np.float32(1.5) - np.float32(2 ** -22), 2.0, 3.0], [np.nan, 1.0, 1.0],
                  [np.inf, 1.0, 1.0], [-0.4, -3.0, 2.0], [2.0 ** 24, 0.0, 0.0]])
    rows, v = _lattice_rows(q, YEAST)
    np.testing.assert_array_equal(rows, [0, 1, 4, 7])
    np.testing.assert_array_equal(v, [[1, 2, 3], [1, 2, 3], [1, 2, 3], [0, -3, 2]])


def test_most_near_lattice_queries_take_the_fast_path():
    """Predictions near labelled voxels (not half-way) are answered without a tree."""
    rng = np.random.default_rng(11)
    pts = lattice_points(rng, (12, 40, 40), 0.3)
    q = pts + rng.uniform(-0.49, 0.49, pts.shape)
    rows, v = _lattice_rows(q.astype(np.float32).astype(np.float64), YEAST)
    assert len(rows) == len(q)
    np.testing.assert_array_equal(v, pts)


@pytest.mark.parametrize("shape, spacing, density, corner", CASES)
def test_nearest_match_compat_equals_frame_tree(shape, spacing, density, corner):
    rng = np.random.default_rng(len(shape) * 10 + int(density * 1000))
    pts = lattice_points(rng, shape, density, corner=corner)
    keys = np.ravel_multi_index(tuple(pts.T), shape)
    fi = frame_index_from_keys(keys[rng.permutation(len(keys))], shape, spacing, 0.5, None, None)
    q = mixed_queries(rng, pts, shape, 300)
    got = _nearest_match(q, fi, None, spacing)
    _, j = fi.tree.query(scaled(q, spacing), k=1)
    np.testing.assert_array_equal(got, fi.voxels(j))
    assert got.dtype == np.int64 and got.shape == q.shape


def test_nearest_match_compat_ties_everywhere():
    """Isotropic spacing, every voxel labelled, queries half-way on 1..3 axes: cKDTree's own
    choice among up to 8 equidistant voxels is kept."""
    shape, spacing = (6, 10, 10), (0.1, 0.1, 0.1)
    pts = np.argwhere(np.ones(shape, bool)).astype(np.int64)
    keys = np.ravel_multi_index(tuple(pts.T), shape)
    fi = frame_index_from_keys(keys, shape, spacing, 0.5, None, None)
    rng = np.random.default_rng(5)
    base = pts[rng.integers(0, len(pts), 500)].astype(np.float64)
    q = base + 0.5 * rng.integers(0, 2, base.shape)
    got = _nearest_match(q, fi, None, spacing)
    _, j = fi.tree.query(scaled(q, spacing), k=1)
    np.testing.assert_array_equal(got, fi.voxels(j))
    assert len(_nearest_match(q[:0], fi, None, spacing)) == 0


def test_nearest_match_default_mode_equals_reference():
    rng = np.random.default_rng(21)
    pts = lattice_points(rng, (10, 36, 36), 0.25)
    q = mixed_queries(rng, pts, (10, 36, 36), 200)
    got = _nearest_match(q, None, pts, YEAST)
    np.testing.assert_array_equal(got, pts[reference_nearest(pts, q, YEAST)[0]])
