"""Exports of a run's output store: CTC (validated by py-ctcmetrics), Nellie's files, GEFF, napari.

The store is built from Nellie's own reference outputs on the first frames of the yeast sample
(labels/branches reassigned, flow), so the exporters are checked on real tracking results.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.io import output as out_store
from dask_tracking.io.export_ctc import ctc_tracks

N = 5  # frames used


@pytest.fixture(scope="module")
def store(tmp_path_factory, yeast, yeast_reference):
    from dask_tracking.pipeline import _attrs, _parameters

    import dask_tracking as dt

    root = tmp_path_factory.mktemp("export")
    dt.write_tracking_zarr(yeast.isel(t=slice(0, N)), root / "nellie_yeast.zarr")
    ds = dt.open_dataset(root / "nellie_yeast.zarr")  # the run's input, still readable at export
    path = root / "out.zarr"
    g = out_store.create_output(path, ds, _attrs(ds, _parameters(ds, "nellie", 1.0, True, None, 0, "auto")))
    g["labels_reassigned"][...] = yeast_reference["labels_reassigned"][:N]
    g["branches_reassigned"][...] = yeast_reference["branches_reassigned"][:N]
    flow = np.asarray(yeast_reference["flow_vector_array"][...])
    FlowTable.from_numpy(flow[flow[:, 0] < N - 1], n_frames=N).to_zarr(g, "flow")
    lab = np.asarray(yeast_reference["labels_reassigned"][:N])
    for t in range(N - 1):  # matches: voxels labelled in both frames, source == target
        both = np.argwhere((lab[t] > 0) & (lab[t + 1] > 0))
        out_store.write_rows(str(path), f"voxel_matches/{t}", np.stack([both, both], axis=1))
    tracks = np.asarray(yeast_reference["tracks_label1_start0"][...])
    out_store.write_rows(str(path), "tracks", tracks[tracks[:, 1] < N],
                         {"columns": ["track_id", "t", "z", "y", "x"]})
    g.attrs.update({"status": "complete", "flow_done": True})
    return path


def test_ctc_tracks_splits_gaps_into_child_tracks():
    present = [np.array([1, 2]), np.array([1]), np.array([1, 2]), np.array([2])]
    table, relabel = ctc_tracks(present)
    rows = {tuple(r) for r in table.tolist()}
    assert rows == {(1, 0, 2, 0), (2, 0, 0, 0), (3, 2, 3, 2)}
    assert relabel[2] == {1: 1, 2: 3} and relabel[3] == {2: 3}


def test_ctc_export_passes_the_ctc_validator(store, tmp_path, yeast_reference):
    import tifffile
    from ctc_metrics.scripts.validate import validate_sequence

    paths = out_store.export(store, "ctc", tmp_path / "01_RES")
    masks = sorted(p for p in paths if p.suffix == ".tif")
    assert [p.name for p in masks] == [f"mask{t:03d}.tif" for t in range(N)]
    assert validate_sequence(str(tmp_path / "01_RES"), threads=1)["Valid"] == 1
    ref = np.asarray(yeast_reference["labels_reassigned"][:N])
    table = np.loadtxt(tmp_path / "01_RES" / "res_track.txt", dtype=np.int64, ndmin=2)
    for t, p in enumerate(masks):
        m = tifffile.imread(p)
        assert m.dtype == np.uint16 and m.shape == ref.shape[1:]
        np.testing.assert_array_equal(m > 0, ref[t] > 0)
        alive = set(table[(table[:, 1] <= t) & (table[:, 2] >= t), 0].tolist())
        assert set(np.unique(m[m > 0]).tolist()) == alive


def test_nellie_export_has_nellie_names_and_dtypes(store, tmp_path, yeast_reference):
    import tifffile

    paths = out_store.export(store, "nellie", tmp_path / "nellie_output")
    folder = tmp_path / "nellie_output" / "nellie_necessities"
    names = {p.name for p in paths if p.parent == folder}
    stem = "nellie_yeast"
    for key in ("flow_vector_array.npy", "im_obj_label_reassigned.ome.tif",
                "im_branch_label_reassigned.ome.tif", "voxel_matches.npy"):
        assert f"{stem}-{key}" in names
    flow = np.load(folder / f"{stem}-flow_vector_array.npy")
    ref = np.asarray(yeast_reference["flow_vector_array"][...])
    assert flow.dtype == np.float64 and flow.shape[1] == 8
    np.testing.assert_array_equal(flow, ref[ref[:, 0] < N - 1])
    for key, arr in (("im_obj_label_reassigned", "labels_reassigned"),
                     ("im_branch_label_reassigned", "branches_reassigned")):
        with tifffile.TiffFile(folder / f"{stem}-{key}.ome.tif") as tif:
            assert tif.is_ome
            assert tif.series[0].axes == "TZYX"
            data = tif.asarray()
            xml = tif.ome_metadata
        assert data.dtype == np.int32
        np.testing.assert_array_equal(data, yeast_reference[arr][:N])
        assert 'PhysicalSizeX="0.0655"' in xml and 'PhysicalSizeZ="0.25"' in xml
        assert "TimeIncrement=" in xml
    vm = np.load(folder / f"{stem}-voxel_matches.npy", allow_pickle=True)
    assert vm.dtype == object and vm.shape == (N - 1, 2)
    lab = np.asarray(yeast_reference["labels_reassigned"][:N])
    for k in range(N - 1):
        assert vm[k][0].dtype == np.uint16 and vm[k][0].shape[1] == 3
        np.testing.assert_array_equal(vm[k][1], np.argwhere((lab[k] > 0) & (lab[k + 1] > 0)))
    # the six inputs beside them: the folder reads back as a Nellie output folder
    for key in ("im_preprocessed", "im_instance_label", "im_skel_relabelled", "im_marker", "im_distance"):
        assert f"{stem}-{key}.ome.tif" in names
    import dask_tracking as dt

    back = dt.open_dataset(tmp_path / "nellie_output")
    assert back.shape == (N, 17, 192, 279) and back.scale.z == 0.25
    np.testing.assert_array_equal(back.labels.compute(), dt.open_dataset(store.parent / "nellie_yeast.zarr").labels.compute())


def test_geff_export_is_a_valid_geff_graph(store, tmp_path, yeast_reference):
    import zarr
    from geff_spec import GeffMetadata
    from scipy import ndimage

    (path,) = out_store.export(store, "geff", tmp_path / "g")
    g = zarr.open_group(str(path), mode="r")
    meta = GeffMetadata.model_validate(dict(g.attrs)["geff"])
    assert meta.directed and [a.name for a in meta.axes] == ["t", "z", "y", "x"]
    t = np.asarray(g["nodes/props/t/values"][...])
    lab = np.asarray(g["nodes/props/label/values"][...])
    ids = np.asarray(g["nodes/ids"][...])
    ref = np.asarray(yeast_reference["labels_reassigned"][:N])
    for k in range(N):
        u = np.unique(ref[k])
        np.testing.assert_array_equal(np.sort(lab[t == k]), u[u > 0])
    edges = np.asarray(g["edges/ids"][...])
    pos = {int(i): n for n, i in enumerate(ids)}
    src, dst = [pos[int(a)] for a in edges[:, 0]], [pos[int(b)] for b in edges[:, 1]]
    np.testing.assert_array_equal(lab[src], lab[dst])
    np.testing.assert_array_equal(t[dst], t[src] + 1)
    expected_edges = sum(len(np.intersect1d(np.unique(ref[k])[1:], np.unique(ref[k + 1])[1:]))
                         for k in range(N - 1))
    assert len(edges) == expected_edges
    first = np.flatnonzero((t == 2))[0]
    c = ndimage.center_of_mass(ref[2] == lab[first])
    got = [g[f"nodes/props/{a}/values"][first] for a in "zyx"]
    np.testing.assert_allclose(got, c, atol=1e-9)


def test_napari_export_writes_the_tracks_layer(store, tmp_path, yeast_reference):
    from dask_tracking.io.tracks_export import read_tracks

    paths = out_store.export(store, "napari", tmp_path / "napari")
    assert [p.name for p in paths] == ["tracks.npz", "tracks.csv"]
    ref = np.asarray(yeast_reference["tracks_label1_start0"][...])
    for p in paths:
        tr = read_tracks(p)
        np.testing.assert_array_equal(tr.data, ref[ref[:, 1] < N])


def test_export_refuses_to_overwrite_and_bad_stores(store, tmp_path):
    d = tmp_path / "ctc"
    out_store.export(store, "ctc", d)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    with pytest.raises(InputError, match="already holds CTC files"):
        out_store.export(store, "ctc", d)
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before
    with pytest.raises(InputError, match="to must be one of nellie, ctc, napari, geff"):
        out_store.export(store, "tiff", d)
    with pytest.raises(InputError, match="does not exist"):
        out_store.export(tmp_path / "missing.zarr", "ctc", d)
    import zarr

    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w")
    with pytest.raises(InputError, match="not a dask-tracking output store"):
        out_store.export(other, "ctc", d)


def test_export_command_line(store, tmp_path):
    from click.testing import CliRunner

    from dask_tracking.cli import main

    res = CliRunner().invoke(main, ["export", str(store), "--to", "geff", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("tracks.geff")
    res = CliRunner().invoke(main, ["export", str(store), "--to", "geff", str(tmp_path / "g")])
    assert res.exit_code == 2 and "already exists; pass overwrite=True (--overwrite)" in res.output
    res = CliRunner().invoke(main, ["export", str(store), "--to", "geff", str(tmp_path / "g"), "--overwrite"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["export", str(tmp_path / "nothing.zarr"), "--to", "ctc", str(tmp_path / "c")])
    assert res.exit_code == 2 and "does not exist" in res.output
