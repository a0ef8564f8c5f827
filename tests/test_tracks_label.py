"""label_tracks: Nellie parity (compat), chunk invariance, accuracy against known motion."""

from __future__ import annotations

import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.interpolate import frame_anchors
from dask_tracking.tracks import Tracks, WalkParams, walk


def _rows(a):
    a = np.asarray(a, dtype=np.float64)
    return a[np.lexsort(a.T[::-1])]


@pytest.fixture(scope="module")
def flow(yeast_reference):
    return FlowTable.from_numpy(yeast_reference["flow_vector_array"][...], n_frames=30)


@pytest.mark.parametrize("label,start,chunk", [(1, 0, 100_000), (1, 15, 3000), (None, 0, 100_000),
                                               (None, 15, 40_000)])
def test_compat_equals_nellie_label_tracks(yeast, yeast_reference, flow, label, start, chunk):
    want = yeast_reference[f"tracks_label{'all' if label is None else label}_start{start}"][...]
    tracks = dt.label_tracks(yeast, flow, label=label, start_frame=start, compat="nellie", chunk_size=chunk)
    assert isinstance(tracks, Tracks)
    data, props = tracks
    assert data.shape == want.shape
    np.testing.assert_allclose(_rows(data), _rows(want), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(props["frame_num"], data[:, 1].astype(np.int64))
    if start > 0:  # Nellie emits the start frame from both directions
        n_start = np.count_nonzero(data[:, 1] == start)
        assert n_start > len(np.unique(data[data[:, 1] == start, 0]))


def test_spatial_chunking_of_labels_does_not_matter(yeast, yeast_reference, flow):
    want = yeast_reference["tracks_label1_start15"][...]
    for chunks in [(5, 50, 70), (17, 64, 64)]:
        got = dt.label_tracks(yeast.rechunk(chunks), flow, label=1, start_frame=15, compat="nellie")
        np.testing.assert_allclose(_rows(got.data), _rows(want), rtol=0, atol=1e-9)


def test_default_mode_chunks_order_and_start_once(yeast, flow):
    a = dt.label_tracks(yeast, flow, start_frame=15, skip_coords=3)
    b = dt.label_tracks(yeast.rechunk((5, 50, 70)), flow, start_frame=15, skip_coords=3, chunk_size=333)
    np.testing.assert_array_equal(a.data, b.data)
    for k in a.properties:
        np.testing.assert_array_equal(a.properties[k], b.properties[k])
    key = a.data[:, 0] * 100 + a.data[:, 1]
    assert np.all(np.diff(key) > 0)  # sorted by (track, t), each frame once per track
    assert a.data[:, 1].min() == 0 and a.data[:, 1].max() == 29
    assert set(np.unique(a.properties["label"])) <= set(range(1, 200)) and len(a.properties["label"]) == len(a)
    n_seeds = int((yeast.labels[15] > 0).sum().compute())
    assert a.n_tracks == len(range(0, n_seeds, 3))


def test_other_label_volume_and_min_track_num(yeast, yeast_reference, flow):
    other = yeast_reference["labels_reassigned"]
    import dask.array as da

    lab = da.from_zarr(other)
    tr = dt.label_tracks(yeast, flow, labels=lab, label=2, start_frame=3, end_frame=8, min_track_num=1000)
    n_seed = int((other[3] == 2).sum())
    assert tr.n_tracks == n_seed and tr.track_ids.min() == 1000
    assert tr.data[:, 1].max() == 8 and tr.data[:, 1].min() == 0
    assert np.all(tr.properties["label"] == 2)


def test_no_track_dies_from_the_nan_batch_quirk():
    # 2D, one frame pair: a uniform flow everywhere; a few seeds start as NaN
    g = np.stack(np.meshgrid(np.arange(0, 40, 2.0), np.arange(0, 40, 2.0), indexing="ij"), -1).reshape(-1, 2)
    rows = np.column_stack([np.zeros(len(g)), g, np.full(len(g), 0.5), np.full(len(g), 0.25),
                            np.full(len(g), -2.0)])
    flow = FlowTable.from_numpy(np.concatenate([rows, rows + [1, 0, 0, 0, 0, 0]]), n_frames=3)
    seeds = np.random.default_rng(0).uniform(5, 30, size=(50, 2))
    seeds[[3, 10]] = np.nan
    anchors = {t: frame_anchors(flow.frame(t), 2, True) for t in (0, 1)}
    # Nellie: step 1 keeps rows < n_good = 48 (46 alive), step 2 rows < 46 (44 alive)
    for compat, survivors in ((None, 48), ("nellie", 44)):
        res = walk([seeds[:20], seeds[20:]], [0, 1], anchors, WalkParams((0.3, 0.3), 1.0, True, compat))
        alive = sum(np.isfinite(f[:, 0]).sum() for f in res.final)
        assert alive == survivors  # Nellie loses the last n_nan good rows at each step (B3)
    np.testing.assert_allclose(res.final[0][0], seeds[0] + [1.0, 0.5])


def test_tracks_follow_true_motion_on_a_synthetic_movie():
    from dask_tracking.datasets import synthetic

    ds = synthetic(ndim=3, n_frames=11, seed=0)
    flow = dt.estimate_flow(ds).persist(scheduler="threads")
    fixed = dt.label_tracks(ds, flow)
    nellie = dt.label_tracks(ds, flow, compat="nellie")
    seeds = fixed.data[fixed.data[:, 1] == 0]
    last = fixed.data[fixed.data[:, 1] == 10]
    start = dict(zip(seeds[:, 0].astype(int), seeds[:, 2:]))
    truth = ds.truth.position(np.array([start[int(i)] for i in last[:, 0]]), 0, 10)
    err = np.linalg.norm((last[:, 2:] - truth) * np.asarray(ds.spacing), axis=1)
    assert np.median(err) < 0.5
    assert len(last) > 0.8 * len(seeds)
    assert len(last) > np.count_nonzero(nellie.data[:, 1] == 10)


def test_errors_before_work(yeast, flow):
    with pytest.raises(InputError, match=r"start_frame must be an integer in \[0, 29\], got 30"):
        dt.label_tracks(yeast, flow, start_frame=30)
    with pytest.raises(InputError, match=r"skip_coords must be an integer in >= 1, got 0"):
        dt.label_tracks(yeast, flow, skip_coords=0)
    with pytest.raises(InputError, match="labels must have the dataset's shape"):
        dt.label_tracks(yeast, flow, labels=np.zeros((2, 3, 4, 5), np.int32))
    with pytest.raises(InputError, match="compat must be None"):
        dt.label_tracks(yeast, flow, compat="yes")
    with pytest.raises(InputError, match="dataset must be a TrackingDataset"):
        dt.label_tracks("yeast.zarr", flow)
    empty = dt.label_tracks(yeast, flow, label=10**6)
    assert len(empty) == 0 and empty.data.shape == (0, 5)


def test_label_look_ups_in_slices_equal_one_pass(monkeypatch):
    import dask.array as da

    from dask_tracking.tracks import label as label_mod

    rng = np.random.default_rng(3)
    lab = rng.integers(0, 3, (3, 5, 17, 19)).astype(np.int32)
    lazy = da.from_array(lab, chunks=(1, 5, 8, 7))
    rows = np.column_stack([np.arange(500.0), rng.integers(0, 3, 500), rng.uniform(-1, 5.4, 500),
                            rng.uniform(-1, 17.4, 500), rng.uniform(-1, 19.4, 500)])
    whole = label_mod.inside_labels(rows, lazy)
    monkeypatch.setattr(label_mod, "_LOOKUP_ROWS", 37)
    sliced = label_mod.inside_labels(rows, lazy)
    np.testing.assert_array_equal(sliced, whole)
    r = np.round(rows[:, 1:]).astype(int)
    inb = np.all((r >= 0) & (r < lab.shape), axis=1)
    want = np.zeros(len(rows), bool)
    want[inb] = lab[tuple(r[inb].T)] > 0
    np.testing.assert_array_equal(whole, want)
