"""A hard synthetic scenario: close pairs, fast curved motion, rotation, noise and bleaching.

:func:`synthetic_hard` draws pairs of objects (two bent tubes, or a tube and a
blob) that move as one rigid body with a surface gap of about ``gap_um``
(0.25 um by default) between them, so their segmentations come within a few
in-plane voxels of each other. Each pair runs on a tight circle (up to
``speed_um`` = 1 um per frame, i.e. about 15 in-plane voxels at the default
0.0655 um) and turns by several degrees per frame. The signal to noise is
lower than in :func:`~dask_tracking.datasets.synthetic` and the intensity
bleaches by ``bleach`` per frame (the absolute noise stays constant).

The ground truth is the same :class:`~dask_tracking.datasets.SyntheticTruth`
as for the easy movie: ``truth.objects`` (ids consistent through time) and
``truth.position`` (rigid motion of any material point).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import dask
import dask.array as da
import numpy as np

from ..dataset import InputError, TrackingDataset
from ._geometry import BLOB, TUBE, ObjectSet
from ._placement import _grid
from ._render import FRAME_OUTPUTS, RenderParams, render_frame
from .synthetic import _check_int, _check_positive_tuple, _check_real, assemble_dataset

__all__ = ["synthetic_hard", "OffsetObjectSet", "HARD_SHAPE", "HARD_SPACING"]

#: Default spatial shape (Z, Y, X) of the hard scenario, voxels.
HARD_SHAPE = (12, 160, 224)
#: Default voxel size (Z, Y, X) of the hard scenario, um (like the yeast sample).
HARD_SPACING = (0.25, 0.0655, 0.0655)


@dataclass(frozen=True, eq=False)
class OffsetObjectSet(ObjectSet):
    """:class:`ObjectSet` whose shapes sit at a fixed offset from their body origin.

    Two objects with the same motion parameters and different offsets move as
    one rigid body (a pair keeps its gap while it turns).

    Attributes
    ----------
    offset : (K, d) float
        Body-frame position of each shape's own origin, um.
    """

    offset: np.ndarray | None = None

    def _off(self, k: int) -> np.ndarray:
        return np.zeros(self.ndim) if self.offset is None else self.offset[k]

    def bound(self) -> np.ndarray:
        extra = 0.0 if self.offset is None else np.linalg.norm(self.offset, axis=1)
        return super().bound() + extra

    def to_body(self, k: int, p: np.ndarray, t: float) -> np.ndarray:
        return super().to_body(k, p, t) - self._off(k)

    def to_world(self, k: int, b: np.ndarray, t: float) -> np.ndarray:
        return super().to_world(k, b + self._off(k), t)


def _surface_gap(g: ObjectSet, a: int, b: int) -> float:
    """Smallest surface distance between objects ``a`` and ``b`` at frame 0, um (sampled)."""
    rng = np.random.default_rng(0)
    lo = np.minimum(g.center(0.0)[a], g.center(0.0)[b]) - g.bound()[[a, b]].max()
    hi = np.maximum(g.center(0.0)[a], g.center(0.0)[b]) + g.bound()[[a, b]].max()
    p = rng.uniform(lo, hi, size=(40000, g.ndim))
    sa = g.sdf(a, g.to_body(a, p, 0.0))[0]
    sb = g.sdf(b, g.to_body(b, p, 0.0))[0]
    # a point on a's surface (|sa| small) has distance sb to b's surface
    near = np.abs(sa) < 0.01
    return float(sb[near].min()) if near.any() else float("inf")


def _place_pairs(rng: np.random.Generator, *, shape: tuple[int, ...], spacing: tuple[float, ...],
                 n_pairs: int, gap_um: float, step_um: float, spin_rad: float,
                 bend: float, z_motion_um: float) -> OffsetObjectSet:
    ndim = len(shape)
    ey, ex = shape[-2] * spacing[-2], shape[-1] * spacing[-1]
    rows, cols = _grid(n_pairs, ey, ex)
    cy, cx = ey / rows, ex / cols
    room = min(cy, cx) / 2.0 - 0.2                  # ball per cell, 0.4 um between cells
    steps = step_um * rng.uniform(0.5, 1.0, n_pairs)
    # circle radius so that the chord of one frame is the step with <= 0.8 rad per frame
    orbit = np.maximum(steps / (2.0 * math.sin(0.4)), 0.2)
    pair_bound = room - orbit
    if np.any(pair_bound < 0.6):
        raise InputError(
            f"shape {tuple(shape)} is too small for n_pairs={n_pairs} with speed_um={step_um:g}: each "
            f"pair needs a cell of about {2 * (orbit.max() + 0.8) / spacing[-1]:.0f} in-plane voxels; "
            "allowed: a larger shape, fewer pairs or a smaller speed_um"
        )
    k = 2 * n_pairs
    kind = np.full(k, TUBE)
    kind[1::2] = np.where(rng.uniform(size=n_pairs) < 0.3, BLOB, TUBE)
    radius = rng.uniform(0.14, 0.2, k)
    half_length = np.repeat(np.minimum(rng.uniform(0.6, 0.9, n_pairs), 0.8 * pair_bound - 0.3), 2)
    bends = np.repeat(rng.uniform(0.5, 1.0, n_pairs) * bend, 2) * half_length
    blob = kind == BLOB
    half_length[blob] *= 0.6
    radius[blob] = rng.uniform(0.25, 0.32, blob.sum())
    zsemi = np.where(blob, np.minimum(radius, 0.3), 0.0)
    bends = np.where(blob, zsemi, bends)

    cells = np.sort(rng.permutation(rows * cols)[:n_pairs])
    r_idx, c_idx = np.divmod(cells, cols)
    yc = (r_idx + 0.5) * cy - spacing[-2] / 2.0
    xc = (c_idx + 0.5) * cx - spacing[-1] / 2.0
    if ndim == 3:
        zc = np.full(n_pairs, shape[0] * spacing[0] / 2.0 - spacing[0] / 2.0)
        center = np.stack([zc, yc, xc], axis=1)
        z_amp = np.full(n_pairs, min(z_motion_um, 0.1 * shape[0] * spacing[0]))
    else:
        center = np.stack([yc, xc], axis=1)
        z_amp = np.zeros(n_pairs)
    rate = 2.0 * np.arcsin(np.minimum(steps / (2.0 * orbit), 1.0)) * rng.choice([-1.0, 1.0], n_pairs)
    spin = spin_rad * rng.uniform(0.6, 1.0, n_pairs) * rng.choice([-1.0, 1.0], n_pairs)

    def rep(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, 2, axis=0)

    offset = np.zeros((k, ndim))
    g = OffsetObjectSet(
        ndim=ndim, kind=kind, orbit_center=rep(center), orbit=rep(orbit),
        phase0=rep(rng.uniform(0, 2 * np.pi, n_pairs)), orbit_rate=rep(rate), z_amplitude=rep(z_amp),
        theta0=rep(rng.uniform(0, 2 * np.pi, n_pairs)), spin=rep(spin), tilt=np.zeros(k),
        half_length=half_length, radius=radius, bend=bends, piece_um=1.0, offset=offset,
    )
    # side by side along body Y: set the offsets so the sampled surface gap is gap_um
    for p in range(n_pairs):
        a, b = 2 * p, 2 * p + 1
        d = radius[a] + radius[b] + gap_um + (0.5 * bends[a] if kind[b] == BLOB else 0.0)
        for _ in range(4):
            offset[a, -2], offset[b, -2] = d / 2.0, -d / 2.0
            d += gap_um - _surface_gap(g, a, b)
        offset[a, -2], offset[b, -2] = d / 2.0, -d / 2.0
    return g


def _render_hard(objects: ObjectSet, t: int, params: RenderParams, bleach: float) -> dict[str, np.ndarray]:
    """:func:`render_frame` with the signal scaled by ``(1 - bleach) ** t`` (constant absolute noise)."""
    f = (1.0 - bleach) ** t
    p = dataclasses.replace(params, amplitude=params.amplitude * f, noise=params.noise / f)
    out = render_frame(objects, t, p)
    out["preprocessed"] = (out["preprocessed"] * np.float32(f)).astype(np.float32)
    return out


def synthetic_hard(
    n_frames: int = 20,
    *,
    ndim: int = 3,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    dt: float = 1.0,
    n_pairs: int = 6,
    gap_um: float = 0.25,
    speed_um: float = 1.0,
    rotation_deg: float = 6.0,
    bend: float = 0.35,
    noise: float = 0.12,
    bleach: float = 0.01,
    blur_um: float | Sequence[float] | None = None,
    seed: int = 0,
    chunks: Any = None,
    marker_spacing_um: float = 0.3,
    z_motion_um: float = 0.0,
) -> TrackingDataset:
    """A seeded hard synthetic movie: close pairs, fast curved motion, rotation, bleaching.

    Parameters
    ----------
    n_frames : int
        Number of frames T (>= 2).
    ndim : {2, 3}
        Spatial axes.
    shape : tuple of int, optional
        Spatial shape, voxels; default :data:`HARD_SHAPE` (3D) or its last two axes (2D).
    spacing : tuple of float, optional
        Voxel size, um; default :data:`HARD_SPACING` (0.25 / 0.0655 / 0.0655 um).
    dt : float
        Frame interval, s.
    n_pairs : int
        Number of object pairs (2 * n_pairs objects), one pair per grid cell.
    gap_um : float
        Surface gap between the two objects of a pair, um.
    speed_um : float
        Largest translation per frame, um (each pair draws 0.5-1 times it).
    rotation_deg : float
        Largest rotation per frame about Z, degrees (each pair 0.6-1 times it, either sign).
    bend : float
        Sagitta of the tubes' centre line as a fraction of their half length (up to).
    noise : float
        Noise standard deviation as a fraction of the frame-0 object intensity.
    bleach : float
        Fractional loss of signal per frame, in [0, 1).
    blur_um : float or tuple, optional
        Gaussian blur sigma, um; default one in-plane voxel.
    seed : int
        Seed (>= 0).
    chunks : tuple, optional
        Spatial chunks; default whole frames.
    marker_spacing_um : float
        Smallest distance between two markers, um.
    z_motion_um : float
        3D: amplitude of a Z oscillation of the pairs, um (capped at 10% of the Z extent).
        Default 0: with the default blur (one in-plane voxel on every axis) a sub-slice
        Z motion barely changes the rendered data, so no method could measure it.

    Returns
    -------
    TrackingDataset
        Lazy (one task per frame), ``truth`` a :class:`SyntheticTruth`.

    Raises
    ------
    InputError
        For any bad argument, before any work.

    Examples
    --------
    >>> from dask_tracking.datasets import synthetic_hard
    >>> ds = synthetic_hard(n_frames=4, n_pairs=2, shape=(10, 96, 160))
    >>> ds.truth.n_objects
    4
    """
    if ndim not in (2, 3) or isinstance(ndim, bool):
        raise InputError(f"ndim must be 2 or 3, got {ndim!r}")
    n_frames = _check_int("n_frames", n_frames, 2)
    dshape = HARD_SHAPE if ndim == 3 else HARD_SHAPE[1:]
    dspacing = HARD_SPACING if ndim == 3 else HARD_SPACING[1:]
    shape = _check_positive_tuple("shape", dshape if shape is None else shape, ndim, integer=True)
    spacing = _check_positive_tuple("spacing", dspacing if spacing is None else spacing, ndim,
                                    integer=False)
    dt = _check_real("dt", dt, strict=True)
    n_pairs = _check_int("n_pairs", n_pairs, 1)
    gap_um = _check_real("gap_um", gap_um, strict=True)
    speed_um = _check_real("speed_um", speed_um)
    rotation_deg = _check_real("rotation_deg", rotation_deg)
    bend = _check_real("bend", bend)
    noise = _check_real("noise", noise)
    bleach = _check_real("bleach", bleach)
    if bleach >= 1.0:
        raise InputError(f"bleach must be in [0, 1), got {bleach!r}")
    s = min(spacing[-2:])
    blur_um = _check_positive_tuple("blur_um", (s,) * ndim if blur_um is None else blur_um, ndim,
                                    integer=False, allow_zero=True)
    seed = _check_int("seed", seed, 0)
    marker_spacing_um = _check_real("marker_spacing_um", marker_spacing_um, strict=True)
    z_motion_um = _check_real("z_motion_um", z_motion_um)

    rng = np.random.default_rng([seed, 11])
    geometry = _place_pairs(rng, shape=shape, spacing=spacing, n_pairs=n_pairs, gap_um=gap_um,
                            step_um=speed_um, spin_rad=math.radians(rotation_deg), bend=bend,
                            z_motion_um=z_motion_um)
    params = RenderParams(shape=shape, spacing=spacing, blur_um=blur_um, noise=noise,
                          marker_spacing_um=marker_spacing_um, seed=seed)
    token = dask.base.tokenize("hard", ndim, n_frames, shape, spacing, dt, n_pairs, gap_um, speed_um,
                               rotation_deg, bend, noise, bleach, blur_um, seed, marker_spacing_um,
                               z_motion_um)
    render = dask.delayed(_render_hard, pure=True)
    frames = [render(geometry, t, params, bleach, dask_key_name=f"synthetic-hard-frame-{token}-{t}")
              for t in range(n_frames)]
    arrays = {}
    for name, dtype in FRAME_OUTPUTS.items():
        parts = [da.from_delayed(f[name], shape=shape, dtype=dtype,
                                 name=f"synthetic-hard-{name}-{token}-{t}") for t, f in enumerate(frames)]
        arrays[name] = da.stack(parts, axis=0)
    source = (f"synthetic_hard(n_frames={n_frames}, ndim={ndim}, shape={shape}, n_pairs={n_pairs}, "
              f"seed={seed})")
    return assemble_dataset(arrays, geometry, tuple(spacing), dt, n_frames, source, chunks)
