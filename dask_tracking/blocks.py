"""Spatial blocks with halos: the one place where halo depths are derived.

Stages that work per spatial block (marker features, voxel candidates) take the
block's *core* from the chunk grid of the input and read the core plus a halo.
Halo depths come from physical parameters through :func:`halo_voxels`, with
depth 0 on T (frames are separate tasks).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["Block", "halo_voxels", "in_box", "iter_blocks", "rows_max", "rows_min"]


def halo_voxels(radius_um: float, spacing: Sequence[float], extra_voxels: int = 0) -> tuple[int, ...]:
    """Halo depth in voxels per spatial axis covering ``radius_um`` micrometres.

    ``ceil(radius_um / spacing_a) + extra_voxels`` on every axis ``a``.
    """
    return tuple(int(math.ceil(float(radius_um) / float(s) - 1e-9)) + int(extra_voxels) for s in spacing)


@dataclass(frozen=True)
class Block:
    """One spatial block: its index in the chunk grid, core and halo-extended slices.

    ``core`` and ``outer`` are slices into the full frame; ``inner`` is the core
    expressed relative to ``outer`` (to cut the core out of a halo read).
    """

    index: tuple[int, ...]
    core: tuple[slice, ...]
    outer: tuple[slice, ...]

    @property
    def inner(self) -> tuple[slice, ...]:
        return tuple(slice(c.start - o.start, c.stop - o.start) for c, o in zip(self.core, self.outer))

    @property
    def offset(self) -> tuple[int, ...]:
        """Start of ``outer`` in frame coordinates."""
        return tuple(o.start for o in self.outer)


def iter_blocks(chunks: Sequence[Sequence[int]], depth: Sequence[int] | int = 0) -> Iterator[Block]:
    """Blocks of a spatial chunk grid (dask ``chunks`` without T), halo ``depth`` per axis."""
    nd = len(chunks)
    if isinstance(depth, int):
        depth = (depth,) * nd
    bounds = []
    for c in chunks:
        starts = [0]
        for n in c:
            starts.append(starts[-1] + int(n))
        bounds.append(starts)
    sizes = [b[-1] for b in bounds]
    for idx in itertools.product(*[range(len(c)) for c in chunks]):
        core = tuple(slice(bounds[a][i], bounds[a][i + 1]) for a, i in enumerate(idx))
        outer = tuple(
            slice(max(s.start - depth[a], 0), min(s.stop + depth[a], sizes[a])) for a, s in enumerate(core)
        )
        yield Block(tuple(idx), core, outer)


def in_box(coords: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    """Which rows of ``coords`` lie in the box ``[lo, hi)`` on every axis.

    The same as ``np.all((coords >= lo) & (coords < hi), axis=1)``, computed column by
    column: a reduction along a row of 2 or 3 values is several times slower in NumPy.

    Parameters
    ----------
    coords : (n, d) array
        Points (voxels, any real dtype).
    lo, hi : scalar or (d,) array
        Inclusive lower and exclusive upper corner.

    Returns
    -------
    (n,) bool
    """
    c = np.asarray(coords)
    n, d = c.shape
    lo = np.broadcast_to(np.asarray(lo), (d,))
    hi = np.broadcast_to(np.asarray(hi), (d,))
    if d == 0:
        return np.ones(n, dtype=bool)
    out = c[:, 0] >= lo[0]
    out &= c[:, 0] < hi[0]
    for k in range(1, d):
        out &= c[:, k] >= lo[k]
        out &= c[:, k] < hi[k]
    return out


def rows_min(a: np.ndarray) -> np.ndarray:
    """``np.min(a, axis=1)`` of an (n, d) array, column by column (same values, NaN propagated)."""
    return _fold_columns(a, np.minimum)


def rows_max(a: np.ndarray) -> np.ndarray:
    """``np.max(a, axis=1)`` of an (n, d) array, column by column (same values, NaN propagated)."""
    return _fold_columns(a, np.maximum)


def _fold_columns(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    a = np.asarray(a)
    out = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        op(out, a[:, k], out=out)
    return out
