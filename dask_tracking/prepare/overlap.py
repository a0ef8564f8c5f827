"""Per-block kernels with halos on (T, *spatial) movies, one frame per chunk on T.

``map_cores`` rechunks so that every spatial chunk is at least as deep as its halo,
adds the halos with ``dask.array.overlap.overlap(boundary="none")`` (so scipy's and
numpy's own edge rules act only at the true frame edges), and calls a kernel with
the halo-extended block, the slices of its core inside the block and the core's
global start. Small per-frame arrays (``(T, 1, ..., 1)``, e.g. statistics held in
object arrays) broadcast to every block of their frame.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import dask.array as da
import numpy as np
from dask.array.overlap import ensure_minimum_chunksize

__all__ = ["fit_chunks", "map_cores", "per_frame", "frame_scalars"]


def fit_chunks(x: da.Array, depth: Sequence[int]) -> tuple[da.Array, tuple[int, ...]]:
    """Rechunk ``x`` (T, *spatial) to one frame per chunk and spatial chunks >= ``depth``.

    An axis whose halo reaches across the whole axis becomes a single chunk with depth 0.
    Returns the rechunked array and the depth actually needed per spatial axis.
    """
    chunks = [(1,) * x.shape[0]]
    used = []
    for a, d in enumerate(depth, start=1):
        n = x.shape[a]
        c = x.chunks[a]
        if d <= 0 or len(c) == 1:
            chunks.append(c)
            used.append(0 if len(c) == 1 else max(int(d), 0))
        elif d >= n:
            chunks.append((n,))
            used.append(0)
        else:
            cc = ensure_minimum_chunksize(int(d), c)
            chunks.append(cc)
            used.append(0 if len(cc) == 1 else int(d))
    x = x.rechunk(tuple(chunks))
    return x, tuple(used)


def _starts(chunks: Sequence[int]) -> list[int]:
    out = [0]
    for c in chunks:
        out.append(out[-1] + int(c))
    return out


def map_cores(kernel: Callable[..., Any], x: da.Array, depth: Sequence[int], *args: da.Array,
              dtype: Any, out: str = "core", channels: int | None = None,
              **kwargs: Any) -> da.Array:
    """Run ``kernel(block, inner, start, *arg_blocks, **kwargs)`` on every block of ``x``.

    Parameters
    ----------
    kernel : callable
        Gets the halo-extended block (1, *spatial), ``inner`` (slices of the core in
        the block, spatial axes only) and ``start`` (global start of the core, spatial).
    x : dask array, shape (T, *spatial)
    depth : sequence of int
        Halo per spatial axis in voxels (T always 0).
    args : dask arrays of shape (T, 1, ..., 1)
        Per-frame values broadcast to the frame's blocks.
    out : {"core", "object"}
        ``"core"``: the kernel returns the core block (1, *core) (or (1, C, *core) with
        ``channels=C``); ``"object"``: it returns any object, stored as one element per block.
    """
    x, used = fit_chunks(x, depth)
    xo = da.overlap.overlap(x, depth={0: 0, **{a + 1: d for a, d in enumerate(used)}},
                            boundary="none") if any(used) else x
    starts = [_starts(c) for c in x.chunks[1:]]
    nd = x.ndim - 1

    def _call(block, *rest, block_id=None):
        loc = block_id[1:] if out != "core" or channels is None else block_id[2:]
        core_start = tuple(starts[a][i] for a, i in enumerate(loc))
        core_stop = tuple(starts[a][i + 1] for a, i in enumerate(loc))
        inner = []
        for a in range(nd):
            left = used[a] if core_start[a] > 0 else 0
            inner.append(slice(left, left + core_stop[a] - core_start[a]))
        res = kernel(block, tuple(inner), core_start, *rest, **kwargs)
        if out == "object":
            holder = np.empty((1,) * (nd + 1), dtype=object)
            holder[(0,) * (nd + 1)] = res
            return holder
        return res

    if out == "object":
        chunks = tuple((1,) * len(c) for c in x.chunks)
        return da.map_blocks(_call, xo, *args, chunks=chunks, dtype=object, meta=np.empty((0,) * x.ndim, dtype=object))
    if channels is not None:
        chunks = (x.chunks[0], (channels,)) + x.chunks[1:]
        return da.map_blocks(_call, xo, *args, chunks=chunks, dtype=dtype, new_axis=1,
                             meta=np.empty((0,) * (x.ndim + 1), dtype=dtype))
    return da.map_blocks(_call, xo, *args, chunks=x.chunks, dtype=dtype,
                         meta=np.empty((0,) * x.ndim, dtype=dtype))


def per_frame(func: Callable[..., Any], blocks: da.Array, *args: da.Array, **kwargs: Any) -> da.Array:
    """Reduce an object array of per-block results (T, nb...) to one object per frame.

    ``func(list_of_block_results, *arg_objects, **kwargs)`` runs once per frame; the
    result is a (T, 1, ..., 1) object array.
    """
    nd = blocks.ndim
    gathered = blocks.rechunk((1,) + (-1,) * (nd - 1))

    def _call(b, *rest):
        items = list(b.reshape(-1))
        extra = [r.reshape(-1)[0] for r in rest]
        holder = np.empty((1,) * nd, dtype=object)
        holder[(0,) * nd] = func(items, *extra, **kwargs)
        return holder

    return da.map_blocks(_call, gathered, *args, chunks=((1,) * blocks.shape[0],) + ((1,),) * (nd - 1),
                         dtype=object, meta=np.empty((0,) * nd, dtype=object))


def frame_scalars(x: da.Array, func: Callable[[np.ndarray], Any]) -> da.Array:
    """``func(frame_array)`` once per frame of a (T, ...) array whose frames are small."""
    nd = x.ndim
    whole = x.rechunk((1,) + (-1,) * (nd - 1))

    def _call(b):
        holder = np.empty((1,) * nd, dtype=object)
        holder[(0,) * nd] = func(b[0])
        return holder

    return da.map_blocks(_call, whole, chunks=((1,) * x.shape[0],) + ((1,),) * (nd - 1),
                         dtype=object, meta=np.empty((0,) * nd, dtype=object))
