"""Raw movie readers: OME-TIFF, ImageJ TIFF, OME-Zarr (v0.4 and v0.5), arrays; metadata and errors."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from dask_tracking.dataset import InputError, Scale
from dask_tracking.io.raw import as_movie, is_raw_source, open_raw


@pytest.fixture()
def movie():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(3, 4, 12, 10), dtype=np.uint16)


def test_ome_tiff_lazy_with_scale_from_metadata(tmp_path, movie):
    p = tmp_path / "m.ome.tif"
    tifffile.imwrite(p, movie, metadata={"axes": "TZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.11,
                                         "PhysicalSizeZ": 300.0, "PhysicalSizeZUnit": "nm",
                                         "TimeIncrement": 1500.0, "TimeIncrementUnit": "ms"})
    arr, sc, axes = open_raw(p)
    assert isinstance(arr, da.Array) and axes == "TZYX" and arr.chunks[0] == (1, 1, 1)
    assert sc == Scale(t=1.5, z=0.3, y=0.11, x=0.1)
    np.testing.assert_array_equal(arr[1].compute(), movie[1])
    np.testing.assert_array_equal(arr.compute(), movie)
    assert is_raw_source(p)


def test_ome_tiff_channels_and_overrides(tmp_path, movie):
    two = np.stack([movie, movie + 1], axis=1)  # T C Z Y X
    p = tmp_path / "c.ome.tif"
    tifffile.imwrite(p, two, metadata={"axes": "TCZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1,
                                       "PhysicalSizeZ": 0.3, "TimeIncrement": 2.0})
    with pytest.raises(InputError, match=r"has 2 channels .*pass channel= one of 0..1"):
        open_raw(p)
    arr, sc, axes = open_raw(p, channel=1)
    np.testing.assert_array_equal(arr.compute(), movie + 1)
    arr, sc, _ = open_raw(p, {"T": 9, "Z": 1, "Y": 2, "X": 3}, channel=0)
    assert sc == Scale(t=9, z=1, y=2, x=3)


def test_tiff_without_scale_or_time_axis(tmp_path, movie):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, movie[0], photometric="minisblack")  # a plain stack, no metadata
    with pytest.raises(InputError, match=r"has an axis 'Q' of size 4 .*pass axes= naming every axis"):
        open_raw(p, {"T": 1, "Z": 1, "Y": 1, "X": 1})
    with pytest.raises(InputError, match="no time axis"):
        open_raw(p, {"T": 1, "Z": 1, "Y": 1, "X": 1}, axes="ZYX")
    arr, sc, axes = open_raw(p, {"T": 1, "Y": 1, "X": 1}, axes="TYX")
    assert axes == "TYX" and sc.z is None
    np.testing.assert_array_equal(arr.compute(), movie[0])
    q = tmp_path / "noscale.ome.tif"
    tifffile.imwrite(q, movie, metadata={"axes": "TZYX"})
    with pytest.raises(InputError, match=r"has no T, Z, Y, X size in its metadata .*pass scale=\{'T'"):
        open_raw(q)
    arr, sc, axes = open_raw(q, (1, 2, 3, 4))
    assert sc == Scale(t=1, z=2, y=3, x=4) and axes == "TZYX"


def test_imagej_tiff_scale(tmp_path, movie):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, movie, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "TZYX", "spacing": 0.5, "unit": "um", "finterval": 3.0})
    arr, sc, axes = open_raw(p)
    assert axes == "TZYX" and sc == Scale(t=3.0, z=0.5, y=0.2, x=0.2)
    np.testing.assert_array_equal(arr.compute(), movie)


@pytest.mark.parametrize("fmt", [2, 3])
def test_ome_zarr_image(tmp_path, movie, fmt):
    p = tmp_path / "m.ome.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=fmt)
    g.create_array("0", data=movie, chunks=(1, 4, 12, 10))
    ms = [{"version": "0.4" if fmt == 2 else "0.5",
           "axes": [{"name": "t", "type": "time", "unit": "millisecond"},
                    {"name": "z", "type": "space", "unit": "micrometer"},
                    {"name": "y", "type": "space", "unit": "nanometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"}],
           "datasets": [{"path": "0", "coordinateTransformations": [
               {"type": "scale", "scale": [250.0, 0.3, 100.0, 0.1]}]}]}]
    if fmt == 2:
        g.attrs["multiscales"] = ms
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    arr, sc, axes = open_raw(p)
    assert axes == "TZYX" and sc == Scale(t=0.25, z=0.3, y=0.1, x=0.1)
    np.testing.assert_array_equal(arr.compute(), movie)
    assert is_raw_source(p)


def test_tracking_dataset_is_not_raw(yeast_path, tmp_path):
    assert not is_raw_source(yeast_path)
    assert not is_raw_source(tmp_path)
    assert is_raw_source(tmp_path / "future.ome.tif") and is_raw_source("x.nd2")


def test_arrays_need_scale_and_a_time_axis(movie):
    with pytest.raises(InputError, match=r"raw arrays carry no scale: pass scale=\{'T'"):
        as_movie(movie, None)
    with pytest.raises(InputError, match="raw has 5 dimensions"):
        as_movie(movie[None], {"T": 1, "Z": 1, "Y": 1, "X": 1})
    with pytest.raises(InputError, match="no time axis"):
        as_movie(movie[0], {"T": 1, "Z": 1, "Y": 1, "X": 1}, axes="ZYX")
    arr, sc, axes = as_movie(np.moveaxis(movie, 0, 1), (1, 2, 3, 4), axes="ZTYX")
    assert axes == "TZYX" and arr.shape == movie.shape
    np.testing.assert_array_equal(arr.compute(), movie)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_raw(tmp_path / "nope.tif")
    f = tmp_path / "movie.avi"
    f.write_bytes(b"0")
    with pytest.raises(InputError, match="unknown format; allowed: OME-TIFF"):
        open_raw(f)
