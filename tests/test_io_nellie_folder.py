"""Nellie output folders: writing Nellie's files and reading them back lazily."""

from __future__ import annotations

import shutil

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.datasets import synthetic
from dask_tracking.io.nellie_folder import (NELLIE_DTYPES, find_nellie_folder, nellie_stems,
                                            read_nellie_folder, scale_from_stem,
                                            write_nellie_folder)


def _assert_same(a, b):
    assert a.shape == b.shape and a.axes == b.axes and a.scale == b.scale
    checks = {n: da.all(x == y) for (n, x), y in zip(a.arrays().items(), b.arrays().values())}
    bad = [n for n, ok in dask.compute(checks)[0].items() if not ok]
    assert not bad, f"arrays differ: {bad}"


def test_yeast_folder_opens_to_the_zarr_arrays(yeast, tmp_path):
    files = write_nellie_folder(yeast, tmp_path / "nellie_output", "yeast_3d_mitochondria")
    nec = tmp_path / "nellie_output" / "nellie_necessities"
    assert [f.name for f in files] == [
        "yeast_3d_mitochondria.ome.tif",
        "yeast_3d_mitochondria-im_preprocessed.ome.tif",
        "yeast_3d_mitochondria-im_distance.ome.tif",
        "yeast_3d_mitochondria-im_marker.ome.tif",
        "yeast_3d_mitochondria-im_instance_label.ome.tif",
        "yeast_3d_mitochondria-im_skel_relabelled.ome.tif",
    ]
    # Nellie's dtypes, uncompressed BigTIFF, TZYX, memmap-able
    for f, name in zip(files, ("raw", "preprocessed", "distance", "markers", "labels", "branches")):
        with tifffile.TiffFile(f) as tif:
            s = tif.series[0]
            assert tif.is_bigtiff and tif.is_ome and s.axes == "TZYX"
            assert s.dataoffset is not None and s.shape == (30, 17, 192, 279)
            want = "uint16" if name == "raw" else NELLIE_DTYPES[name]
            assert s.dtype == np.dtype(want)
    xml = tifffile.tiffcomment(files[1])
    for attr in ('PhysicalSizeX="0.0655"', 'PhysicalSizeZ="0.25"', 'TimeIncrement="4.535566806793213"'):
        assert attr in xml
    # every form of the path opens it
    for source in (tmp_path, tmp_path / "nellie_output", nec,
                   nec / "yeast_3d_mitochondria-im_marker.ome.tif"):
        back = dt.open_dataset(source)
        assert back.shape == (30, 17, 192, 279)
        assert back.labels.chunks[0] == (1,) * 30
    _assert_same(back, yeast)


def test_synthetic_2d_round_trip_on_a_cluster(tmp_path, local_cluster_client):
    ds = synthetic(2, 4, seed=3, dt=2.0)
    ds = ds.replace(raw=ds.raw.astype(np.float32))        # raw keeps its dtype
    write_nellie_folder(ds, tmp_path, stem="syn")
    back = read_nellie_folder(tmp_path / "nellie_necessities")
    assert back.axes == "TYX" and back.raw.dtype == np.float32
    assert back.scale.as_dict() == {"T": 2.0, "Y": 0.1, "X": 0.1}
    # the graph pickles without data: the workers read the files themselves
    a = local_cluster_client.compute(back.arrays(), sync=True)
    b = dask.compute(ds.arrays())[0]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_raw_beside_the_folder_and_scale_from_the_name(tmp_path):
    stem = "cell-TZYX-T1p5_Z0p3_Y0p07_X0p07-ch0-t0_to_2"
    assert scale_from_stem(stem) == {"T": 1.5, "Z": 0.3, "Y": 0.07, "X": 0.07}
    assert scale_from_stem("cell-TYX-TNone_Y0p1_X0p1-ch0-t0_to_2") == {"Y": 0.1, "X": 0.1}
    assert scale_from_stem("plain") == {}
    ds = synthetic(3, 3, shape=(8, 48, 48), n_objects=1, seed=2)
    write_nellie_folder(ds, tmp_path, stem)
    nec = tmp_path / "nellie_necessities"
    # raw moved to the output folder (the parent of nellie_necessities) is found there
    shutil.move(nec / f"{stem}.ome.tif", tmp_path / f"{stem}.ome.tif")
    # files without OME sizes: the scale comes from the detailed name
    for f in nec.glob("*.ome.tif"):
        data = tifffile.imread(f)
        tifffile.imwrite(f, data, ome=True, bigtiff=True, metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / f"{stem}.ome.tif", ds.raw.compute(), ome=True,
                     metadata={"axes": "TZYX"})
    back = dt.open_dataset(nec)
    assert back.scale.as_dict() == {"T": 1.5, "Z": 0.3, "Y": 0.07, "X": 0.07}
    np.testing.assert_array_equal(back.raw.compute(), ds.raw.compute())
    # an explicit scale wins
    assert dt.open_dataset(nec, scale=(2, 1, 1, 1)).scale.t == 2.0


def test_find_and_stems(tmp_path):
    assert find_nellie_folder(tmp_path) is None
    ds = synthetic(2, 2, n_objects=1, shape=(48, 48))
    write_nellie_folder(ds, tmp_path / "nellie_output", "a")
    write_nellie_folder(ds, tmp_path / "nellie_output", "b")
    nec = tmp_path / "nellie_output" / "nellie_necessities"
    assert find_nellie_folder(tmp_path) == nec
    assert nellie_stems(nec) == ["a", "b"]
    assert read_nellie_folder(nec, stem="b").source.endswith("/b")
    (nec / "b-im_marker.ome.tif").unlink()             # an incomplete set is not a set
    assert nellie_stems(nec) == ["a"]


def test_errors(tmp_path):
    ds = synthetic(2, 2, n_objects=1, shape=(48, 48))
    with pytest.raises(InputError, match=r"is not a Nellie output folder: no nellie_necessities/<stem>"
                                         r"-im_preprocessed.ome.tif"):
        read_nellie_folder(tmp_path)
    write_nellie_folder(ds, tmp_path, "a")
    with pytest.raises(InputError, match=r"'.*a.ome.tif' exists; pass overwrite=True to replace stem 'a'"):
        write_nellie_folder(ds, tmp_path, "a")
    write_nellie_folder(ds, tmp_path, "a", overwrite=True)
    with pytest.raises(InputError, match=r"stem must be a non-empty file name without path separators"):
        write_nellie_folder(ds, tmp_path, "x/y")
    with pytest.raises(InputError, match=r"ds must be a TrackingDataset, got dict"):
        write_nellie_folder({}, tmp_path, "c")
    nec = tmp_path / "nellie_necessities"
    with pytest.raises(InputError, match=r"stem 'zz' is not a complete input set in .*; allowed: \['a'\]"):
        read_nellie_folder(nec, stem="zz")
    write_nellie_folder(ds, tmp_path, "b")
    with pytest.raises(InputError, match=r"holds 2 input sets; pass stem= one of \['a', 'b'\]"):
        read_nellie_folder(nec)
    (nec / "b.ome.tif").unlink()
    with pytest.raises(InputError, match=r"has no raw volume for stem 'b': looked for .*b.ome.tif"):
        read_nellie_folder(nec, stem="b")
    # a file of another shape
    tifffile.imwrite(nec / "a-im_distance.ome.tif", np.zeros((2, 40, 48), np.float32), ome=True,
                     bigtiff=True, metadata={"axes": "TYX"})
    with pytest.raises(InputError, match=r"Nellie file 'a-im_distance.ome.tif' has shape \(2, 40, 48\) "
                                         r"\(axes 'TYX'\) but 'a-im_instance_label.ome.tif' has"):
        read_nellie_folder(nec, stem="a")
    # no scale anywhere
    other = tmp_path / "noscale"
    write_nellie_folder(ds, other, "plain")
    for f in (other / "nellie_necessities").glob("*.ome.tif"):
        tifffile.imwrite(f, tifffile.imread(f), ome=True, bigtiff=True, metadata={"axes": "TYX"})
    with pytest.raises(InputError, match=r"gives no T, Y, X size \(OME PhysicalSize\*/TimeIncrement or "
                                         r"the file name\); pass scale="):
        dt.open_dataset(other)
    assert dt.open_dataset(other, scale={"T": 1, "Y": 0.1, "X": 0.1}).shape == (2, 48, 48)
