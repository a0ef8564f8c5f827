"""Halo of a candidate block, from the flow and the scale (the one place it is derived)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..blocks import halo_voxels

__all__ = ["max_displacement", "candidate_halo"]


def max_displacement(rows: np.ndarray, ndim: int) -> tuple[float, ...]:
    """Largest absolute flow vector component per spatial axis, in voxels.

    Parameters
    ----------
    rows : (M, 2d+2) float64
        Flow rows of one frame pair (Nellie layout).
    ndim : {2, 3}

    Returns
    -------
    tuple of float, length ``ndim``
        0 on every axis when there are no rows. Interpolated vectors are convex
        combinations of these vectors, so no interpolated displacement is larger.
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2 * ndim + 2)
    if len(rows) == 0:
        return (0.0,) * ndim
    return tuple(float(v) for v in np.abs(rows[:, 1 + ndim:1 + 2 * ndim]).max(axis=0))


def candidate_halo(max_disp_voxels: Sequence[float], spacing: Sequence[float],
                   radius_um: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Halo depths (voxels per spatial axis) of the two frames read for one block.

    A target voxel in the block's core at frame t+1 can be matched from a source
    at frame t up to ``max displacement + radius`` away, and a forward prediction
    landing within ``radius`` of the core has every voxel nearer than its match
    within ``2 radius`` of the core. One voxel more absorbs float32 rounding.

    Parameters
    ----------
    max_disp_voxels : sequence of float
        Largest absolute displacement per axis, voxels (:func:`max_displacement`).
    spacing : sequence of float
        Voxel size per axis, um.
    radius_um : float
        Interpolation radius and error gate, um.

    Returns
    -------
    source_halo, target_halo : tuple of int
        Depth around the core read at frame t (sources) and at frame t+1 (targets).
    """
    base = halo_voxels(radius_um, spacing, extra_voxels=1)
    src = tuple(int(math.ceil(float(m) - 1e-9)) + b for m, b in zip(max_disp_voxels, base))
    tgt = halo_voxels(2.0 * float(radius_um), spacing, extra_voxels=1)
    return src, tgt
