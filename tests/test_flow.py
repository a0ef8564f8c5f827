"""estimate_flow on synthetic movies with known motion, chunking invariance, edge cases, features."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest
from scipy.spatial import cKDTree

import dask_tracking as dt
from dask_tracking.dataset import InputError, Scale, TrackingDataset
from dask_tracking.datasets import synthetic
from dask_tracking.flow import features as F


# ------------------------------------------------------------------ helpers
def _score(ds, rows):
    """Endpoint errors (voxels) and whether each row ends on its start's object."""
    d = ds.ndim
    err, same = [], []
    for t in range(ds.n_frames - 1):
        r = rows[rows[:, 0] == t]
        if not len(r):
            continue
        p0, v = r[:, 1:1 + d], r[:, 1 + d:1 + 2 * d]
        err.append(np.linalg.norm(v - ds.truth.displacement(p0, t), axis=1))
        same.append(ds.truth.object_at(p0, t, nearest=True)
                    == ds.truth.object_at(p0 + v, t + 1, nearest=True))
    return np.concatenate(err), np.concatenate(same)


def _oracle_error(ds):
    """Median distance from each marker's true destination to the nearest marker of t+1."""
    m = ds.markers.compute()
    out = []
    for t in range(ds.n_frames - 1):
        p, q = np.argwhere(m[t]), np.argwhere(m[t + 1])
        out.append(cKDTree(q).query(p + ds.truth.displacement(p, t))[0])
    return float(np.median(np.concatenate(out)))


@pytest.fixture(scope="module")
def syn2():
    return synthetic(ndim=2, n_frames=5, seed=1)


@pytest.fixture(scope="module")
def syn3():
    return synthetic(ndim=3, n_frames=4, seed=1)


# ------------------------------------------------------- known motion
def test_default_mode_2d_known_motion(syn2):
    """The fixed matching alone (the refined default is tested in test_refine.py)."""
    rows = dt.estimate_flow(syn2, refine=False, one_to_one=False).to_numpy(scheduler="sync")
    assert rows.shape[1] == 6 and len(rows) > 20
    err, same = _score(syn2, rows)
    assert np.median(err) <= 1.0
    assert same.mean() >= 0.9
    assert np.isfinite(rows).all()


def test_default_mode_3d_known_motion(syn3):
    rows = dt.estimate_flow(syn3, refine=False, one_to_one=False).to_numpy(scheduler="sync")
    assert np.all(rows[:, 4:7] == np.rint(rows[:, 4:7]))        # marker to marker: whole voxels
    assert rows.shape[1] == 8 and len(rows) > 20
    err, same = _score(syn3, rows)
    assert same.mean() >= 0.9
    # markers are re-detected each frame, so even the best marker-to-marker match is
    # off by the oracle error (about 1.3 voxels here); stay close to it
    assert np.median(err) <= 1.5 * _oracle_error(syn3)
    assert np.isfinite(rows).all()


# ------------------------------------------------------------ chunking
@pytest.mark.parametrize("compat", [None, "nellie"])
def test_same_answer_for_every_chunking_3d(syn3, compat):
    whole = dt.estimate_flow(syn3, compat=compat).to_numpy(scheduler="sync")
    assert len(whole) > 0
    for chunks in [(5, 50, 70), (12, 17, 64), ((5, 7), (30, 66), (50, 13, 65))]:
        got = dt.estimate_flow(syn3.rechunk(chunks), compat=compat).to_numpy(scheduler="threads")
        np.testing.assert_array_equal(got, whole)


def test_same_answer_for_every_chunking_2d(syn2):
    whole = dt.estimate_flow(syn2).to_numpy(scheduler="sync")
    for chunks in [(64, 64), (50, 70), ((100, 28), (13, 115))]:
        got = dt.estimate_flow(syn2.rechunk(chunks)).to_numpy(scheduler="threads")
        np.testing.assert_array_equal(got, whole)


def test_volumes_with_different_chunkings(syn3):
    """Each volume is read through its own chunk grid (T chunks of 2 included)."""
    whole = dt.estimate_flow(syn3, compat="nellie").to_numpy(scheduler="sync")
    mixed = syn3.replace(raw=syn3.raw.rechunk((2, 7, 33, 50)),
                         preprocessed=syn3.preprocessed.rechunk((1, 12, 96, 20)),
                         distance=syn3.distance.rechunk((2, 5, 40, 128)))
    got = dt.estimate_flow(mixed, compat="nellie").to_numpy(scheduler="threads")
    np.testing.assert_array_equal(got, whole)


# ------------------------------------------------------- dense / sparse
def test_default_dense_and_sparse_identical(syn3):
    dense = dt.estimate_flow(syn3, mode="dense").to_numpy(scheduler="sync")
    sparse = dt.estimate_flow(syn3, mode="sparse").to_numpy(scheduler="sync")
    auto_sparse = dt.estimate_flow(syn3, max_dense_pairs=0).to_numpy(scheduler="sync")
    np.testing.assert_array_equal(dense, sparse)
    np.testing.assert_array_equal(dense, auto_sparse)


def test_compat_dense_and_sparse_agree_on_pairs(syn2):
    dense = dt.estimate_flow(syn2, compat="nellie", mode="dense").to_numpy(scheduler="sync")
    sparse = dt.estimate_flow(syn2, compat="nellie", mode="sparse").to_numpy(scheduler="sync")
    a = {tuple(r) for r in dense[:, :-1]}
    b = {tuple(r) for r in sparse[:, :-1]}
    assert len(a ^ b) <= 0.05 * len(a)
    # float16 costs in dense, float32-rounded float64 costs in sparse
    assert np.all(dense[:, -1] == dense[:, -1].astype(np.float16))
    assert np.all(sparse[:, -1] == sparse[:, -1].astype(np.float32))


def test_compat_has_duplicate_mutual_rows_default_does_not(syn2):
    compat = dt.estimate_flow(syn2, compat="nellie").to_numpy(scheduler="sync")
    fixed = dt.estimate_flow(syn2, refine=False, one_to_one=False).to_numpy(scheduler="sync")
    assert len(np.unique(compat, axis=0)) < len(compat)
    assert len(np.unique(fixed[:, :-1], axis=0)) == len(fixed)
    # rows of one pair come sorted by pre marker (raster order) in the default mode
    for t in range(syn2.n_frames - 1):
        r = fixed[fixed[:, 0] == t]
        keys = r[:, 1] * 10_000 + r[:, 2]
        assert np.all(np.diff(keys) >= 0)


# ------------------------------------------------------------- edge cases
def _tiny_2d(markers, n_frames=None, dt_s=1.0):
    markers = np.asarray(markers, dtype=np.uint8)
    shape = markers.shape
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    rng = np.random.default_rng(0)
    raw = (100 + rng.integers(0, 50, size=shape)).astype(np.uint16)
    pre = rng.random(shape).astype(np.float32) * 0.5
    dist = np.full(shape, 2.0, np.float32)
    labels = np.ones(shape, np.int32)
    return TrackingDataset.from_arrays(
        raw=raw, preprocessed=pre, distance=dist, markers=markers, labels=labels,
        branches=labels.astype(np.uint32), scale={"T": dt_s, "Y": 0.1, "X": 0.1})


def test_frame_without_markers_breaks_both_pairs(syn2):
    markers = syn2.markers.compute()
    markers[2] = 0
    ds = syn2.replace(markers=da.from_array(markers, chunks=(1, 64, 64)))
    for compat in (None, "nellie"):
        table = dt.estimate_flow(ds, compat=compat)
        counts = table.counts(scheduler="sync")
        assert counts[1] == 0 and counts[2] == 0
        assert counts[0] > 0 and counts[3] > 0


def test_no_pair_within_the_gate():
    m = np.zeros((3, 40, 40), np.uint8)
    m[0, 5, 5] = 1
    m[1, 35, 35] = 1      # 4.2 um away from frame 0's marker, the gate is 0.5 um
    m[2, 35, 36] = 1      # 0.1 um away from frame 1's marker
    ds = _tiny_2d(m)
    for compat in (None, "nellie"):
        for mode in ("dense", "sparse"):
            rows = dt.estimate_flow(ds, compat=compat, mode=mode, max_distance_um=0.1)
            blocks = rows.compute_pairs(scheduler="sync")
            assert blocks[0].shape == (0, 6)
            assert len(blocks[1]) >= 1
            np.testing.assert_array_equal(blocks[1][0, :5], [1, 35, 35, 0, 1])
            assert np.isfinite(blocks[1]).all()


def test_single_frame_is_a_clear_error():
    a = da.zeros((1, 8, 8), dtype=np.uint16, chunks=(1, 8, 8))
    ds = TrackingDataset(raw=a, preprocessed=a.astype(np.float32), distance=a.astype(np.float32),
                         markers=a.astype(np.uint8), labels=a.astype(np.int32),
                         branches=a.astype(np.uint32), scale=Scale(t=1.0, y=0.1, x=0.1), axes="TYX")
    with pytest.raises(InputError, match="at least 2 frames"):
        dt.estimate_flow(ds)


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "fast"}, "mode must be one of 'auto', 'dense', 'sparse', got 'fast'"),
    ({"compat": "nelly"}, "compat must be None .* or 'nellie'"),
    ({"max_distance_um": -1}, "max_distance_um must be a positive number"),
    ({"max_dense_pairs": -5}, "max_dense_pairs must be a non-negative integer, got -5"),
    ({"max_radius_um": 0}, "max_radius_um must be a positive number"),
    ({"num_t": 99}, r"num_t must be an integer in \[2, 5\]"),
])
def test_bad_arguments(syn2, kwargs, match):
    with pytest.raises(InputError, match=match):
        dt.estimate_flow(syn2, **kwargs)
    with pytest.raises(InputError, match="dataset must be a TrackingDataset"):
        dt.estimate_flow(np.zeros((2, 4, 4)))


def test_roi_beyond_halo_raises_naming_max_radius(syn2):
    table = dt.estimate_flow(syn2.rechunk((64, 64)), max_radius_um=0.01)
    with pytest.raises(InputError, match="max_radius_um"):
        table.to_numpy(scheduler="sync")


def test_num_t_uses_leading_frames(syn2):
    full = dt.estimate_flow(syn2, compat="nellie").to_numpy(scheduler="sync")
    part = dt.estimate_flow(syn2, compat="nellie", num_t=3)
    assert part.n_frames == 3
    np.testing.assert_array_equal(part.to_numpy(scheduler="sync"), full[full[:, 0] < 2])


def test_graph_building_is_lazy_and_fast():
    shape = (200, 64, 2048, 2048)   # 54 Ti-voxels per volume: never computed
    z = da.zeros(shape, dtype=np.float32, chunks=(1, 64, 1024, 1024))
    ds = TrackingDataset(raw=z.astype(np.uint16), preprocessed=z, distance=z,
                         markers=z.astype(np.uint8), labels=z.astype(np.int32),
                         branches=z.astype(np.uint32), scale=Scale(t=1, z=0.2, y=0.1, x=0.1))
    t0 = time.perf_counter()
    table = dt.estimate_flow(ds)
    assert time.perf_counter() - t0 < 20
    assert table.is_lazy and len(table.pairs) == 199


# --------------------------------------------------------------- features
def test_variance_overflow_reproduced_in_compat_fixed_by_default():
    box = np.array([[[300, 500, 1000]]], dtype=np.uint16)
    compat = F._stats_compat(box)[0]
    fixed = F._stats_fixed(box)[0]
    assert compat[1] == pytest.approx(-328394.66, rel=1e-6)       # spec B1
    assert fixed[1] == pytest.approx(np.var([300.0, 500.0, 1000.0]), rel=1e-6)
    assert compat[0] == fixed[0] == pytest.approx(600.0)


def test_hu_moments_match_skimage():
    from skimage.measure import moments_central, moments_hu, moments_normalized

    rng = np.random.default_rng(3)
    img = rng.integers(0, 1000, size=(1, 9, 13)).astype(np.uint16)
    want = moments_hu(moments_normalized(moments_central(img[0].astype(np.float64), order=3), 3))[:6]
    for compat in (True, False):
        got = F._hu(img, 2, compat)[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-14)
    assert F.log_hu(np.array([[0.0, 1e-3]]))[0, 0] == 0.0
    assert F.log_hu(np.array([[0.0, 1e-3]]), True)[0, 1] == pytest.approx(3.0)


def test_features_do_not_depend_on_the_batch():
    rng = np.random.default_rng(5)
    raw = rng.integers(1, 3000, size=(12, 40, 40)).astype(np.uint16)
    pre = (rng.random((12, 40, 40)) ** 4).astype(np.float32)
    pts = np.argwhere(rng.random((12, 40, 40)) > 0.995)
    radii = np.full(len(pts), 3.0, np.float32)
    kw = dict(offset=(0, 0, 0), frame_shape=raw.shape, cube=7, shift=-4.0, compat=True)
    full = F.block_features(raw, pre, pts, radii, **kw)
    one = [F.block_features(raw, pre, pts[k:k + 1], radii[k:k + 1], **kw) for k in range(len(pts))]
    np.testing.assert_array_equal(np.concatenate([o.stats for o in one]), full.stats)
    np.testing.assert_array_equal(np.concatenate([o.hu for o in one]), full.hu)


@pytest.mark.parametrize("sizes", [(300, 280, 18), (40, 900, 6), (1, 500, 18)])
def test_compat_dense_cost_in_row_blocks_is_bit_identical(sizes):
    """Large frame pairs build Nellie's dense cost in row blocks: same bits as whole arrays."""
    from dask_tracking.flow import matching as M

    na, nb, nh = sizes
    rng = np.random.default_rng(1)
    qa, qb = rng.random((na, 3)) * 5, rng.random((nb, 3)) * 5

    def feats(n):
        return F.FrameFeatures(np.zeros((n, 3), np.int64), (rng.random((n, 4)) * 100).astype(np.float32),
                               rng.random((n, nh)) * 10)

    a, b = feats(na), feats(nb)
    whole = M._cost_dense_compat(qa, qb, a, b, 2.0, block_elements=10**12)
    blocks = M._cost_dense_compat(qa, qb, a, b, 2.0, block_elements=50_000)
    assert np.isfinite(whole).any()
    np.testing.assert_array_equal(blocks, whole)


@pytest.mark.parametrize("compat", [False, True])
def test_log_minimum_equals_the_minimum_of_the_transform(compat):
    rng = np.random.default_rng(7)
    pre = (rng.random((6, 30, 30)) ** 6).astype(np.float32)
    pre[pre < 0.3] = 0
    want = F.transform_preprocessed(pre, None, compat).min()
    assert want < 0
    assert F.log_min(pre, compat) == float(want)
    pre[0, 0, 0] = -50.0                   # a negative input is not log-transformed
    assert F.log_min(pre, compat) == -50.0
    assert F.log_min(np.zeros((3, 3), np.float32), compat) is None
