"""Chunks read straight from their files (``dask_tracking.io.chunk_files``) give zarr's values."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest
import zarr
from numcodecs import BZ2, Blosc as BloscV2, Delta, GZip as GZipV2, Zlib, Zstd as ZstdV2
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

import dask_tracking as dt
from dask_tracking.io.chunk_files import ChunkFiles, from_zarr
from dask_tracking.reads import ChunkReads

SHAPE, CHUNKS = (3, 5, 21, 34), (1, 5, 8, 16)  # uneven: edge chunks on Y and X


def _values(dtype, rng, fill=0):
    if np.dtype(dtype).kind == "b":
        return rng.random(SHAPE) < 0.3
    v = rng.integers(0, 200, SHAPE).astype(dtype)
    v[1, :, 8:16, :] = fill  # whole chunks of the fill value: not written (missing files)
    return v


def _same(arr):
    got = from_zarr(arr).compute(scheduler="threads")
    want = arr[...]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


V3_CODECS = {
    "zstd": dict(compressors=ZstdCodec(level=1)),
    "blosc": dict(compressors=BloscCodec()),
    "gzip": dict(compressors=GzipCodec()),
    "none": dict(compressors=None),
    "big-endian": dict(serializer=BytesCodec(endian="big"), compressors=ZstdCodec()),
}


@pytest.mark.parametrize("codec", list(V3_CODECS))
@pytest.mark.parametrize("dtype", ["float32", "uint16", "int32", "uint8", "bool"])
def test_v3_chunks_equal_zarr(tmp_path, codec, dtype):
    rng = np.random.default_rng(1)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    fill = False if dtype == "bool" else 7
    a = g.create_array("x", shape=SHAPE, chunks=CHUNKS, dtype=dtype, fill_value=fill, **V3_CODECS[codec])
    a[...] = _values(dtype, rng, fill)
    assert ChunkFiles.supports(a)
    files = sum(1 for p in (tmp_path / "s.zarr" / "x" / "c").rglob("*") if p.is_file())
    if dtype != "bool":
        assert files < np.prod([-(-n // c) for n, c in zip(SHAPE, CHUNKS)])  # some chunks have no file
    _same(a)


def test_missing_chunk_is_the_fill_value(tmp_path):
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    a = g.create_array("x", shape=(4, 10), chunks=(2, 4), dtype="int16", fill_value=-3)
    a[0:2, :] = 5  # the chunks of rows 2-3 are never written
    got = from_zarr(a).compute()
    assert (got[2:] == -3).all() and (got[:2] == 5).all()


@pytest.mark.parametrize("sep", [".", "/"])
@pytest.mark.parametrize("compressor", [ZstdV2(), BloscV2(), GZipV2(), Zlib(), None])
def test_v2_chunks_equal_zarr(tmp_path, sep, compressor):
    rng = np.random.default_rng(2)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=2)
    a = g.create_array("x", shape=SHAPE, chunks=CHUNKS, dtype=">i2", compressors=compressor,
                       chunk_key_encoding={"name": "v2", "separator": sep})
    a[...] = _values("int16", rng)
    assert ChunkFiles.supports(a)
    _same(a)


def test_v2_without_fill_value_asks_zarr_for_missing_chunks(tmp_path):
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=2)
    a = g.create_array("x", shape=(4, 10), chunks=(2, 4), dtype="uint8", fill_value=None)
    a[0:2, :] = 9
    assert ChunkFiles.supports(a)
    _same(a)


def test_arrays_zarr_reads_itself(tmp_path):
    """Sharded, filtered, Fortran-ordered and bz2-compressed arrays go through zarr: the same values."""
    rng = np.random.default_rng(3)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    sharded = g.create_array("sharded", shape=SHAPE, chunks=CHUNKS, shards=(1, 5, 16, 32), dtype="uint16")
    sharded[...] = _values("uint16", rng)
    g2 = zarr.open_group(str(tmp_path / "s2.zarr"), mode="w", zarr_format=2)
    filtered = g2.create_array("f", shape=SHAPE, chunks=CHUNKS, dtype="int32", filters=[Delta(dtype="int32")])
    filtered[...] = _values("int32", rng)
    fortran = g2.create_array("o", shape=SHAPE, chunks=CHUNKS, dtype="int32", order="F")
    fortran[...] = _values("int32", rng)
    bz2 = g2.create_array("b", shape=SHAPE, chunks=CHUNKS, dtype="int32", compressors=BZ2())
    bz2[...] = _values("int32", rng)
    for a in (sharded, filtered, fortran, bz2):
        assert not ChunkFiles.supports(a)
        assert ChunkFiles.of(a) is None
        _same(a)


def test_whole_chunks_are_read_without_zarr(tmp_path):
    """With the array's metadata gone from disk, whole chunks still read (from their files);
    a selection across chunks needs zarr and fails."""
    rng = np.random.default_rng(4)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    a = g.create_array("x", shape=SHAPE, chunks=CHUNKS, dtype="float32", compressors=ZstdCodec())
    v = _values("float32", rng)
    a[...] = v
    view = ChunkFiles.of(a)
    (tmp_path / "s.zarr" / "x" / "zarr.json").unlink()
    view._array = None  # what a worker holds after unpickling: no open zarr handle
    np.testing.assert_array_equal(view[0:1, 0:5, 16:21, 32:34], v[0:1, 0:5, 16:21, 32:34])  # an edge chunk
    np.testing.assert_array_equal(view[2:3, 0:5, 8:16, 0:16], v[2:3, 0:5, 8:16, 0:16])
    with pytest.raises(Exception):
        view[0:2, 0:5, 0:8, 0:16]


def test_unaligned_selections_and_pickling(tmp_path):
    rng = np.random.default_rng(5)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    a = g.create_array("x", shape=SHAPE, chunks=CHUNKS, dtype="uint16")
    a[...] = _values("uint16", rng)
    view = pickle.loads(pickle.dumps(ChunkFiles.of(a)))
    for sel in [(slice(0, 1), slice(0, 5), slice(3, 11), slice(0, 16)), (0, slice(None), 4, slice(2, 30, 3)),
                (slice(1, 2), slice(0, 5), slice(16, 21), slice(32, 34))]:
        np.testing.assert_array_equal(view[sel], a[sel])
    rechunked = from_zarr(a).rechunk((2, 5, 10, 10)).compute()  # getters on other selections
    np.testing.assert_array_equal(rechunked, a[...])


def test_dataset_reads_inside_tasks_and_on_a_cluster(tmp_path):
    """Opened datasets read through the files; the in-task chunk reads still apply, and a
    process cluster (pickled views) gives the same values."""
    from distributed import Client, LocalCluster

    from dask_tracking.datasets import synthetic

    ds = synthetic(3, 3, shape=(6, 40, 40), n_objects=2, seed=1, chunks=(6, 16, 24))
    path = tmp_path / "d.zarr"
    dt.write_tracking_zarr(ds, str(path))
    opened = dt.open_dataset(str(path))
    g = zarr.open_group(str(path), mode="r")
    assert ChunkFiles.supports(g["labels"])
    assert ChunkReads(opened.labels).inline
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster):
        got = dask.compute(opened.labels.sum(axis=(1, 2, 3)), opened.preprocessed.max())
    want = (g["labels"][...].sum(axis=(1, 2, 3)), g["preprocessed"][...].max())
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
