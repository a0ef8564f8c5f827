"""OME-TIFF volumes: lazy per-frame reading, axes normalisation, scale and units, writing."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from dask_tracking.dataset import InputError
from dask_tracking.io.ome_tiff import ome_tiff_info, read_ome_tiff, write_ome_tiff

SCALE = {"T": 2.5, "Z": 0.3, "Y": 0.11, "X": 0.12}


def _movie(shape, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 5000, size=shape).astype(dtype)


@pytest.mark.parametrize("axes, shape, dtype", [
    ("TZYX", (3, 4, 20, 30), np.uint16),
    ("TYX", (4, 20, 30), np.float32),
    ("TZYX", (2, 5, 16, 18), np.int32),
])
def test_write_then_read_round_trip(tmp_path, axes, shape, dtype):
    data = _movie(shape, dtype)
    path = write_ome_tiff(tmp_path / "v.ome.tif", data, axes=axes, scale=SCALE)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.is_ome
        s = tif.series[0]
        assert s.axes == axes and s.dtype == np.dtype(dtype)
        assert s.dataoffset is not None             # contiguous: tifffile.memmap works
    np.testing.assert_array_equal(tifffile.memmap(path), data)
    arr, got_axes, scale = read_ome_tiff(path)
    assert got_axes == axes and arr.dtype == np.dtype(dtype)
    assert arr.chunks[0] == (1,) * shape[0] and arr.chunks[1:] == tuple((n,) for n in shape[1:])
    np.testing.assert_array_equal(arr.compute(), data)
    want = {k: v for k, v in SCALE.items() if k in axes}
    assert scale == pytest.approx(want)


def test_one_task_per_frame_and_frame_reads_alone(tmp_path):
    data = _movie((5, 3, 10, 12))
    path = write_ome_tiff(tmp_path / "v.ome.tif", data, axes="TZYX", scale=SCALE)
    arr, _, _ = read_ome_tiff(path)
    readers = [k for k in dict(arr.__dask_graph__()) if str(k).startswith("read-ome-tiff-frame-")]
    assert len(readers) == 5
    np.testing.assert_array_equal(arr[3].compute(), data[3])


def test_write_casts_and_writes_dask_frame_by_frame(tmp_path):
    import dask.array as da

    data = da.from_array(_movie((3, 8, 9), np.int64), chunks=(1, 4, 5))
    path = write_ome_tiff(tmp_path / "c.ome.tif", data, axes="TYX", scale=SCALE, dtype=np.uint32,
                          description="hello")
    arr, _, _ = read_ome_tiff(path)
    assert arr.dtype == np.uint32
    np.testing.assert_array_equal(arr.compute(), data.compute().astype(np.uint32))
    assert "<Description>hello</Description>" in tifffile.tiffcomment(path)


def test_compressed_file_is_read_by_pages(tmp_path):
    data = _movie((3, 4, 16, 16))
    path = tmp_path / "z.ome.tif"
    tifffile.imwrite(path, data, ome=True, compression="zlib",
                     metadata={"axes": "TZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
                               "PhysicalSizeZ": 0.5, "TimeIncrement": 3.0})
    assert ome_tiff_info(path).offset is None
    arr, axes, scale = read_ome_tiff(path)
    assert axes == "TZYX" and scale == pytest.approx({"X": 0.2, "Y": 0.2, "Z": 0.5, "T": 3.0})
    np.testing.assert_array_equal(arr.compute(), data)


def test_axes_are_normalised_like_nellie(tmp_path):
    # no T: a length-1 T is prepended; singleton Z and C are squeezed
    yx = _movie((12, 14))
    p = tmp_path / "yx.ome.tif"
    tifffile.imwrite(p, yx, ome=True, metadata={"axes": "YX"})
    arr, axes, _ = read_ome_tiff(p)
    assert axes == "TYX" and arr.shape == (1, 12, 14)
    np.testing.assert_array_equal(arr.compute()[0], yx)

    tz1 = _movie((3, 1, 12, 14))
    p = tmp_path / "tz1.ome.tif"
    tifffile.imwrite(p, tz1, ome=True, metadata={"axes": "TZYX"})
    arr, axes, _ = read_ome_tiff(p)
    assert axes == "TYX" and arr.shape == (3, 12, 14)
    np.testing.assert_array_equal(arr.compute(), tz1[:, 0])

    tc = _movie((2, 1, 3, 12, 14))
    p = tmp_path / "tczyx.ome.tif"
    tifffile.imwrite(p, tc, ome=True, metadata={"axes": "TCZYX"})
    arr, axes, _ = read_ome_tiff(p)
    assert axes == "TZYX" and arr.shape == (2, 3, 12, 14)
    np.testing.assert_array_equal(arr.compute(), tc[:, 0])

    zt = _movie((3, 2, 12, 14))                       # Z slowest: T is moved first
    p = tmp_path / "ztyx.ome.tif"
    tifffile.imwrite(p, zt, ome=True, metadata={"axes": "ZTYX"})
    arr, axes, _ = read_ome_tiff(p)
    assert axes == "TZYX" and arr.shape == (2, 3, 12, 14)
    np.testing.assert_array_equal(arr.compute(), np.moveaxis(zt, 1, 0))


def test_units_are_converted_to_um_and_s(tmp_path):
    p = tmp_path / "units.ome.tif"
    tifffile.imwrite(p, _movie((2, 3, 8, 8)), ome=True, metadata={
        "axes": "TZYX", "PhysicalSizeX": 65.5, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 65.5,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.25, "PhysicalSizeZUnit": "µm",
        "TimeIncrement": 500.0, "TimeIncrementUnit": "ms"})
    _, _, scale = read_ome_tiff(p)
    assert scale == pytest.approx({"X": 0.0655, "Y": 0.0655, "Z": 0.25, "T": 0.5})


def test_plain_tiff_has_no_scale_and_unknown_axes_are_refused(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, _movie((8, 9)))
    arr, axes, scale = read_ome_tiff(p)
    assert scale == {} and axes == "TYX" and arr.shape == (1, 8, 9)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, _movie((2, 8, 9)))
    with pytest.raises(InputError, match=r"has axis 'Q' of size 2 \(axes 'QYX'\); allowed axes: "
                                         r"T, Z, Y, X"):
        read_ome_tiff(p)


def test_errors(tmp_path):
    with pytest.raises(InputError, match=r"OME-TIFF '.*missing.ome.tif' does not exist"):
        read_ome_tiff(tmp_path / "missing.ome.tif")
    bad = tmp_path / "bad.ome.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match=r"'.*bad.ome.tif' is not a readable TIFF file"):
        read_ome_tiff(bad)
    p = tmp_path / "ch.ome.tif"
    tifffile.imwrite(p, _movie((2, 3, 8, 8)), ome=True, metadata={"axes": "TCYX"})
    with pytest.raises(InputError, match=r"has 3 channels \(axes 'TCYX', shape \(2, 3, 8, 8\)\); "
                                         r"allowed: one channel"):
        read_ome_tiff(p)
    with pytest.raises(InputError, match=r"axes must be 'TZYX' or 'TYX', got 'ZYX'"):
        write_ome_tiff(tmp_path / "w.ome.tif", _movie((2, 3, 4)), axes="ZYX", scale=SCALE)
    with pytest.raises(InputError, match=r"array has shape \(2, 3, 4\) but axes 'TZYX' need 4"):
        write_ome_tiff(tmp_path / "w.ome.tif", _movie((2, 3, 4)), axes="TZYX", scale=SCALE)
