"""write_label_tracks: the rows written by the tasks equal label_tracks', in bounded pieces."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask.callbacks import Callback
from dask.sizeof import sizeof

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.tracks.frame_mask import frame_mask_lazy


@pytest.fixture(scope="module")
def flow(yeast_reference):
    return FlowTable.from_numpy(yeast_reference["flow_vector_array"][...], n_frames=30)


def _stored(path, name="tracks"):
    g = zarr.open_group(str(path), mode="r")
    props = {k: np.asarray(g[f"{name}_properties/{k}"][...]) for k in g[f"{name}_properties"].array_keys()}
    return g, np.asarray(g[name][...]), props


def _assert_same(tracks, rows, props):
    np.testing.assert_array_equal(rows, tracks.data)
    assert sorted(props) == sorted(tracks.properties)
    for k, v in tracks.properties.items():
        assert props[k].dtype == v.dtype, k
        np.testing.assert_array_equal(props[k], v)


def _by_rows(a):
    return a[np.lexsort(a.T[::-1])]


def test_frame_mask_lookup_equals_the_labels():
    rng = np.random.default_rng(5)
    lab = rng.integers(0, 3, (3, 5, 17, 19)).astype(np.int32)
    lazy = da.from_array(lab, chunks=(2, 3, (8, 9), (5, 7, 7)))
    pos = np.column_stack([rng.uniform(-1, 5.4, 4000), rng.uniform(-1, 17.4, 4000), rng.uniform(-1, 19.4, 4000)])
    pos[::5] = np.round(pos[::5] * 2) / 2          # exact halves: rounded half to even
    pos[7] = np.nan
    for t in range(3):
        got = dask.compute(frame_mask_lazy(lazy, t), scheduler="sync")[0].lookup(pos)
        r = np.round(pos)
        ok = np.all(np.isfinite(r), axis=1)
        ok[ok] = np.all((r[ok] >= 0) & (r[ok] < lab.shape[1:]), axis=1)
        want = np.zeros(len(pos), bool)
        want[ok] = lab[t][tuple(r[ok].astype(int).T)] > 0
        np.testing.assert_array_equal(got, want)
        assert 0 < want.sum() < len(pos)


@pytest.mark.parametrize("chunk,rechunk,kw", [
    (777, None, {}),
    ("auto", (5, 50, 70), {}),
    (10**6, None, {"fallback_radius_um": None, "keep_outside": False}),
])
def test_default_mode_identical_to_label_tracks(yeast, flow, tmp_path, chunk, rechunk, kw):
    ds = yeast if rechunk is None else yeast.rechunk(rechunk)
    want = dt.label_tracks(yeast, flow, start_frame=15, skip_coords=3, **kw)
    out = tmp_path / "out.zarr"
    n = dt.write_label_tracks(ds, flow, out, start_frame=15, skip_coords=3, chunk_size=chunk,
                              scheduler="threads", num_workers=2, **kw)
    assert n == len(want) > 10_000
    g, rows, props = _stored(out)
    _assert_same(want, rows, props)
    assert g["tracks"].attrs["columns"] == ["track_id", "t", "z", "y", "x"]
    assert g["tracks"].chunks == (min(n, 1 << 16), 5)
    assert sorted(g.keys()) == ["tracks", "tracks_properties"]   # the parts are gone


def test_compat_same_rows_as_label_tracks_and_nellie(yeast, yeast_reference, flow, tmp_path, monkeypatch):
    from dask_tracking.tracks import stream

    want = dt.label_tracks(yeast, flow, start_frame=15, compat="nellie")
    # one seed chunk: the very same arrays
    n = dt.write_label_tracks(yeast, flow, tmp_path / "a.zarr", start_frame=15, compat="nellie",
                              chunk_size=10**6, scheduler="threads")
    _, rows, props = _stored(tmp_path / "a.zarr")
    assert n == len(want)
    _assert_same(want, rows, props)
    # many chunks: the same rows; forward rows in the same order, backward rows sorted by track;
    # small output chunks, so that they start and end inside segments
    monkeypatch.setattr(stream, "OUTPUT_CHUNK_ROWS", 997)
    dt.write_label_tracks(yeast.rechunk((17, 64, 64)), flow, tmp_path / "b.zarr", start_frame=15,
                          compat="nellie", chunk_size=2500, scheduler="threads")
    g, rows, props = _stored(tmp_path / "b.zarr")
    assert rows.shape == want.data.shape and g["tracks"].chunks == (997, 5)
    assert g["tracks_properties/frame_num"].chunks == (997,)
    monkeypatch.undo()
    np.testing.assert_array_equal(_by_rows(rows), _by_rows(want.data))
    np.testing.assert_array_equal(props["frame_num"], rows[:, 1].astype(np.int64))
    split = int(np.flatnonzero(np.diff(want.data[:, 0]) < 0)[0]) + 1   # backward block: ids sorted
    assert 0 < split < len(rows) and np.all(want.data[:split, 1] <= 15)
    np.testing.assert_array_equal(rows[split:], want.data[split:])
    assert np.all(np.diff(rows[:split, 0]) >= 0)
    # Nellie's own rows (label 1), as a row set
    ref = yeast_reference["tracks_label1_start15"][...]
    dt.write_label_tracks(yeast, flow, tmp_path / "c.zarr", label=1, start_frame=15, compat="nellie",
                          chunk_size=500, scheduler="threads")
    _, rows, _ = _stored(tmp_path / "c.zarr")
    np.testing.assert_allclose(_by_rows(rows), _by_rows(np.asarray(ref, np.float64)), rtol=0, atol=1e-9)


def test_on_a_local_cluster_lazy(yeast, flow, tmp_path, local_cluster_client):
    want = dt.label_tracks(yeast, flow, start_frame=0, skip_coords=2)
    job = dt.write_label_tracks(yeast, flow, tmp_path / "out.zarr", name="tr", start_frame=0, skip_coords=2,
                                chunk_size=3000, compute=False)
    assert dask.is_dask_collection(job)
    assert not (tmp_path / "out.zarr").exists()          # nothing written before compute
    assert local_cluster_client.compute(job).result() == len(want)
    _, rows, props = _stored(tmp_path / "out.zarr", "tr")
    _assert_same(want, rows, props)


class _Largest(Callback):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.largest = max(self.largest, sizeof(result))


def test_no_task_returns_more_than_a_chunk(yeast, flow, tmp_path):
    """Tasks pass each other at most one step of one seed chunk (or a frame's label bits)."""
    with _Largest() as cb:
        n = dt.write_label_tracks(yeast, flow, tmp_path / "out.zarr", start_frame=15, chunk_size=2000,
                                  scheduler="threads")
    total = n * 5 * 8 + n * (8 + 8 + 1 + 1)          # rows and properties
    block = int(np.prod(yeast.labels.chunksize)) * yeast.labels.dtype.itemsize   # an input chunk read
    assert n > 100_000 and total > 3 * block
    assert 0 < cb.largest <= max(total // 20, block), (cb.largest, total)


class _MasksAlive(Callback):
    """The largest number of frame masks held by the scheduler at once."""

    def __init__(self):
        super().__init__()
        self.most = 0
        self.built = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        from dask_tracking.tracks.frame_mask import FrameMask

        self.built += isinstance(result, FrameMask)
        self.most = max(self.most, sum(isinstance(v, FrameMask) for v in list(state["cache"].values())))


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_frame_masks_are_built_one_step_ahead(yeast, flow, tmp_path, compat):
    """The walk holds about two frames' label bits whatever the number of frames it walks."""
    ds = yeast.rechunk((17, 96, 140))
    with _MasksAlive() as cb:
        dt.write_label_tracks(ds, flow, tmp_path / "out.zarr", start_frame=0, skip_coords=4, chunk_size=900,
                              compat=compat, scheduler="threads", num_workers=2)
    # frames 1..29 walked into, each mask built once (compat: and the start frame's, for its start rows)
    assert cb.built == 29 + (compat == "nellie")
    assert 1 <= cb.most <= 3, cb.most


def test_errors_before_work(yeast, flow, tmp_path):
    with pytest.raises(InputError, match="store must be a path to a zarr store"):
        dt.write_label_tracks(yeast, flow, None)
    with pytest.raises(InputError, match="does not exist"):
        dt.write_label_tracks(yeast, flow, tmp_path / "no" / "out.zarr")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        dt.write_label_tracks(yeast, flow, tmp_path / "file")
    with pytest.raises(InputError, match="name must be a non-empty array name"):
        dt.write_label_tracks(yeast, flow, tmp_path / "o.zarr", name="a/b")
    with pytest.raises(InputError, match=r"start_frame must be an integer in \[0, 29\], got 30"):
        dt.write_label_tracks(yeast, flow, tmp_path / "o.zarr", start_frame=30)
    with pytest.raises(InputError, match="chunk_size must be an integer"):
        dt.write_label_tracks(yeast, flow, tmp_path / "o.zarr", chunk_size="big")
    assert not (tmp_path / "o.zarr").exists()
    n = dt.write_label_tracks(yeast, flow, tmp_path / "o.zarr", label=10**6, scheduler="sync")
    _, rows, props = _stored(tmp_path / "o.zarr")
    assert n == 0 and rows.shape == (0, 5) and sorted(props) == ["end_reason", "frame_num", "label", "outside"]


def test_run_writes_the_streamed_tracks(tmp_path):
    """run(tracks=True) stores what label_tracks gives with the run's flow (2D movie, both modes)."""
    from dask_tracking.datasets import synthetic
    from dask_tracking.io.output import export

    movie = synthetic(2, 4, seed=1)
    for compat in (None, "nellie"):
        out = tmp_path / f"{compat}.zarr"
        with dask.config.set(scheduler="threads", num_workers=2):
            res = dt.run(movie, out, tracks=True, compat=compat, track_start_frame=1)
        g = zarr.open_group(str(out), mode="r")
        flow = FlowTable.from_zarr(g)
        kw = {"fallback_radius_um": "auto", "keep_outside": True} if compat is None else {}
        want = dt.label_tracks(movie, flow, start_frame=1, compat=compat, chunk_size=10**6, **kw)
        _, rows, props = _stored(out)
        assert res.tracks_rows == len(want) > 0 and g["tracks"].attrs["columns"] == ["track_id", "t", "y", "x"]
        _assert_same(want, rows, props)
        assert not any(k.startswith("_") for k in g.keys())
    files = export(out, "napari", tmp_path / "napari")
    assert any(str(f).endswith("tracks.npz") for f in files)


def test_auto_seed_chunks_follow_the_walk_length_with_a_floor(yeast, flow):
    """``chunk_size="auto"``: rows // (frames walked + 1) seeds per chunk, never below
    ``AUTO_MIN_SEEDS`` (a long walk would otherwise multiply the tasks)."""
    from dask_tracking.tracks.label import track_plan
    from dask_tracking.tracks.stream import AUTO_CHUNK_ROWS, AUTO_MIN_SEEDS

    frames = yeast.shape[0]
    kw = {"rows_per_chunk": AUTO_CHUNK_ROWS["default"], "min_seeds": AUTO_MIN_SEEDS}
    short = track_plan(yeast, flow, start_frame=0, end_frame=3, chunk_size="auto", **kw)
    assert short.attrs["chunk_size"] == AUTO_CHUNK_ROWS["default"] // 4 > AUTO_MIN_SEEDS
    long = track_plan(yeast, flow, start_frame=0, end_frame=frames, chunk_size="auto", **kw)
    assert AUTO_CHUNK_ROWS["default"] // frames < AUTO_MIN_SEEDS
    assert long.attrs["chunk_size"] == AUTO_MIN_SEEDS
    assert [len(c) for c in long.chunks[:-1]] == [AUTO_MIN_SEEDS] * (len(long.chunks) - 1)
    assert sum(map(len, long.chunks)) == long.attrs["n_seeds"] > AUTO_MIN_SEEDS
