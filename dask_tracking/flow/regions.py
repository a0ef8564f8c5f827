"""Reading one region of one frame (a block core plus halo) from a dask array's chunks.

Instead of slicing the dask array per block (which builds a new sub-graph each
time), a region task depends directly on the chunk keys it overlaps and copies
the overlapping parts into one buffer. The buffer holds at most the region, and
callers may ask for a smaller window of it at run time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import dask.array as da
import numpy as np

from ..reads import resolve

__all__ = ["ChunkGrid", "Region", "read_region", "paste"]


@dataclass(frozen=True)
class Region:
    """Where the pieces of a region come from (an opaque literal in the task graph).

    ``start``/``shape`` locate the region in the frame; ``pieces`` holds, per input
    chunk, the frame-local index ``t`` in the chunk and the source ranges in the
    chunk and target ranges in the region.
    """

    start: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: Any
    pieces: tuple

    def window(self, lo: Sequence[int], hi: Sequence[int]) -> "Region":
        """The part of this region inside frame box ``[lo, hi)`` (clipped)."""
        lo = [max(int(a), s) for a, s in zip(lo, self.start)]
        hi = [min(int(b), s + n) for b, s, n in zip(hi, self.start, self.shape)]
        hi = [max(a, b) for a, b in zip(lo, hi)]
        pieces = []
        for t_local, src, dst in self.pieces:
            nsrc, ndst = [], []
            for (sa, sb), (da_, db), a, b, st in zip(src, dst, lo, hi, self.start):
                g0, g1 = max(st + da_, a), min(st + db, b)
                if g1 <= g0:
                    break
                nsrc.append((sa + g0 - st - da_, sa + g1 - st - da_))
                ndst.append((g0 - a, g1 - a))
            else:
                pieces.append((t_local, tuple(nsrc), tuple(ndst)))
                continue
            pieces.append(None)
        return Region(tuple(lo), tuple(b - a for a, b in zip(lo, hi)), self.dtype, tuple(pieces))


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


class ChunkGrid:
    """The chunk keys of one dask array (axes T + spatial), for region reads."""

    def __init__(self, array: da.Array):
        self.array = array
        self.keys = np.empty(array.numblocks, dtype=object)
        for idx in np.ndindex(*array.numblocks):
            self.keys[idx] = (array.name,) + idx
        self.bounds = [_bounds(c) for c in array.chunks]

    def region(self, t: int, region: Sequence[slice]) -> tuple[Region, list]:
        """``(Region, chunk keys)`` for frame ``t``'s values on ``region`` (spatial slices)."""
        tc = int(np.searchsorted(self.bounds[0], t, side="right") - 1)
        t_local = int(t - self.bounds[0][tc])
        ranges = []
        for a, s in enumerate(region):
            b = self.bounds[a + 1]
            first = int(np.searchsorted(b, s.start, side="right") - 1)
            last = int(np.searchsorted(b, s.stop, side="left") - 1)
            ranges.append(range(first, max(last, first) + 1))
        pieces, keys = [], []
        for idx in itertools.product(*ranges):
            src, dst = [], []
            for a, (ci, s) in enumerate(zip(idx, region)):
                b = self.bounds[a + 1]
                lo, hi = max(s.start, int(b[ci])), min(s.stop, int(b[ci + 1]))
                src.append((lo - int(b[ci]), hi - int(b[ci])))
                dst.append((lo - s.start, hi - s.start))
            pieces.append((t_local, tuple(src), tuple(dst)))
            keys.append(self.keys[(tc,) + idx])
        reg = Region(tuple(s.start for s in region), tuple(s.stop - s.start for s in region),
                     np.dtype(self.array.dtype), tuple(pieces))
        return reg, keys


def read_region(region: Region, chunks: Sequence[Any]) -> np.ndarray:
    """Assemble ``region`` from its input chunks (pieces marked None are skipped).

    ``chunks`` holds chunk values or :class:`dask_tracking.reads.ChunkRead` objects;
    only the chunks of pieces not marked None are read.
    """
    live = [(c, p) for c, p in zip(chunks, region.pieces) if p is not None]
    out = None
    for c, (t_local, src, dst) in live:   # one stored chunk read (and alive) at a time
        c = resolve(c)
        piece = c[(t_local,) + tuple(slice(a, b) for a, b in src)]
        if len(live) == 1 and piece.shape == tuple(region.shape):
            return piece
        if out is None:
            out = _module(c).empty(region.shape, dtype=region.dtype)
        out[tuple(slice(a, b) for a, b in dst)] = piece
        del c, piece
    return out if out is not None else np.empty(region.shape, dtype=region.dtype)


def paste(lo: Sequence[int], hi: Sequence[int], parts: Sequence[tuple[Sequence[int], Any]],
          dtype: Any) -> np.ndarray:
    """The frame box ``[lo, hi)`` assembled from ``parts``, ``(start, array)`` pairs.

    Each part covers the frame box ``[start, start + array.shape)``; together the
    parts must cover ``[lo, hi)`` (overlaps carry equal values). Voxels no part
    covers are left uninitialised, so callers pass covering parts.
    """
    parts = [(np.asarray(s, dtype=np.int64), a) for s, a in parts if a is not None]
    xp = _module(parts[0][1]) if parts else np
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    out = xp.empty(tuple((hi - lo).tolist()), dtype=dtype)
    for start, a in parts:
        g0 = np.maximum(lo, start)
        g1 = np.minimum(hi, start + np.asarray(a.shape, dtype=np.int64))
        if np.any(g1 <= g0):
            continue
        out[tuple(slice(x, y) for x, y in zip(g0 - lo, g1 - lo))] = \
            a[tuple(slice(x, y) for x, y in zip(g0 - start, g1 - start))]
    return out


def _module(x: Any):
    from ..backend import array_module

    return array_module(x)
