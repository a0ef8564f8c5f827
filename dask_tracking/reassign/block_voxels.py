"""The labelled voxels of one block of one frame, kept sparse between the tasks.

Labelled voxels (object or branch id > 0) are a small part of a frame (about 1% on
the yeast sample), so the reassignment graph reads each input chunk once into a
:class:`BlockVoxels` and passes that on: the voxel lists, the candidates' regions, the
votes and the label chain then hold a few bytes per labelled voxel instead of whole
chunks or halo regions, and the input chunks are released as soon as they are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..backend import to_host
from ..blocks import in_box

__all__ = ["BlockVoxels", "block_voxels", "labels_at", "region_voxels"]


@dataclass(frozen=True)
class BlockVoxels:
    """Labelled voxels of one block (its core) of one frame.

    Attributes
    ----------
    shape : tuple of int
        The block's spatial shape.
    offset : tuple of int
        Frame coordinates of the block's first voxel.
    flat : (n,) int32 (int64 for blocks of 2**31 voxels or more)
        Raster index within the block of each voxel with ``objects > 0`` or
        ``branches > 0``, ascending.
    objects, branches : (n,) arrays
        The input ids at those voxels (input dtypes).
    max_objects, max_branches : int
        Largest id of each input chunk (0 for an empty chunk).
    """

    shape: tuple
    offset: tuple
    flat: np.ndarray
    objects: np.ndarray
    branches: np.ndarray
    max_objects: int
    max_branches: int

    def __len__(self) -> int:
        return int(len(self.flat))

    def coords(self) -> np.ndarray:
        """Frame coordinates of the voxels, (n, d) int64 in raster order."""
        nd = len(self.shape)
        if len(self.flat) == 0:
            return np.zeros((0, nd), dtype=np.int64)
        c = np.stack(np.unravel_index(self.flat, self.shape), axis=1).astype(np.int64)
        c += np.asarray(self.offset, dtype=np.int64)
        return c

    def frame_keys(self, frame_shape: Sequence[int]) -> np.ndarray:
        """Raster index of the voxels in the whole frame (``frame_shape``), (n,) int64, ascending."""
        if len(self.flat) == 0:
            return np.zeros(0, dtype=np.int64)
        loc = np.unravel_index(self.flat, self.shape)
        return np.ravel_multi_index(tuple(c + int(o) for c, o in zip(loc, self.offset)), tuple(frame_shape))

    def values(self, kind: str) -> np.ndarray:
        """Input ids of ``kind`` (``"obj"`` or ``"br"``) at the voxels."""
        return self.objects if kind == "obj" else self.branches

    def max_of(self, kind: str) -> int:
        return self.max_objects if kind == "obj" else self.max_branches

    def dense(self, kind: str, values: np.ndarray | None = None, dtype: Any = None) -> np.ndarray:
        """The block as an array: ``values`` (default the input ids of ``kind``) at the
        voxels, 0 elsewhere (where the input holds no positive id of either kind)."""
        v = self.values(kind) if values is None else values
        out = np.zeros(self.shape, dtype=dtype or v.dtype)
        out.reshape(-1)[self.flat] = v
        return out


def block_voxels(objects: Any, branches: Any, offset: Sequence[int]) -> BlockVoxels:
    """Read one input chunk pair ((1, ...) with its T axis, or spatial) into a :class:`BlockVoxels`."""
    o = np.asarray(to_host(objects))
    b = np.asarray(to_host(branches))
    if o.ndim == len(offset) + 1:
        o, b = o[0], b[0]
    flat = np.flatnonzero((o > 0) | (b > 0))
    # held between tasks (a frame's worth in flight): int32 wherever a block allows it
    flat = flat.astype(np.int32 if o.size < 2 ** 31 else np.int64)
    return BlockVoxels(tuple(int(n) for n in o.shape), tuple(int(v) for v in offset), flat,
                       o.reshape(-1)[flat], b.reshape(-1)[flat],
                       int(o.max()) if o.size else 0, int(b.max()) if b.size else 0)


def region_voxels(pieces: Sequence[BlockVoxels], lo: Sequence[int], hi: Sequence[int],
                  spatial_shape: Sequence[int], coords: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Frame coordinates of the labelled voxels inside the box ``[lo, hi)``, raster order.

    ``pieces`` are the blocks that overlap the box (each voxel in exactly one);
    ``coords``, if given, their :meth:`BlockVoxels.coords` already made.
    """
    nd = len(spatial_shape)
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    parts = []
    for c in (coords if coords is not None else (p.coords() for p in pieces)):
        if len(c):
            parts.append(c[in_box(c, lo, hi)])
    if not parts:
        return np.zeros((0, nd), dtype=np.int64)
    c = np.concatenate(parts)
    if len(parts) > 1 and len(c):
        c = c[np.argsort(np.ravel_multi_index(tuple(c.T), tuple(spatial_shape)), kind="stable")]
    return c


def labels_at(points: np.ndarray, pieces: Sequence[BlockVoxels], values: Sequence[np.ndarray]) -> np.ndarray:
    """The value carried by each point, 0 for a point that is not a voxel of ``pieces``.

    Parameters
    ----------
    points : (m, d) int64
        Frame coordinates.
    pieces : sequence of BlockVoxels
        Disjoint blocks (in the graph: the blocks of one chunk grid around a core).
    values : sequence of (n_k,) arrays
        One value per voxel of each piece (aligned with ``pieces[k].flat``).

    Returns
    -------
    (m,) int64
    """
    points = np.asarray(points, dtype=np.int64)
    out = np.zeros(len(points), dtype=np.int64)
    if len(points) == 0:
        return out
    which = _piece_of(points, pieces)
    if which is None:  # not a grid of blocks: test each piece
        for p, v in zip(pieces, values):
            if len(p):
                inside = np.flatnonzero(in_box(points - np.asarray(p.offset, dtype=np.int64), 0,
                                               np.asarray(p.shape)))
                _look_up(points, inside, p, v, out)
        return out
    order = np.argsort(which, kind="stable")
    cuts = np.searchsorted(which[order], np.arange(len(pieces) + 1))
    for k, (p, v) in enumerate(zip(pieces, values)):
        if len(p) and cuts[k + 1] > cuts[k]:
            _look_up(points, order[cuts[k]:cuts[k + 1]], p, v, out)
    return out


def _look_up(points: np.ndarray, rows: np.ndarray, p: BlockVoxels, v: np.ndarray, out: np.ndarray) -> None:
    """``out[rows]`` = the values of ``p``'s voxels at ``points[rows]`` (all inside ``p``'s box)."""
    if len(rows) == 0:
        return
    loc = points[rows] - np.asarray(p.offset, dtype=np.int64)
    f = np.ravel_multi_index(tuple(loc.T), p.shape).astype(p.flat.dtype, copy=False)  # inside the block
    pos = np.minimum(np.searchsorted(p.flat, f), len(p.flat) - 1)
    hit = p.flat[pos] == f
    out[rows[hit]] = np.asarray(v)[pos[hit]]


def _piece_of(points: np.ndarray, pieces: Sequence[BlockVoxels]) -> np.ndarray | None:
    """Index of the piece holding each point (``len(pieces)`` for none), or None when the
    pieces are not the blocks of one grid (each axis cut into disjoint intervals)."""
    nd = points.shape[1]
    if not pieces:
        return np.zeros(len(points), dtype=np.int64)
    axes, per_axis = [], []
    for a in range(nd):
        spans = sorted({(int(p.offset[a]), int(p.offset[a]) + int(p.shape[a])) for p in pieces})
        starts = np.array([s for s, _ in spans], dtype=np.int64)
        stops = np.array([e for _, e in spans], dtype=np.int64)
        if len(np.unique(starts)) != len(starts) or np.any(stops[:-1] > starts[1:]):
            return None
        axes.append((starts, stops))
        per_axis.append({s: i for i, s in enumerate(starts.tolist())})
    dims = tuple(len(s) for s, _ in axes)
    table = np.full(int(np.prod(dims)), len(pieces), dtype=np.int64)
    for k, p in enumerate(pieces):
        cell = np.ravel_multi_index(tuple(per_axis[a][int(p.offset[a])] for a in range(nd)), dims)
        if table[cell] != len(pieces):
            return None
        table[cell] = k
    idx = []
    ok = np.ones(len(points), dtype=bool)
    for a, (starts, stops) in enumerate(axes):
        i = np.searchsorted(starts, points[:, a], side="right") - 1
        ok &= i >= 0
        i = np.maximum(i, 0)
        ok &= points[:, a] < stops[i]
        idx.append(i)
    which = table[np.ravel_multi_index(tuple(idx), dims)]
    which[~ok] = len(pieces)
    return which
