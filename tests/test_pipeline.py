"""``dask_tracking.run`` end to end on synthetic movies: every output in the store, its attrs,
the same answer for any chunking, 2D, tracks, and the demo."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import dask_tracking as dt
from dask_tracking.cli import main
from dask_tracking.datasets import synthetic


@pytest.fixture(scope="module")
def movie():
    return synthetic(2, 4, seed=1)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, movie):
    import dask

    out = tmp_path_factory.mktemp("pipe") / "whole.zarr"
    with dask.config.set(scheduler="threads", num_workers=2):
        res = dt.run(movie, out, tracks=True, track_label=None)
    return out, res


def test_run_writes_every_output_with_attrs(whole, movie):
    out, res = whole
    g = zarr.open_group(str(out), mode="r")
    T = movie.n_frames
    assert res.n_frames == T and res.frames_computed == tuple(range(T)) and not res.resumed
    assert g.attrs["status"] == "complete" and g.attrs["compat"] == "fixed"
    assert g.attrs["version"] == dt.__version__
    assert g.attrs["input"]["source"].startswith("synthetic(")
    assert g.attrs["input"]["scale"] == movie.scale.as_dict()
    assert g.attrs["parameters"]["tracks"] is True
    assert g["flow"].shape == (res.flow_rows, 6)
    assert g["flow"].attrs["columns"] == ["t", "y", "x", "dy", "dx", "cost"]
    idx = np.asarray(g["flow_index"][...])
    assert idx[-1] == res.flow_rows and np.all(np.diff(idx) >= 0)
    flow = np.asarray(g["flow"][...])
    for t in range(T - 1):  # the index finds each pair's rows
        assert np.all(flow[idx[t]:idx[t + 1], 0] == t)
    for name in ("labels_reassigned", "branches_reassigned"):
        a = g[name]
        assert a.shape == movie.shape and a.dtype == np.int32 and a.attrs["axes"] == "TYX"
        assert a.chunks[0] == 1
    lab = np.asarray(g["labels_reassigned"][...])
    np.testing.assert_array_equal(lab[0], np.where(movie.labels[0].compute() > 0, movie.labels[0].compute(), 0))
    assert list(res.labelled_voxels) == [int((lab[t] > 0).sum()) for t in range(T)]
    assert res.labelled_voxels[-1] > 0.5 * res.labelled_voxels[0]
    for t in range(T - 1):
        m = np.asarray(g[f"voxel_matches/{t}"][...])
        assert m.ndim == 3 and m.shape[1:] == (2, 2) and len(m) > 0
        assert np.all(movie.labels[t + 1].compute()[tuple(m[:, 1].T.astype(np.int64))] > 0)
    tracks = np.asarray(g["tracks"][...])
    assert tracks.shape == (res.tracks_rows, 4) and res.tracks_rows > 0
    assert g["tracks"].attrs["columns"] == ["track_id", "t", "y", "x"]
    assert set(np.unique(tracks[:, 1]).astype(int)) == set(range(T))
    assert np.asarray(g["frames_done"][...]).all()


@pytest.mark.parametrize("chunks", [(50, 70), (37, 128)])
def test_same_output_for_any_chunking(tmp_path, whole, movie, chunks):
    import dask

    out = tmp_path / "chunked.zarr"
    with dask.config.set(scheduler="threads", num_workers=2):
        dt.run(movie.rechunk(chunks), out)
    a, b = zarr.open_group(str(whole[0]), mode="r"), zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(a["flow"][...], b["flow"][...])
    for name in ("labels_reassigned", "branches_reassigned"):
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    assert b["labels_reassigned"].chunks == (1,) + tuple(chunks)
    for t in range(movie.n_frames - 1):
        np.testing.assert_array_equal(a[f"voxel_matches/{t}"][...], b[f"voxel_matches/{t}"][...])


def test_overwrite_replaces_a_previous_output(tmp_path, movie):
    import dask

    out = tmp_path / "o.zarr"
    small = movie.isel(t=slice(0, 2))
    with dask.config.set(scheduler="sync"):
        dt.run(small, out)
        zarr.open_group(str(out), mode="r+")["labels_reassigned"][...] = -5
        res = dt.run(small, out, overwrite=True)
    lab = np.asarray(zarr.open_group(str(out), mode="r")["labels_reassigned"][...])
    assert lab.min() >= 0 and int((lab[0] > 0).sum()) == res.labelled_voxels[0]


def test_demo_reports_accuracy_and_draws_a_figure(tmp_path):
    res = CliRunner().invoke(main, ["demo", "-o", str(tmp_path), "--ndim", "2", "--frames", "4"])
    assert res.exit_code == 0, res.output
    for key in ("output:", "frames: 4", "markers:", "flow rows:", "labelled voxels", "flow accuracy:",
                "label accuracy:"):
        assert key in res.output
    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import re

    acc = float(re.search(r"label accuracy: ([0-9.]+)%", res.output).group(1))
    err = float(re.search(r"median end-point error ([0-9.]+) um", res.output).group(1))
    assert acc > 90
    assert err < 0.2
    assert int(re.search(r"flow rows: (\d+)", res.output).group(1)) > 0
    assert int(re.search(r"markers: (\d+)", res.output).group(1)) > 0


def test_cli_run_prepares_a_raw_movie_first(tmp_path):
    import tifffile

    raw = synthetic(2, 3, seed=2).raw.compute()
    src = tmp_path / "movie.ome.tif"
    tifffile.imwrite(src, raw, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.1,
                                                   "PhysicalSizeY": 0.1, "TimeIncrement": 1.0})
    out = tmp_path / "out.zarr"
    res = CliRunner().invoke(main, ["run", str(src), "-o", str(out), "--workers", "1",
                                    "--memory-limit", "2GiB", "--no-progress"])
    assert res.exit_code == 0, res.output
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["input"]["source"] == str(src) and g.attrs["input"]["shape"] == [3, 128, 128]
    assert g.attrs["input"]["scale"] == {"T": 1.0, "Y": 0.1, "X": 0.1}
    prepared = dt.prepare(str(src))
    lab0 = prepared.labels[0].compute()
    np.testing.assert_array_equal(g["labels_reassigned"][0], lab0)
    assert g["flow"].shape[0] > 0


def test_the_reassignment_chain_runs_once_per_frame(tmp_path, movie):
    """run() computes every reassignment task once: as many as the stage computed on its own
    (writing each frame's slice through its own optimised graph would rerun the chain up to
    every frame, ~T/2 times as many)."""
    import dask
    from dask.callbacks import Callback

    class Count(Callback):
        def __init__(self):
            super().__init__()
            self.n = 0

        def _posttask(self, key, result, dsk, state, id):
            name = key[0] if isinstance(key, tuple) else key
            self.n += str(name).startswith("reassign-")

    with dask.config.set(scheduler="threads", num_workers=2):
        flow = dt.estimate_flow(movie, refine=False, one_to_one=False).persist()
        alone = Count()
        with alone:
            res = dt.reassign_labels(movie, flow)
            dask.compute(res.labels, res.branches, res.matches)
        in_run = Count()
        with in_run:
            dt.run(movie, tmp_path / "once.zarr", flow=flow, accuracy=False)
    assert alone.n > 0
    assert in_run.n <= 1.2 * alone.n, (in_run.n, alone.n)
