"""Which voxels of a frame are labelled, as one bit per voxel: the label filter of streamed tracks.

A frame's mask is built from one small task per spatial block (``labels > 0`` packed to
bits, 1/32 of an int32 block) and gathered into a :class:`FrameMask`, 1/32 of the
frame's int32 size (7.3 MB for 17 x 1536 x 2232). The tasks that write track rows
look their points up in it without ever holding a label block.

A stored label chunk is read inside the task that packs it (:mod:`dask_tracking.reads`),
and a ``gate`` (any Delayed) makes those tasks wait for it: the walk gates frame t+1's
mask on every piece's step into frame t, so the masks are built one step ahead of their
use and about two are alive at a time, not one per frame of the walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from dask._task_spec import Task, TaskRef
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..backend import to_host
from ..reads import ChunkReads, resolve

__all__ = ["FrameMask", "frame_mask_lazy"]


@dataclass(frozen=True)
class FrameMask:
    """Bits of ``labels[t] > 0``, block by block.

    Parameters
    ----------
    bounds : tuple of ndarray
        Per spatial axis, the block edges ``[0, c0, c0+c1, ..., n]`` (int64).
    bits : ndarray of uint8
        The packed bits (``np.packbits``, big-endian) of every block's raveled mask,
        blocks in raster order, each starting on a byte.
    byte_offset : ndarray of int64
        First byte of each block in ``bits`` (raster block order).
    """

    bounds: tuple[np.ndarray, ...]
    bits: np.ndarray
    byte_offset: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(b[-1]) for b in self.bounds)

    def lookup(self, pos: np.ndarray) -> np.ndarray:
        """(n,) bool: the rounded (half to even) positions ``pos`` (n, d) are in the frame and labelled.

        Non-finite or out-of-volume positions give False.
        """
        pos = np.asarray(pos, dtype=np.float64)
        out = np.zeros(len(pos), dtype=bool)
        if len(pos) == 0:
            return out
        r = np.round(pos)
        ok = np.all(np.isfinite(r), axis=1)
        ok &= np.all((r >= 0) & (r < np.asarray(self.shape)), axis=1)
        if not ok.any():
            return out
        idx = r[ok].astype(np.int64)
        block = np.zeros(len(idx), np.int64)
        local = np.zeros(len(idx), np.int64)
        nblocks = [len(b) - 1 for b in self.bounds]
        sizes = []
        for a, b in enumerate(self.bounds):
            bi = np.searchsorted(b, idx[:, a], side="right") - 1
            block = block * nblocks[a] + bi
            sizes.append(np.diff(b)[bi])
        for a, b in enumerate(self.bounds):   # raster index inside the block
            bi = np.searchsorted(b, idx[:, a], side="right") - 1
            local = local * sizes[a] + (idx[:, a] - b[bi])
        bit = self.byte_offset[block] * 8 + local
        out[ok] = ((self.bits[bit >> 3] >> (7 - (bit & 7)).astype(np.uint8)) & 1).astype(bool)
        return out


def _block_bits(chunk: Any, frame: int, _gate: Any = None) -> np.ndarray:
    """Packed bits of ``labels > 0`` of frame ``frame`` of one stored chunk (T, ...)."""
    return np.packbits(np.asarray(to_host(resolve(chunk)[frame])).ravel() > 0)


def _gather(bounds: tuple[np.ndarray, ...], *packed: np.ndarray) -> FrameMask:
    lengths = np.array([len(p) for p in packed], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return FrameMask(bounds, np.concatenate(packed) if packed else np.zeros(0, np.uint8), offsets)


def frame_mask_lazy(labels: Any, t: int, gate: Any = None) -> Any:
    """A Delayed :class:`FrameMask` of ``labels[t]`` (a dask array (T, ...) of integer ids).

    One task per spatial block of the frame reads its chunk and packs its mask; a last
    task gathers the bits.

    Parameters
    ----------
    labels : dask.array.Array
        (T, ...) integer label ids, any chunking.
    t : int
        The frame.
    gate : Delayed, optional
        The block tasks wait for it (its value is not used); no stored chunk is read
        before it is done.
    """
    t = int(t)
    tb = np.concatenate([[0], np.cumsum(labels.chunks[0])]).astype(np.int64)
    tc = int(np.searchsorted(tb, t, side="right") - 1)
    spatial = labels.chunks[1:]
    bounds = tuple(np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in spatial)
    reads = ChunkReads(labels)
    gate_ref = TaskRef(gate.key) if gate is not None else None
    tok = tokenize(labels.name, t, gate.key if gate is not None else None)
    bits_n, mask_n = f"frame-mask-bits-{tok}", f"frame-mask-{tok}"
    dsk: dict = {}
    refs = []
    for i, idx in enumerate(np.ndindex(*(len(c) for c in spatial))):   # raster block order
        key = (bits_n, i)
        dsk[key] = Task(key, _block_bits, reads.node((labels.name, tc) + tuple(idx)), t - int(tb[tc]), gate_ref)
        refs.append(TaskRef(key))
    dsk[mask_n] = Task(mask_n, _gather, bounds, *refs)
    deps = [labels] if gate is None else [labels, gate]
    graph = HighLevelGraph.from_collections(mask_n, dsk, dependencies=deps)
    return Delayed(mask_n, graph)
