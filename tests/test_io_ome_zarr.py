"""OME-Zarr (NGFF 0.5) collections: six OME-Zarr images in one zarr v3 group."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import zarr

import dask_tracking as dt
from dask_tracking.dataset import VOLUMES, InputError
from dask_tracking.datasets import synthetic
from dask_tracking.io.ome_zarr import is_ome_zarr_collection, read_ome_zarr, write_ome_zarr


@pytest.fixture(scope="module")
def small():
    return synthetic(3, 3, shape=(8, 48, 64), n_objects=2, seed=5, dt=1.5, chunks=(4, 48, 32))


def test_write_then_open_round_trip(small, tmp_path):
    path = tmp_path / "movie.ome.zarr"
    g = write_ome_zarr(small, path)
    assert is_ome_zarr_collection(g)
    ms = dict(g["labels"].attrs)["ome"]
    assert ms["version"] == "0.5"
    assert [a["name"] for a in ms["multiscales"][0]["axes"]] == ["t", "z", "y", "x"]
    assert ms["multiscales"][0]["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.5, 0.25, 0.1, 0.1]}]
    assert g["raw/0"].chunks == (1, 4, 48, 32)
    back = dt.open_dataset(path)
    assert back.scale == small.scale and back.axes == "TZYX"
    assert back.labels.chunks == small.labels.chunks
    a, b = dask.compute(small.arrays(), back.arrays())
    for name in VOLUMES:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == b[name].dtype


def _image(parent, name, data, axes, scale, *, v04=False, units=None):
    img = parent.create_group(name)
    units = units or {}
    ax = [{"name": a, "type": "time" if a == "t" else "channel" if a == "c" else "space",
           **({"unit": units[a]} if a in units else {})} for a in axes]
    ms = [{"axes": ax, "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": scale}]}]}]
    img.attrs.update({"multiscales": ms} if v04 else {"ome": {"version": "0.5", "multiscales": ms}})
    img.create_array("0", data=data)
    return img


def _collection(path, arrays, axes, scale, **kw):
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name in VOLUMES:
        _image(g, name, arrays[name], axes, scale, **kw)
    return g


def _arrays(shape):
    rng = np.random.default_rng(0)
    return {"raw": rng.integers(0, 100, shape).astype(np.uint16),
            "preprocessed": rng.random(shape, dtype=np.float32),
            "distance": rng.random(shape, dtype=np.float32),
            "markers": (rng.random(shape) > 0.9).astype(np.uint8),
            "labels": rng.integers(0, 4, shape).astype(np.int32),
            "branches": rng.integers(0, 4, shape).astype(np.uint32)}


def test_units_singleton_axes_and_v04_attributes(tmp_path):
    arr = _arrays((3, 1, 1, 10, 12))                    # t, c, z, y, x with c = z = 1
    units = {"t": "millisecond", "z": "micrometer", "y": "nanometer", "x": "nanometer"}
    _collection(tmp_path / "a.zarr", arr, "tczyx", [250.0, 1.0, 0.5, 80.0, 80.0], units=units)
    ds = dt.open_dataset(tmp_path / "a.zarr")
    assert ds.axes == "TYX" and ds.shape == (3, 10, 12)
    assert ds.scale.as_dict() == pytest.approx({"T": 0.25, "Y": 0.08, "X": 0.08})
    np.testing.assert_array_equal(ds.labels.compute(), arr["labels"][:, 0, 0])
    # NGFF 0.4 style (multiscales at the top of the attributes), no t axis: T of length 1
    arr = _arrays((4, 10, 12))
    _collection(tmp_path / "b.zarr", arr, "zyx", [0.3, 0.1, 0.1], v04=True)
    with pytest.raises(InputError, match=r"the movie has 1 frame\(s\) along T"):
        dt.open_dataset(tmp_path / "b.zarr", scale={"T": 1, "Z": 0.3, "Y": 0.1, "X": 0.1})


def test_errors(tmp_path):
    arr = _arrays((2, 3, 10, 12))
    g = _collection(tmp_path / "c.zarr", arr, "tzyx", [1.0, 0.3, 0.1, 0.1])
    assert is_ome_zarr_collection(g)
    # time given no scale transformation unit problems
    _collection(tmp_path / "u.zarr", arr, "tzyx", [1.0, 0.3, 0.1, 0.1], units={"x": "furlong"})
    with pytest.raises(InputError, match=r"OME-Zarr image '.*u.zarr'/raw: space unit 'furlong' is not "
                                         r"supported; allowed: .*micrometer"):
        dt.open_dataset(tmp_path / "u.zarr")
    _collection(tmp_path / "tu.zarr", arr, "tzyx", [1.0, 0.3, 0.1, 0.1], units={"t": "fortnight"})
    with pytest.raises(InputError, match=r"time unit 'fortnight' is not supported"):
        dt.open_dataset(tmp_path / "tu.zarr")
    # a channel axis of size > 1
    g = zarr.open_group(str(tmp_path / "ch.zarr"), mode="w", zarr_format=3)
    for name in VOLUMES:
        _image(g, name, np.stack([arr[name]] * 2, axis=1), "tczyx", [1.0, 1.0, 0.3, 0.1, 0.1])
    with pytest.raises(InputError, match=r"/raw: axis 'c' has size 2; allowed: t, z, y, x"):
        dt.open_dataset(tmp_path / "ch.zarr")
    # images that disagree on the scale
    g = _collection(tmp_path / "m.zarr", arr, "tzyx", [1.0, 0.3, 0.1, 0.1])
    del g["distance"]
    _image(g, "distance", arr["distance"], "tzyx", [1.0, 0.3, 0.2, 0.1])
    with pytest.raises(InputError, match=r"OME-Zarr image 'distance' has scale .* but 'labels' has "
                                         r".*; all six must agree"):
        dt.open_dataset(tmp_path / "m.zarr")
    # a missing image: neither our layout nor a collection
    del g["markers"]
    assert not is_ome_zarr_collection(g)
    with pytest.raises(InputError, match=r"holds neither the six arrays .* nor six OME-Zarr images"):
        dt.open_dataset(tmp_path / "m.zarr")
    with pytest.raises(InputError, match=r"lacks OME-Zarr images for: markers; it must hold"):
        read_ome_zarr(tmp_path / "m.zarr")
    # no time scale at all
    g = zarr.open_group(str(tmp_path / "nt.zarr"), mode="w", zarr_format=3)
    for name in VOLUMES:
        _image(g, name, arr[name][0], "zyx", [0.3, 0.1, 0.1])
    with pytest.raises(InputError, match=r"gives no scale for T; pass scale="):
        read_ome_zarr(tmp_path / "nt.zarr")
    # writer refuses to overwrite and non-datasets
    with pytest.raises(InputError, match=r"'.*c.zarr' exists; pass overwrite=True"):
        write_ome_zarr(synthetic(2, 2, n_objects=1, shape=(48, 48)), tmp_path / "c.zarr")
    with pytest.raises(InputError, match=r"ds must be a TrackingDataset, got int"):
        write_ome_zarr(3, tmp_path / "new.zarr")
