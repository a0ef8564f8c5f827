"""Voxel reassignment (default mode) on synthetic movies with known motion, options, errors."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.dataset import InputError, TrackingDataset
from dask_tracking.datasets import synthetic
from dask_tracking.flow.table import FlowTable


def truth_flow(ds: TrackingDataset) -> FlowTable:
    """Flow rows at the markers with the true integer displacement (known motion), cost -1."""
    markers = ds.markers.compute(scheduler="threads")
    pairs = []
    for t in range(ds.n_frames - 1):
        p = np.argwhere(markers[t] > 0).astype(np.float64)
        d = np.round(ds.truth.displacement(p, t)) if len(p) else p
        pairs.append(np.column_stack([np.full(len(p), float(t)), p, d, np.full(len(p), -1.0)]))
    return FlowTable(pairs, ds.ndim, ds.n_frames)


def compute(*args):
    with dask.config.set(scheduler="threads", num_workers=2):
        return dask.compute(*args)


@pytest.fixture(scope="module")
def movie3d():
    ds = synthetic(3, 20, seed=3, n_objects=6)
    return ds, truth_flow(ds)


def identity_scores(labels, truth, original):
    """Coverage of labelled voxels, and the share carrying their object's frame-0 identity."""
    m = original > 0
    covered = m & (labels > 0)
    # frame-0 correspondence true object -> reassigned label (a permutation)
    t0 = covered[0]
    perm = {}
    for obj in np.unique(truth[0][t0]):
        vals, cnt = np.unique(labels[0][t0 & (truth[0] == obj)], return_counts=True)
        perm[int(obj)] = int(vals[np.argmax(cnt)])
    assert len(set(perm.values())) == len(perm)
    expect = np.vectorize(lambda o: perm.get(int(o), -1))(truth[covered])
    return covered.sum() / m.sum(), float(np.mean(labels[covered] == expect))


def test_default_mode_keeps_identities_over_20_frames(movie3d):
    ds, flow = movie3d
    res = dt.reassign_labels(ds, flow)
    labels, truth, original = compute(res.labels, ds.truth.objects, ds.labels)
    coverage, correct = identity_scores(labels, truth, original)
    assert coverage >= 0.95 and correct >= 0.95, (coverage, correct)
    # every frame keeps its coverage: no decay over time
    per_frame = [(labels[t][original[t] > 0] > 0).mean() for t in range(20)]
    assert min(per_frame) >= 0.95, per_frame
    # without the fill some voxels are left unlabelled, and the fill only adds labels
    plain = dt.reassign_labels(ds, flow, fill_unmatched=False)
    plain_labels, = compute(plain.labels)
    assert (plain_labels > 0).sum() < (labels > 0).sum()
    kept = plain_labels > 0
    assert np.array_equal(plain_labels[:2][kept[:2]], labels[:2][kept[:2]])


UNEVEN = ((4, 5, 3), (30, 41, 25), (50, 7, 71))


@pytest.mark.parametrize("chunks", [(17, 64, 64), (5, 50, 70), UNEVEN], ids=["17x64x64", "5x50x70", "uneven"])
def test_same_result_for_any_chunking(chunks):
    ds = synthetic(3, 5, seed=5, n_objects=8)
    flow = truth_flow(ds)
    ref = dt.reassign_labels(ds, flow)
    res = dt.reassign_labels(ds.rechunk(chunks), flow)
    a = compute(ref.labels, ref.branches, *ref.matches)
    b = compute(res.labels, res.branches, *res.matches)
    assert res.labels.chunks == ds.rechunk(chunks).labels.chunks
    assert (a[0][1:] > 0).sum() > 1000  # objects are carried (and cross the seams)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_2d_movie_and_new_objects_get_new_ids():
    ds = synthetic(2, 6, seed=2, n_objects=5)
    flow = truth_flow(ds)
    # hide one object at frame 0: it appears later and must get a fresh id, not 0
    lab0 = ds.labels[0].compute()
    victim = int(np.unique(lab0[lab0 > 0])[0])
    labels = da.concatenate([da.where(ds.labels[:1] == victim, 0, ds.labels[:1]), ds.labels[1:]]).rechunk(ds.labels.chunks)
    branches = da.concatenate([da.where(ds.labels[:1] == victim, 0, ds.branches[:1]), ds.branches[1:]]).rechunk(ds.labels.chunks)
    ds2 = ds.replace(labels=labels, branches=branches)
    res = dt.reassign_labels(ds2, flow)
    out, orig = compute(res.labels, ds2.labels)
    m = orig[1:] > 0
    assert (out[1:][m] > 0).all()
    new = set(np.unique(out[1:])) - set(np.unique(out[0])) - {0}
    assert new and min(new) > orig[0].max()
    nellie = dt.reassign_labels(ds2, flow, compat="nellie")
    out_n, = compute(nellie.labels)
    assert set(np.unique(out_n)) <= set(np.unique(out[0]))  # Nellie: frame-0 ids only


def test_empty_frame_stops_in_compat_and_continues_by_default():
    ds = synthetic(2, 6, seed=4, n_objects=4)
    flow = truth_flow(ds)
    keep = da.from_array(np.array([1, 1, 0, 1, 1, 1]).reshape(6, 1, 1), chunks=(1, 1, 1))
    ds2 = ds.replace(labels=(ds.labels * keep).astype(ds.labels.dtype),
                     branches=(ds.branches * keep).astype(ds.branches.dtype))
    nellie = dt.reassign_labels(ds2, flow, compat="nellie")
    out, stopped, m1, m3 = compute(nellie.labels, nellie.stopped, nellie.matches[1], nellie.matches[3])
    assert stopped == [False, True, True, True, True]
    assert (out[1] > 0).any() and not out[2:].any()
    assert len(m1) == 0 and len(m3) == 0
    default = dt.reassign_labels(ds2, flow)
    out_d, orig, m3d = compute(default.labels, ds2.labels, default.matches[3])
    assert default.stopped is None and len(m3d) > 0
    for t in (3, 4, 5):
        assert (out_d[t][orig[t] > 0] > 0).all()
    # continue_past_empty=False without the fill: Nellie's stop in default mode
    stop = dt.reassign_labels(ds2, flow, continue_past_empty=False, fill_unmatched=False)
    out_s, = compute(stop.labels)
    assert not out_s[3:].any()


def test_bad_input_raises_before_work(movie3d):
    ds, flow = movie3d
    with pytest.raises(InputError, match="compat must be None .* got 'nelly'"):
        dt.reassign_labels(ds, flow, compat="nelly")
    with pytest.raises(InputError, match="compat='nellie' .* fill_unmatched=True"):
        dt.reassign_labels(ds, flow, compat="nellie", fill_unmatched=True)
    with pytest.raises(InputError, match="max_distance_um must be a positive number .* got -1"):
        dt.reassign_labels(ds, flow, max_distance_um=-1)
    with pytest.raises(InputError, match="fill_unmatched must be True, False or None .* got 'yes'"):
        dt.reassign_labels(ds, flow, fill_unmatched="yes")
    with pytest.raises(InputError, match="flow covers 5 frames but the dataset has 20"):
        dt.reassign_labels(ds, FlowTable(flow.pairs[:4], 3, 5))
    with pytest.raises(InputError, match="flow must be a FlowTable, got ndarray"):
        dt.reassign_labels(ds, np.zeros((0, 8)))
    with pytest.raises(InputError, match="dataset must be a TrackingDataset, got dict"):
        dt.reassign_labels({}, flow)
    with pytest.raises(InputError, match=r"initial labels_t0 has shape \(3, 3\); allowed: the spatial shape"):
        dt.reassign_labels(ds, flow, initial=(2, np.zeros((3, 3), int), np.zeros((3, 3), int)))
    with pytest.raises(InputError, match=r"initial frame t0 must be an integer in \[0, 19\], got 25"):
        dt.reassign_labels(ds, flow, initial=(25, np.zeros(ds.spatial_shape, int), np.zeros(ds.spatial_shape, int)))


def test_graph_building_on_huge_lazy_input_reads_nothing():
    """A 400-frame 64x2048x2048 movie: building the graph is fast and computes nothing."""
    import time

    shape = (400, 64, 2048, 2048)
    chunks = (1, 64, 512, 512)

    def boom(block):  # any read of the input fails the test
        raise AssertionError("input data was read while building the graph")

    lab = da.zeros(shape, dtype=np.int32, chunks=chunks).map_blocks(boom, dtype=np.int32)
    arrays = {n: lab for n in ("raw", "preprocessed", "distance", "markers", "labels", "branches")}
    arrays["distance"] = lab.astype(np.float32)
    ds = TrackingDataset(**arrays, scale=dt.Scale(t=1, z=0.25, y=0.1, x=0.1), axes="TZYX")
    rows = [np.array([[t, 10, 10, 10, 1, 2, -3, -1.0]]) for t in range(399)]
    start = time.perf_counter()
    res = dt.reassign_labels(ds, FlowTable(rows, 3, 400))
    elapsed = time.perf_counter() - start
    assert res.labels.shape == shape and res.labels.chunks == lab.chunks
    assert len(res.matches) == 399
    assert elapsed < 30, f"graph building took {elapsed:.1f} s"


CALLS: list = []


def _rows_once(rows):
    CALLS.append(1)
    return rows


def test_lazy_flow_stays_lazy_and_gives_the_same_result():
    ds = synthetic(3, 4, seed=6, n_objects=5)
    flow = truth_flow(ds)
    bound = max(float(np.abs(p[:, 4:7] * np.array(ds.spacing)).max()) for p in flow.pairs) + 0.01
    lazy = FlowTable([dask.delayed(_rows_once)(p) for p in flow.pairs], 3, 4, {"gate_radius_um": bound})
    CALLS.clear()
    res = dt.reassign_labels(ds, lazy)
    assert CALLS == []  # building the graph computed no flow
    got = compute(res.labels, *res.matches)
    want = compute(*(lambda r: (r.labels, *r.matches))(dt.reassign_labels(ds, flow)))
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(InputError, match="max_displacement_um must be a number >= 0 .* got -2"):
        dt.reassign_labels(ds, lazy, max_displacement_um=-2)


def test_compat_quirk_qa_single_anchor_uses_the_whole_frame_batch():
    """Nellie's Q-A: when no voxel of the frame has more than one anchor within r, only the
    frame's first voxel gets a vector; blocks must see the frame-global count, not their own."""
    ds = synthetic(2, 3, seed=8, n_objects=4)
    lab = ds.labels.compute()
    pairs = []
    for t in range(2):
        first = np.argwhere(lab[t] > 0)[0].astype(float)  # an anchor on the frame's first voxel
        pairs.append(np.array([[t, *first, 1.0, 0.0, -1.0]]))
    flow = FlowTable(pairs, 2, 3)
    whole = dt.reassign_labels(ds, flow, compat="nellie")
    tiled = dt.reassign_labels(ds.rechunk((40, 50)), flow, compat="nellie")
    fixed = dt.reassign_labels(ds, flow, fill_unmatched=False)
    a = compute(*whole.matches, whole.labels)
    b = compute(*tiled.matches, tiled.labels)
    c = compute(*fixed.matches)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert all(1 <= len(m) <= 2 for m in a[:2])  # the first voxel forward, the first backward
    assert all(len(m) > 5 * len(n) for m, n in zip(c, a[:2]))  # the fixed kernel moves every voxel near it
