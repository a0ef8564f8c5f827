"""TrackingDataset, Scale, validate and open_dataset: every validation message, and laziness."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest
import zarr
from dask.callbacks import Callback

import dask_tracking as dt
from dask_tracking.dataset import VOLUMES, InputError, Scale, TrackingDataset, validate
from dask_tracking.io.open import open_dataset
from dask_tracking.io.zarr_layout import read_tracking_zarr, write_tracking_zarr

DTYPES = {"raw": np.uint16, "preprocessed": np.float32, "distance": np.float32,
          "markers": np.uint8, "labels": np.int32, "branches": np.uint32}
SCALE3 = {"T": 2.0, "Z": 0.3, "Y": 0.1, "X": 0.1}


def _arrays(shape=(3, 4, 10, 12), **override):
    rng = np.random.default_rng(1)
    out = {n: (rng.random(shape) * 5).astype(d) for n, d in DTYPES.items()}
    out.update(override)
    return out


def _dataset(**override):
    """A dataset built directly (no validation), with some fields replaced."""
    arrays = {n: da.from_array(a, chunks=(1,) + a.shape[1:]) for n, a in _arrays().items()}
    fields = dict(arrays, scale=Scale(t=2.0, z=0.3, y=0.1, x=0.1), axes="TZYX")
    fields.update(override)
    return TrackingDataset(**fields)


class _Count(Callback):
    def __init__(self):
        super().__init__()
        self.n = 0

    def _pretask(self, key, dsk, state):
        self.n += 1


# ------------------------------------------------------------------ Scale
def test_scale_forms():
    assert Scale.coerce({"t": 2, "z": 0.3, "y": 0.1, "x": 0.1}) == Scale(t=2, z=0.3, y=0.1, x=0.1)
    assert Scale.coerce((2, 0.1, 0.1)).as_dict() == {"T": 2.0, "Y": 0.1, "X": 0.1}
    assert Scale.coerce([2, 0.3, 0.1, 0.1]).spatial == (0.3, 0.1, 0.1)
    assert Scale.coerce({"T": 1, "Y": 0.2, "X": 0.2}).ndim == 2
    assert Scale.coerce({"T": 1, "Y": 0.2, "X": 0.2, "Z": 0.5}, "TYX").z is None
    s = Scale(1, 0.1, 0.1)
    assert Scale.coerce(s) is s


@pytest.mark.parametrize("scale, axes, match", [
    (None, None, r"scale is required: pass scale=\{'T': seconds, 'Z': um, 'Y': um, 'X': um\} "
                 r"\(leave out 'Z' for 2D data\)"),
    ({"T": 1, "Q": 2, "Y": 1, "X": 1}, None, r"scale has unknown axes \['Q'\]; allowed: T, Z, Y, X"),
    ({"T": 1, "Y": 0.1, "X": 0.1}, "TZYX", r"scale is missing Z \(got \{'T': 1, 'Y': 0.1, 'X': 0.1\}\); "
                                          r"give every axis of TZYX: T in s, Z/Y/X in um"),
    ({"T": 1, "Z": None, "Y": 0.1, "X": 0.1}, None, r"scale is missing Z"),
    ({"Y": 0.1, "X": 0.1}, "TYX", r"scale is missing T \(got"),
    (5, None, r"scale must be a Scale, a mapping or a sequence, got int"),
    ((1, 2), None, r"scale sequence must have 4 \(T, Z, Y, X\) or 3 \(T, Y, X\) values, got 2: \[1, 2\]"),
    ((1, "a", 0.1), None, r"scale 'Y' must be a positive number, got 'a' \(str\)"),
    ((1, None, 0.1), None, r"scale 'Y' must be a positive number, got None \(NoneType\)"),
    ((True, 0.1, 0.1), None, r"scale 'T' must be a positive number, got True \(bool\)"),
    ((0, 0.1, 0.1), None, r"scale 'T' must be a positive finite number, got 0"),
    ((1, 0.1, -0.1), None, r"scale 'X' must be a positive finite number, got -0.1"),
    ((1, 0.1, float("inf")), None, r"scale 'X' must be a positive finite number, got inf"),
    ((1, float("nan"), 0.1, 0.1), None, r"scale 'Z' must be a positive finite number, got nan"),
])
def test_scale_errors(scale, axes, match):
    with pytest.raises(InputError, match=match):
        Scale.coerce(scale, axes)


# ------------------------------------------------------------ from_arrays
def test_from_arrays_wraps_numpy_one_frame_per_chunk():
    ds = TrackingDataset.from_arrays(_arrays(), SCALE3, source="test")
    assert ds.axes == "TZYX" and ds.shape == (3, 4, 10, 12) and ds.n_frames == 3
    assert all(a.chunks[0] == (1, 1, 1) for a in ds.arrays().values())
    assert ds.spacing == (0.3, 0.1, 0.1) and ds.dt == 2.0
    ds2 = TrackingDataset.from_arrays(scale=SCALE3, spatial_chunks=(2, 5, 5),
                                      **{n: da.from_array(a, chunks=(3, 4, 10, 12))
                                         for n, a in _arrays().items()})
    assert ds2.labels.chunks == ((1, 1, 1), (2, 2), (5, 5), (5, 5, 2))
    np.testing.assert_array_equal(ds2.labels.compute(), _arrays()["labels"])
    assert "scale: T 2 s, Z 0.3 um, Y 0.1 um, X 0.1 um" in ds.summary()
    assert ds.isel(t=slice(0, 2)).n_frames == 2
    assert ds.rechunk(-1).labels.chunks[1:] == ((4,), (10,), (12,))


@pytest.mark.parametrize("change, kwargs, match", [
    ({"raw": None}, {}, r"missing input arrays: raw; a dataset needs all of raw, preprocessed, "
                        r"distance, markers, labels, branches"),
    ({"flow": np.zeros((3, 4, 10, 12))}, {}, r"unknown input arrays \['flow'\]; allowed: raw, "),
    ({"labels": np.zeros((10, 12), np.int32)}, {}, r"labels has 2 dimensions; allowed: 4 \(TZYX\) "
                                                   r"or 3 \(TYX\)"),
    ({}, {"axes": "ZYX"}, r"axes must be 'TZYX' or 'TYX', got 'ZYX'"),
    ({}, {"scale": None}, r"scale is required"),
    ({"distance": np.zeros((3, 4, 10, 11), np.float32)}, {},
     r"input array 'distance' has shape \(3, 4, 10, 11\), but raw has \(3, 4, 10, 12\); all six "
     r"arrays must have the same shape"),
    ({"markers": np.zeros((3, 10, 12), np.uint8)}, {},
     r"input array 'markers' has 3 dimensions \(3, 10, 12\); axes 'TZYX' need 4"),
    ({"labels": np.zeros((3, 4, 10, 12), np.float32)}, {},
     r"input array 'labels' has dtype float32; allowed: an integer dtype \(ids\)"),
    ({"branches": np.zeros((3, 4, 10, 12), np.float64)}, {},
     r"input array 'branches' has dtype float64; allowed: an integer dtype"),
    ({"distance": np.zeros((3, 4, 10, 12), np.int16)}, {},
     r"input array 'distance' has dtype int16; allowed: a float or unsigned integer dtype"),
    ({"preprocessed": np.zeros((3, 4, 10, 12), bool)}, {},
     r"input array 'preprocessed' has dtype bool; allowed: a numeric dtype"),
    ({}, {"scale": {"T": 1, "Y": 0.1, "X": 0.1}}, r"scale is missing Z"),
    ({n: np.zeros((1, 4, 10, 12), d) for n, d in DTYPES.items()}, {},
     r"the movie has 1 frame\(s\) along T \(shape \(1, 4, 10, 12\)\); tracking needs at least 2 frames"),
])
def test_from_arrays_errors(change, kwargs, match):
    arrays = _arrays()
    arrays.update(change)
    kw = {"scale": SCALE3}
    kw.update(kwargs)
    with pytest.raises(InputError, match=match):
        TrackingDataset.from_arrays(arrays, **kw)


def test_rechunk_error():
    ds = TrackingDataset.from_arrays(_arrays(), SCALE3)
    with pytest.raises(InputError, match=r"spatial_chunks must give 3 entries for axes ZYX, got \(5, 5\)"):
        ds.rechunk((5, 5))


# --------------------------------------------------------------- validate
@pytest.mark.parametrize("override, match", [
    ({"axes": "TXY"}, r"axes must be 'TZYX' or 'TYX', got 'TXY'"),
    ({"raw": None}, r"input array 'raw' is missing; a dataset needs raw, preprocessed"),
    ({"labels": np.zeros((3, 4, 10, 12), np.int32)},
     r"input array 'labels' must be a dask array, got ndarray"),
    ({"scale": {"T": 1, "Z": 1, "Y": 1, "X": 1}}, r"scale must be a Scale, got dict"),
    ({"scale": Scale(t=1, y=0.1, x=0.1)},
     r"scale \{'T': 1.0, 'Y': 0.1, 'X': 0.1\} does not match axes 'TZYX': give Z exactly for 3D data"),
])
def test_validate_structural_errors(override, match):
    with pytest.raises(InputError, match=match):
        validate(_dataset(**override))


@pytest.mark.parametrize("name, value, match", [
    ("distance", -1.5, r"input array 'distance' has negative values \(minimum -1.5\); allowed: "
                       r"values >= 0"),
    ("labels", -2, r"input array 'labels' has negative values \(minimum -2\); allowed: values >= 0"),
    ("branches", -1, r"input array 'branches' has negative values"),
    ("distance", np.nan, r"input array 'distance' has non-finite values \(minimum nan\)"),
])
def test_validate_value_errors(name, value, match):
    arrays = _arrays()
    bad = arrays[name].astype(np.float32 if name == "distance" else np.int32)
    bad[1, 2, 3, 4] = value
    arrays[name] = bad
    ds = TrackingDataset.from_arrays(arrays, SCALE3)     # structure is fine
    with pytest.raises(InputError, match=match):
        validate(ds, values=True)


def test_validate_values_passes_on_good_data():
    ds = TrackingDataset.from_arrays(_arrays(), SCALE3)
    assert validate(ds, values=True) is ds


# --------------------------------------------------------------- laziness
def test_ten_terabytes_of_zeros_open_and_validate_without_reading():
    shape = (1000, 200, 4096, 4096)
    chunks = (1, 100, 1024, 1024)
    arrays = {n: da.zeros(shape, dtype=d, chunks=chunks) for n, d in DTYPES.items()}
    total = sum(a.nbytes for a in arrays.values())
    assert total > 10e12
    counter = _Count()
    t0 = time.perf_counter()
    with counter:
        ds = open_dataset(arrays, scale=SCALE3)
        validate(ds)
        text = ds.summary()
        ds2 = dt.open_dataset(ds, scale={"T": 5, "Z": 0.3, "Y": 0.1, "X": 0.1})
    elapsed = time.perf_counter() - t0
    assert counter.n == 0, "a task ran"
    assert elapsed < 2.0, f"opening took {elapsed:.2f} s"
    assert ds.shape == shape and ds2.dt == 5.0 and "(1000, 200, 4096, 4096)" in text
    assert ds.labels.numblocks == (1000, 2, 4, 4)


def test_time_chunks_are_made_one_frame():
    arrays = {n: da.zeros((6, 4, 8, 8), dtype=d, chunks=(3, 4, 8, 8)) for n, d in DTYPES.items()}
    ds = open_dataset(arrays, scale=SCALE3, spatial_chunks=(2, 8, 4))
    assert all(a.chunks == ((1,) * 6, (2, 2), (8,), (4, 4)) for a in ds.arrays().values())


# ----------------------------------------------------------- open_dataset
def test_open_dataset_errors(tmp_path):
    with pytest.raises(InputError, match=r"source must be a path \(zarr, OME-Zarr or Nellie output "
                                         r"folder\), a mapping of raw, .* or a TrackingDataset; got int"):
        open_dataset(42)
    with pytest.raises(InputError, match=r"source '.*nowhere' does not exist"):
        open_dataset(tmp_path / "nowhere")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(InputError, match=r"zarr group '.*empty.zarr' holds neither the six arrays "
                                         r"\(raw, preprocessed, distance, markers, labels, branches\) "
                                         r"nor six OME-Zarr images of those names"):
        open_dataset(tmp_path / "empty.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match=r"source '.*folder' is not a zarr group \(our layout or "
                                         r"OME-Zarr\) nor a Nellie output folder"):
        open_dataset(tmp_path / "folder")
    with pytest.raises(InputError, match=r"scale is required"):
        open_dataset(_arrays())


def test_zarr_layout_round_trip_and_errors(tmp_path):
    ds = TrackingDataset.from_arrays(_arrays(), SCALE3, spatial_chunks=(2, 5, 6))
    write_tracking_zarr(ds, tmp_path / "a.zarr")
    back = open_dataset(tmp_path / "a.zarr")
    assert back.scale == ds.scale and back.labels.chunks == ds.labels.chunks
    np.testing.assert_array_equal(back.branches.compute(), ds.branches.compute())
    assert open_dataset(tmp_path / "a.zarr", scale=(9, 1, 1, 1)).dt == 9.0
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r+")
    del g.attrs["scale"]
    with pytest.raises(InputError, match=r"zarr group '.*a.zarr' has no 'scale' attribute; pass "
                                         r"scale="):
        open_dataset(tmp_path / "a.zarr")
    del g["markers"]
    with pytest.raises(InputError, match=r"zarr group '.*a.zarr' is missing arrays: markers; it must "
                                         r"hold raw, "):
        read_tracking_zarr(tmp_path / "a.zarr")


def test_yeast_opens_lazily(yeast_path):
    counter = _Count()
    with counter:
        ds = open_dataset(yeast_path)
    assert counter.n == 0
    assert ds.shape == (30, 17, 192, 279) and ds.axes == "TZYX"
    assert ds.scale.as_dict() == {"T": 4.535566806793213, "Z": 0.25, "Y": 0.0655, "X": 0.0655}
    assert {n: str(a.dtype) for n, a in ds.arrays().items()} == {
        "raw": "uint16", "preprocessed": "float32", "distance": "float32", "markers": "uint8",
        "labels": "int32", "branches": "uint32"}
    assert set(VOLUMES) == set(ds.arrays())
