"""Flow rows of one frame pair split per block for the object vote.

A voxel of frame ``t`` moves by its nearest flow row (any distance). For a block,
the rows that can be nearest to some voxel of its source box are those within
``U`` of the box, ``U`` being the distance from the box's centre to its nearest row
plus the box's half diagonal (no voxel of the box is farther than ``U`` from that
row). :func:`split_rows` keeps exactly these (and every row tied with them), so a
block's nearest row equals the whole table's (with the tie rule of
:func:`~dask_tracking.reassign.nearest.nearest_index`: the row listed first).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..dataset import InputError

__all__ = ["check_bound", "split_rows"]


def check_bound(rows: np.ndarray, ndim: int, bound: Sequence[float], pair: int) -> None:
    """Raise InputError if a row's vector exceeds ``bound`` (voxels per axis)."""
    if len(rows) == 0:
        return
    vec = np.abs(rows[:, 1 + ndim:1 + 2 * ndim])
    b = np.asarray(bound, dtype=np.float64)
    over = vec > b * (1 + 1e-9) + 1e-9
    if over.any():
        i, a = (int(x) for x in np.argwhere(over)[0])
        raise InputError(
            f"flow row {i} of pair {pair} moves {float(vec[i, a]):.6g} voxels along spatial axis {a}, "
            f"beyond the object vote's bound of {float(b[a]):.6g} voxels on that axis "
            f"(bound per axis {tuple(round(float(x), 6) for x in b)} voxels, from the flow's "
            f"gate_radius_um or max_displacement_um); pass a larger max_displacement_um")


def split_rows(rows: Any, boxes: Sequence[tuple[Sequence[int], Sequence[int]]], spacing: Sequence[float],
               ndim: int, bound: Sequence[float], pair: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows of one pair for each source box.

    Parameters
    ----------
    rows : (n, 2d+2) array_like
        Flow rows of the pair (Nellie layout).
    boxes : sequence of (lo, hi)
        Source boxes, voxel coordinates, ``hi`` exclusive.
    spacing : sequence of float
        Voxel size, um.
    ndim : {2, 3}
    bound : sequence of float
        Bound on the vectors per axis, voxels (checked: InputError beyond it).
    pair : int
        The pair's frame ``t`` (for the error text).

    Returns
    -------
    list of (rows, index)
        Per box the rows that may be nearest to one of its voxels and their indices in ``rows``.
    """
    from scipy.spatial import cKDTree

    r = np.asarray(rows, dtype=np.float64).reshape(-1, 2 * ndim + 2)
    check_bound(r, ndim, bound, pair)
    empty = (np.zeros((0, 2 * ndim + 2)), np.zeros(0, np.int64))
    if len(r) == 0:
        return [empty for _ in boxes]
    s = np.asarray(spacing, dtype=np.float64)
    start = r[:, 1:1 + ndim] * s
    tree = cKDTree(start)
    out = []
    for lo, hi in boxes:
        a = np.asarray(lo, dtype=np.float64) * s
        c = (np.asarray(hi, dtype=np.float64) - 1) * s
        if np.any(c < a):
            out.append(empty)
            continue
        centre = (a + c) / 2
        half = float(np.linalg.norm((c - a) / 2))
        d0, _ = tree.query(centre, k=1)
        reach = (float(d0) + half) * (1 + 1e-9) + 1e-9
        idx = np.asarray(tree.query_ball_point(centre, reach + half), dtype=np.int64)
        if len(idx):
            gap = np.maximum(np.maximum(a - start[idx], start[idx] - c), 0)
            idx = np.sort(idx[np.linalg.norm(gap, axis=1) <= reach])
        out.append((r[idx], idx))
    return out
