"""Stored zarr chunks read straight from their files, for arrays on a local disk.

``zarr.Array.__getitem__`` runs every read through zarr's asynchronous machinery: a
coroutine per chunk on one event-loop thread, a decode in a thread pool, then a copy into
the output. For the chunk-sized reads that dask makes this is about 2.5 ms of Python per
chunk, holding the GIL, so two reading threads are no faster than one. Reading the chunk's
file and decoding it with numcodecs in the task's own thread takes a quarter of that
(the decoder releases the GIL).

:func:`from_zarr` gives the same dask array as ``dask.array.from_zarr`` (same chunks, same
values and dtype, one getter task per chunk), reading through :class:`ChunkFiles` when the
array is one this module understands completely:

- a :class:`zarr.storage.LocalStore` (a directory on disk);
- zarr v3: the ``bytes`` codec followed by at most one of ``zstd``, ``blosc``, ``gzip``
  (no sharding, no transpose, no checksum codec);
- zarr v2: compressor ``zstd``, ``blosc``, ``gzip``, ``zlib`` or none, no filters, C order;
- a fixed-size numeric or boolean dtype.

Anything else, and any selection that is not exactly one stored chunk, is read by zarr
itself. A chunk without a file is the array's fill value, as in zarr (zarr itself answers
where the fill value is undefined).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

__all__ = ["ChunkFiles", "from_zarr"]

#: zarr v2 compressors (numcodecs ``codec_id``) whose chunks are decoded here.
V2_COMPRESSORS = frozenset({"zstd", "blosc", "gzip", "zlib"})


def _v3_decoder(codecs: tuple) -> tuple[Any, str] | None:
    """(numcodecs decoder or None, byte order) of a v3 codec chain, or None if unsupported."""
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

    if not codecs or type(codecs[0]) is not BytesCodec or len(codecs) > 2:
        return None
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)
    order = ">" if endian == "big" else "<"
    if len(codecs) == 1:
        return None, order
    c = codecs[1]
    if type(c) is ZstdCodec:
        from numcodecs import Zstd

        return Zstd(), order
    if type(c) is BloscCodec:
        from numcodecs import Blosc

        return Blosc(), order
    if type(c) is GzipCodec:
        from numcodecs import GZip

        return GZip(), order
    return None


class ChunkFiles:
    """Array-like view of a zarr array on a local disk whose whole-chunk reads skip zarr.

    Parameters
    ----------
    array : zarr.Array
        Must pass :meth:`supports` (use :meth:`of` to get None otherwise).

    Attributes
    ----------
    shape, dtype, ndim, chunks
        Those of ``array`` (``chunks``: the stored chunk shape).
    """

    def __init__(self, array: Any):
        meta = array.metadata
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in array.chunks)
        self._dir = Path(array.store.root) / array.path if array.path else Path(array.store.root)
        self._encode = meta.encode_chunk_key
        self._fill = meta.fill_value
        if meta.zarr_format == 3:
            self._decoder, order = _v3_decoder(tuple(meta.codecs))
            self._stored = self.dtype.newbyteorder(order) if self.dtype.itemsize > 1 else self.dtype
        else:
            self._decoder = meta.compressor
            self._stored = np.dtype(meta.dtype.to_native_dtype())
        self._array = array

    # ------------------------------------------------------------------ which arrays
    @staticmethod
    def supports(array: Any) -> bool:
        """Whether every whole-chunk read of ``array`` can be made here."""
        try:
            from zarr.storage import LocalStore
        except ImportError:  # pragma: no cover - zarr < 3
            return False
        try:
            meta = array.metadata
            if not isinstance(array.store, LocalStore) or np.dtype(array.dtype).kind not in "biufc":
                return False
            if meta.zarr_format == 3:
                return _v3_decoder(tuple(meta.codecs)) is not None and \
                    meta.chunk_grid.__class__.__name__ == "RegularChunkGrid"
            return meta.zarr_format == 2 and not meta.filters and meta.order == "C" and \
                (meta.compressor is None or meta.compressor.codec_id in V2_COMPRESSORS)
        except Exception:  # any metadata this module does not know
            return False

    @classmethod
    def of(cls, array: Any) -> "ChunkFiles | None":
        """A :class:`ChunkFiles` of ``array``, or None where zarr must read it."""
        return cls(array) if cls.supports(array) else None

    # ------------------------------------------------------------------ reading
    def _zarr(self) -> Any:
        if self._array is None:
            import zarr

            self._array = zarr.open_array(str(self._dir), mode="r")
        return self._array

    def _chunk_index(self, sel: Any) -> tuple[int, ...] | None:
        """The chunk that ``sel`` covers exactly, or None."""
        if not isinstance(sel, tuple) or len(sel) != self.ndim:
            return None
        index = []
        for s, c, n in zip(sel, self.chunks, self.shape):
            if not isinstance(s, slice) or s.step not in (None, 1):
                return None
            start, stop = s.start or 0, n if s.stop is None else s.stop
            if start % c or start < 0 or stop != min(start + c, n) or start >= n:
                return None
            index.append(start // c)
        return tuple(index)

    def __getitem__(self, sel: Any) -> np.ndarray:
        index = self._chunk_index(sel)
        if index is None:
            return self._zarr()[sel]
        extent = tuple(min(c, n - i * c) for i, c, n in zip(index, self.chunks, self.shape))
        try:
            raw = (self._dir / self._encode(index)).read_bytes()
        except FileNotFoundError:
            if self._fill is None:
                return self._zarr()[sel]
            return np.full(extent, self._fill, dtype=self.dtype)
        out = np.empty(self.chunks, dtype=self._stored)
        if self._decoder is None:
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)
        else:
            self._decoder.decode(raw, out=out)
        if extent != self.chunks:  # an edge chunk is stored whole
            out = np.ascontiguousarray(out[tuple(slice(0, e) for e in extent)])
        return out if out.dtype == self.dtype else out.astype(self.dtype)

    def __getstate__(self) -> dict:  # the zarr handle is reopened where it is needed
        state = dict(self.__dict__)
        state["_array"] = None
        state["_encode"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._encode = self._zarr().metadata.encode_chunk_key


def from_zarr(array: Any) -> da.Array:
    """``dask.array.from_zarr(array)``, reading whole chunks through :class:`ChunkFiles`
    where the array allows it (see the module docstring).

    Parameters
    ----------
    array : zarr.Array

    Returns
    -------
    dask.array.Array
        The array's shape, stored chunks and dtype; one getter task per chunk.
    """
    view = ChunkFiles.of(array)
    if view is None:
        return da.from_zarr(array)
    name = "from-zarr-" + tokenize(str(view._dir), view.shape, view.chunks, view.dtype.str,
                                   repr(array.metadata))
    return da.from_array(view, chunks=view.chunks, name=name, inline_array=False,
                         meta=np.empty((0,) * view.ndim, dtype=view.dtype))
