"""Reading one region of one frame (a block core plus halo) from a dask array's chunks.

Instead of slicing the dask array per block (which builds a new sub-graph each
time), a region task depends directly on the chunk keys it overlaps and copies
the overlapping parts into one buffer. The buffer holds at most the region.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import dask
import dask.array as da
import numpy as np

__all__ = ["ChunkGrid", "read_region"]


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


class ChunkGrid:
    """The chunks of one dask array (axes T + spatial) as Delayed objects, for region reads."""

    def __init__(self, array: da.Array):
        self.array = array
        self.delayed = array.to_delayed()
        self.bounds = [_bounds(c) for c in array.chunks]

    def region(self, t: int, region: Sequence[slice]):
        """A Delayed ndarray with frame ``t``'s values on ``region`` (spatial slices)."""
        tc = int(np.searchsorted(self.bounds[0], t, side="right") - 1)
        t_local = int(t - self.bounds[0][tc])
        ranges = []
        for a, s in enumerate(region):
            b = self.bounds[a + 1]
            first = int(np.searchsorted(b, s.start, side="right") - 1)
            last = int(np.searchsorted(b, s.stop, side="left") - 1)
            ranges.append(range(first, max(last, first) + 1))
        pieces = []
        for idx in itertools.product(*ranges):
            src, dst = [], []
            for a, (ci, s) in enumerate(zip(idx, region)):
                b = self.bounds[a + 1]
                lo, hi = max(s.start, int(b[ci])), min(s.stop, int(b[ci + 1]))
                src.append((lo - int(b[ci]), hi - int(b[ci])))
                dst.append((lo - s.start, hi - s.start))
            pieces.append((self.delayed[(tc,) + idx], t_local, tuple(src), tuple(dst)))
        shape = tuple(s.stop - s.start for s in region)
        chunks = [p[0] for p in pieces]
        meta = [p[1:] for p in pieces]
        return dask.delayed(read_region, pure=True)(shape, self.array.dtype, meta, *chunks)


def read_region(shape: tuple[int, ...], dtype: Any, meta: list, *chunks: Any) -> np.ndarray:
    """Assemble a region from chunk pieces (``meta``: t index, source and target ranges)."""
    if len(chunks) == 1:
        t_local, src, dst = meta[0]
        block = chunks[0][(t_local,) + tuple(slice(a, b) for a, b in src)]
        if block.shape == tuple(shape):
            return block
    xp = _module(chunks[0]) if chunks else np
    out = xp.empty(shape, dtype=dtype)
    for c, (t_local, src, dst) in zip(chunks, meta):
        out[tuple(slice(a, b) for a, b in dst)] = c[(t_local,) + tuple(slice(a, b) for a, b in src)]
    return out


def _module(x: Any):
    from ..backend import array_module

    return array_module(x)
