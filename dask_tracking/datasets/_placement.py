"""Seeded placement of well-separated objects with room for their motion."""

from __future__ import annotations

import math

import numpy as np

from ..dataset import InputError
from ._geometry import BLOB, TUBE, ObjectSet

__all__ = ["place_objects"]


def _grid(n: int, extent_y: float, extent_x: float) -> tuple[int, int]:
    """Rows and columns of a grid with >= n cells, cells as square as possible."""
    best = None
    for rows in range(1, n + 1):
        cols = math.ceil(n / rows)
        side = min(extent_y / rows, extent_x / cols)
        if best is None or side > best[0] + 1e-12:
            best = (side, rows, cols)
    return best[1], best[2]


def place_objects(
    rng: np.random.Generator,
    *,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    n_objects: int,
    kinds: tuple[str, ...],
    step_um: float,
    spin_rad: float,
    piece_um: float,
    z_speed_fraction: float,
) -> ObjectSet:
    """Draw ``n_objects`` objects, one per grid cell, so that none ever touch.

    Each object keeps a ball of radius ``bound + orbit`` about its orbit centre
    inside its cell, with a gap of at least three in-plane voxels between cells,
    for every frame (the circular path and the rotation are bounded).

    Parameters
    ----------
    shape, spacing : tuple
        Spatial shape (voxels) and voxel size (um), (Z, Y, X) or (Y, X).
    step_um : float
        Typical translation per frame, um (each object draws 0.75-1.25 times it).
    spin_rad : float
        Largest rotation per frame, rad (each object draws 0.5-1 times it, random sign).

    Raises
    ------
    InputError
        If ``shape`` leaves too little room for ``n_objects`` objects.
    """
    ndim = len(shape)
    s = float(min(spacing[-2:]))                      # in-plane voxel size, um
    ey, ex = shape[-2] * spacing[-2], shape[-1] * spacing[-1]
    rows, cols = _grid(n_objects, ey, ex)
    cy, cx = ey / rows, ex / cols
    gap = 3.0 * s
    room = min(cy, cx) / 2.0 - gap / 2.0              # ball radius available per cell
    min_room = 6.0 * s
    if room < min_room:
        raise InputError(
            f"shape {tuple(shape)} is too small for n_objects={n_objects}: each object needs a "
            f"cell of at least {2 * (min_room + gap / 2) / s:.0f} x {2 * (min_room + gap / 2) / s:.0f} "
            "in-plane voxels; allowed: a larger shape or fewer objects"
        )
    cells = np.sort(rng.permutation(rows * cols)[:n_objects])
    k = n_objects
    kind_codes = np.array([{"tube": TUBE, "blob": BLOB}[kinds[i % len(kinds)]] for i in range(k)])
    kind = kind_codes[rng.permutation(k)]

    orbit = np.minimum(4.0 * s, 0.2 * room) * rng.uniform(0.8, 1.0, k)
    budget = room - orbit                              # what the body itself may occupy

    # z room: keep one voxel plus the z oscillation clear of the top and bottom faces
    if ndim == 3:
        sz = spacing[0]
        zroom = shape[0] * sz / 2.0 - sz
        if zroom < 2.0 * s - 1e-9:
            raise InputError(
                f"shape {tuple(shape)} has too few Z slices ({shape[0]}) for objects of radius "
                f"{2.0 * s:.3g} um at Z spacing {sz:g} um; allowed: at least "
                f"{math.ceil(2 * (2.0 * s + sz) / sz - 1e-9)} slices"
            )
        z_amp = np.minimum(z_speed_fraction * orbit, 0.25 * zroom)
    else:
        zroom = np.inf
        z_amp = np.zeros(k)

    radius = np.minimum(rng.uniform(2.5, 3.5, k) * s, budget / 3.0)
    half_length = rng.uniform(7.0, 12.0, k) * s
    bend = rng.uniform(0.0, 0.3, k) * half_length
    tilt = np.zeros(k)
    # blobs: half_length = semi-axis X, radius = semi-axis Y, bend = semi-axis Z (3D)
    blob = kind == BLOB
    half_length[blob] = rng.uniform(4.5, 7.0, blob.sum()) * s
    radius[blob] = rng.uniform(3.5, 5.5, blob.sum()) * s
    bend[blob] = 0.0
    # fit the in-plane size in the budget
    tube = ~blob
    fit = budget - radius - 1e-9
    scale_t = np.minimum(1.0, fit / np.hypot(half_length, bend))
    half_length[tube] *= scale_t[tube]
    bend[tube] *= scale_t[tube]
    half_length[blob] = np.minimum(half_length[blob], budget[blob])
    radius[blob] = np.minimum(radius[blob], budget[blob])
    if ndim == 3:
        zfree = zroom - z_amp
        radius[tube] = np.minimum(radius[tube], 0.8 * zfree[tube])
        room_tilt = np.clip((zfree - radius - bend) / np.maximum(half_length, 1e-9), 0.0, 1.0)
        tilt[tube] = np.arcsin(np.minimum(room_tilt[tube], math.sin(math.radians(12.0)))) \
            * rng.uniform(-1.0, 1.0, tube.sum())
        bend[blob] = np.minimum(radius[blob], zfree[blob])   # semi-axis Z

    # orbit centres: cell centres with a jitter that keeps the ball inside the cell
    r_idx, c_idx = np.divmod(cells, cols)
    ball = room
    jy = np.maximum(cy / 2.0 - gap / 2.0 - ball, 0.0) * rng.uniform(-1, 1, k)
    jx = np.maximum(cx / 2.0 - gap / 2.0 - ball, 0.0) * rng.uniform(-1, 1, k)
    yc = (r_idx + 0.5) * cy + jy
    xc = (c_idx + 0.5) * cx + jx
    if ndim == 3:
        zc = np.full(k, shape[0] * spacing[0] / 2.0 - spacing[0] / 2.0)
        center = np.stack([zc, yc, xc], axis=1)
    else:
        center = np.stack([yc, xc], axis=1)
    # voxel i sits at i * spacing: shift so the frame covers [0, (n - 1) * spacing]
    center[:, -2] -= spacing[-2] / 2.0
    center[:, -1] -= spacing[-1] / 2.0

    speed = step_um * rng.uniform(0.75, 1.25, k)
    orbit_rate = speed / orbit * rng.choice([-1.0, 1.0], k)
    spin = spin_rad * rng.uniform(0.5, 1.0, k) * rng.choice([-1.0, 1.0], k)
    return ObjectSet(
        ndim=ndim, kind=kind, orbit_center=center, orbit=orbit,
        phase0=rng.uniform(0, 2 * np.pi, k), orbit_rate=orbit_rate, z_amplitude=z_amp,
        theta0=rng.uniform(0, 2 * np.pi, k), spin=spin, tilt=tilt,
        half_length=half_length, radius=radius, bend=bend, piece_um=float(piece_um),
    )
