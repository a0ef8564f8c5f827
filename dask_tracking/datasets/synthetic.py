"""Seeded synthetic organelle movies with known motion (2D and 3D).

:func:`synthetic` returns a lazy :class:`~dask_tracking.dataset.TrackingDataset`
(one dask task renders one frame) whose six inputs are derived by this package
from a known scene, plus the ground truth on ``ds.truth``
(:class:`SyntheticTruth`): object ids consistent through time and the true
position of any material point at any frame. :func:`write_synthetic_zarr`
writes a movie of any size frame by frame to our zarr layout.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import dask
import dask.array as da
import numpy as np

from ..dataset import InputError, Scale, TrackingDataset
from ._geometry import TUBE, ObjectSet
from ._placement import place_objects
from ._render import FRAME_OUTPUTS, RenderParams, render_frame

__all__ = ["synthetic", "write_synthetic_zarr", "SyntheticTruth", "DEFAULT_SHAPE", "DEFAULT_SPACING"]

#: Default spatial shape (voxels) per number of spatial axes.
DEFAULT_SHAPE = {3: (12, 96, 128), 2: (128, 128)}
#: Default voxel size (um) per number of spatial axes.
DEFAULT_SPACING = {3: (0.25, 0.1, 0.1), 2: (0.1, 0.1)}
KINDS = ("tube", "blob")


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """Ground truth of a synthetic movie.

    Attributes
    ----------
    objects : dask.array.Array
        int32, shape (T, Z, Y, X) or (T, Y, X): true object ids 1..K, the same id for
        the same object in every frame, 0 background.
    geometry : ObjectSet
        Shapes and motion parameters of the K objects (um, rad, per frame).
    spacing : tuple of float
        Voxel size, um.
    dt : float
        Frame interval, s.
    n_frames : int
    """

    objects: da.Array
    geometry: ObjectSet
    spacing: tuple[float, ...]
    dt: float
    n_frames: int

    @property
    def n_objects(self) -> int:
        return len(self.geometry)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Kind of each object, ``"tube"`` or ``"blob"``, in id order (id = index + 1)."""
        return tuple("tube" if k == TUBE else "blob" for k in self.geometry.kind)

    def centers(self, t: float) -> np.ndarray:
        """(K, d) body-origin positions of the objects at frame ``t``, in voxels."""
        return self.geometry.center(t) / np.asarray(self.spacing)

    def velocity(self, t: float) -> np.ndarray:
        """(K, d) centre displacement from frame ``t`` to ``t + 1``, in voxels."""
        return self.centers(t + 1) - self.centers(t)

    def rotation_per_frame_deg(self) -> np.ndarray:
        """(K,) rotation about the Z axis between consecutive frames, degrees (signed)."""
        return np.degrees(self.geometry.spin)

    def _coords(self, coords: Any) -> np.ndarray:
        c = np.asarray(coords, dtype=np.float64)
        d = len(self.spacing)
        if c.ndim == 1 and c.size == d:
            c = c[None, :]
        if c.ndim != 2 or c.shape[1] != d:
            raise InputError(
                f"coords must have shape (N, {d}) (voxel coordinates {'ZYX' if d == 3 else 'YX'}), "
                f"got {c.shape}"
            )
        return c

    def object_at(self, coords: Any, t: float, *, nearest: bool = False) -> np.ndarray:
        """(N,) id of the object containing each point at frame ``t`` (0 outside).

        With ``nearest=True`` a point outside every object gets the id of the object
        with the smallest signed distance (the object it is closest to).
        """
        c = self._coords(coords)
        out = np.zeros(len(c), np.int32)
        batch = 1 << 16
        for i in range(0, len(c), batch):
            sdf = self._sdf(c[i:i + batch] * np.asarray(self.spacing), t)
            best = sdf.argmin(axis=1)
            ids = best.astype(np.int32) + 1
            if not nearest:
                ids[sdf[np.arange(len(best)), best] > 0] = 0
            out[i:i + batch] = ids
        return out

    def _sdf(self, p: np.ndarray, t: float) -> np.ndarray:
        g = self.geometry
        return np.stack([g.sdf(k, g.to_body(k, p, t))[0] for k in range(len(g))], axis=1)

    def position(self, coords: Any, t_from: float, t_to: float) -> np.ndarray:
        """True positions at frame ``t_to`` of material points given at frame ``t_from``.

        Each point moves rigidly with the object it lies in at ``t_from``, or with the
        nearest object (smallest signed distance) if it lies in none.

        Parameters
        ----------
        coords : (N, d) array_like
            Voxel coordinates (z, y, x) or (y, x) at frame ``t_from``.
        t_from, t_to : float
            Frame indices (any real numbers).

        Returns
        -------
        (N, d) float64
            Voxel coordinates at frame ``t_to``.
        """
        c = self._coords(coords)
        s = np.asarray(self.spacing)
        p = c * s
        k_of = self.object_at(c, t_from, nearest=True) - 1
        out = np.empty_like(p)
        g = self.geometry
        for k in np.unique(k_of):
            sel = k_of == k
            out[sel] = g.to_world(k, g.to_body(k, p[sel], t_from), t_to)
        return out / s

    def displacement(self, coords: Any, t: float) -> np.ndarray:
        """(N, d) true displacement in voxels from frame ``t`` to ``t + 1`` of points at frame ``t``."""
        c = self._coords(coords)
        return self.position(c, t, t + 1) - c


# --------------------------------------------------------------------- checks
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive_tuple(name: str, value: Any, ndim: int, *, integer: bool,
                          allow_zero: bool = False) -> tuple:
    if value is None:
        raise InputError(f"{name} is required")
    if isinstance(value, numbers.Number):
        value = (value,) * ndim
    try:
        vals = tuple(value)
    except TypeError:
        raise InputError(f"{name} must be a sequence of {ndim} numbers, got {value!r}") from None
    if len(vals) != ndim:
        raise InputError(
            f"{name} must have {ndim} entries ({'Z, Y, X' if ndim == 3 else 'Y, X'}) for ndim={ndim}, "
            f"got {vals!r}"
        )
    ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
             and (v >= 0 if allow_zero else v > 0) for v in vals)
    if integer:
        ok = ok and all(isinstance(v, numbers.Integral) for v in vals)
    if not ok:
        what = "positive integers" if integer else (
            "non-negative finite numbers" if allow_zero else "positive finite numbers")
        raise InputError(f"{name} must hold {what}, got {vals!r}")
    return tuple(int(v) for v in vals) if integer else tuple(float(v) for v in vals)


def _check_real(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        rel = ">" if strict else ">="
        raise InputError(f"{name} must be a finite number {rel} {minimum:g}, got {value!r}")
    return float(value)


# ------------------------------------------------------------------- public
def synthetic(
    ndim: int = 3,
    n_frames: int = 8,
    *,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    dt: float = 1.0,
    n_objects: int = 6,
    kinds: Sequence[str] = KINDS,
    speed_um: float | None = None,
    rotation_deg: float | None = None,
    noise: float = 0.03,
    blur_um: float | Sequence[float] | None = None,
    seed: int = 0,
    chunks: Any = None,
    piece_um: float = 1.0,
    marker_spacing_um: float = 0.4,
    z_speed_fraction: float = 0.2,
) -> TrackingDataset:
    """A seeded synthetic movie of tubes and blobs moving rigidly, with its ground truth.

    Each object follows a circular path in the Y/X plane at constant speed (in 3D
    also a small Z oscillation) and turns about the Z axis at a constant rate;
    objects are placed one per grid cell so they never touch. Frames are rendered
    lazily, one dask task per frame (shared by the six volumes and the truth).

    The six inputs are derived from the rendered object mask, the way Nellie's
    own stages shape them:

    * ``raw`` uint16: ``100 + 1000 * preprocessed + N(0, (1000 * noise)^2)``,
      rounded and clipped to >= 1 (the background stays > 0);
    * ``preprocessed`` float32 in [0, 1]: the object mask blurred with a Gaussian
      of sigma ``blur_um`` (noise-free smoothed intensity, high on the tubes);
    * ``labels`` int32: 3^d connected components of the mask, ids in raster order
      per frame (not consistent through time, as in Nellie);
    * ``distance`` float32: Euclidean distance transform of the mask in voxel units
      (isotropic, ignores the Z spacing), clamped to ``2 * 1 um / spacing_x``;
    * ``markers`` uint8: 1 at maxima of the distance along each object's ridge,
      greedily thinned (largest distance first) to at least ``marker_spacing_um``
      apart: a few per object;
    * ``branches`` uint32: each object cut along its body axis into pieces of about
      ``piece_um``, ids in raster order of first appearance per frame; its mask
      equals the labels' mask.

    Parameters
    ----------
    ndim : {2, 3}
        Number of spatial axes.
    n_frames : int
        Number of frames T (>= 2).
    shape : tuple of int, optional
        Spatial shape in voxels, (Z, Y, X) or (Y, X). Default (12, 96, 128) in 3D,
        (128, 128) in 2D.
    spacing : float or tuple of float, optional
        Voxel size in um. Default (0.25, 0.1, 0.1) in 3D, (0.1, 0.1) in 2D.
    dt : float
        Frame interval in seconds.
    n_objects : int
        Number of objects K (ids 1..K in ``truth.objects``).
    kinds : sequence of {"tube", "blob"}
        Kinds to draw, used in turn (then shuffled).
    speed_um : float, optional
        Typical translation speed in um/s; each object moves ``0.75-1.25 * speed_um * dt``
        um per frame. Default: 1.5 in-plane voxels per frame.
    rotation_deg : float, optional
        Largest rotation per frame about the Z axis, degrees (each object 0.5-1 times
        it, either sign). Default 3.
    noise : float
        Noise standard deviation as a fraction of the object intensity (>= 0).
    blur_um : float or tuple of float, optional
        Gaussian sigma of the blur, um (per axis or one for all). Default: one
        in-plane voxel on every axis.
    seed : int
        Seed (>= 0); the same seed gives identical arrays.
    chunks : tuple, optional
        Spatial chunks (T is one frame per chunk); default whole frames.
    piece_um : float
        Target branch piece length, um.
    marker_spacing_um : float
        Smallest distance between two markers, um.
    z_speed_fraction : float
        3D only: amplitude of the Z oscillation relative to the orbit radius.

    Returns
    -------
    TrackingDataset
        Lazy, with ``source="synthetic(...)"`` and ``truth`` a :class:`SyntheticTruth`.

    Raises
    ------
    InputError
        For any bad argument, before any work.

    Examples
    --------
    >>> from dask_tracking.datasets import synthetic
    >>> ds = synthetic(ndim=2, n_frames=4, seed=1)
    >>> ds.shape
    (4, 128, 128)
    >>> d = ds.truth.displacement([[64.0, 64.0]], t=0)   # voxels, frame 0 -> 1
    """
    if ndim not in (2, 3) or isinstance(ndim, bool):
        raise InputError(f"ndim must be 2 or 3, got {ndim!r}")
    n_frames = _check_int("n_frames", n_frames, 2)
    shape = _check_positive_tuple("shape", DEFAULT_SHAPE[ndim] if shape is None else shape, ndim,
                                  integer=True)
    spacing = _check_positive_tuple("spacing", DEFAULT_SPACING[ndim] if spacing is None else spacing,
                                    ndim, integer=False)
    dt = _check_real("dt", dt, strict=True)
    n_objects = _check_int("n_objects", n_objects, 1)
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise InputError(f"kinds must be a non-empty sequence of 'tube' and/or 'blob', got {kinds!r}")
    s = min(spacing[-2:])
    speed_um = 1.5 * s / dt if speed_um is None else _check_real("speed_um", speed_um)
    rotation_deg = 3.0 if rotation_deg is None else _check_real("rotation_deg", rotation_deg)
    noise = _check_real("noise", noise)
    if blur_um is None:
        blur_um = (s,) * ndim
    blur_um = _check_positive_tuple("blur_um", blur_um, ndim, integer=False, allow_zero=True)
    seed = _check_int("seed", seed, 0)
    piece_um = _check_real("piece_um", piece_um, strict=True)
    marker_spacing_um = _check_real("marker_spacing_um", marker_spacing_um, strict=True)
    z_speed_fraction = _check_real("z_speed_fraction", z_speed_fraction)

    rng = np.random.default_rng(seed)
    geometry = place_objects(
        rng, shape=shape, spacing=spacing, n_objects=n_objects, kinds=kinds,
        step_um=speed_um * dt, spin_rad=math.radians(rotation_deg), piece_um=piece_um,
        z_speed_fraction=z_speed_fraction,
    )
    params = RenderParams(shape=shape, spacing=spacing, blur_um=blur_um, noise=noise,
                          marker_spacing_um=marker_spacing_um, seed=seed)
    token = dask.base.tokenize(ndim, n_frames, shape, spacing, dt, n_objects, kinds, speed_um,
                               rotation_deg, noise, blur_um, seed, piece_um, marker_spacing_um,
                               z_speed_fraction)
    arrays = _lazy_frames(geometry, params, n_frames, token)
    source = (f"synthetic(ndim={ndim}, n_frames={n_frames}, shape={shape}, spacing={spacing}, "
              f"dt={dt:g}, n_objects={n_objects}, seed={seed})")
    return assemble_dataset(arrays, geometry, spacing, dt, n_frames, source, chunks)


def assemble_dataset(arrays: dict[str, da.Array], geometry: ObjectSet, spacing: tuple[float, ...],
                     dt: float, n_frames: int, source: str, chunks: Any = None) -> TrackingDataset:
    """The TrackingDataset of rendered lazy volumes, with its truth (``arrays["objects"]``).

    ``arrays`` holds the six inputs and ``objects`` (ids consistent through time); ``chunks``
    rechunks the spatial axes of the inputs and of the truth alike.
    """
    ndim = len(spacing)
    scale = Scale(t=dt, y=spacing[-2], x=spacing[-1], z=spacing[0] if ndim == 3 else None)
    truth = SyntheticTruth(objects=arrays.pop("objects"), geometry=geometry, spacing=spacing,
                           dt=dt, n_frames=n_frames)
    ds = TrackingDataset.from_arrays(arrays, scale, axes="TZYX" if ndim == 3 else "TYX",
                                     source=source, truth=truth)
    if chunks is not None:
        ds = ds.rechunk(chunks)
        ds = ds.replace(truth=SyntheticTruth(
            objects=truth.objects.rechunk((1,) + tuple(ds.labels.chunks[1:])), geometry=geometry,
            spacing=spacing, dt=dt, n_frames=n_frames))
    return ds


def _lazy_frames(geometry: ObjectSet, params: RenderParams, n_frames: int,
                 token: str) -> dict[str, da.Array]:
    """Seven lazy (T, ...) arrays sharing one render task per frame."""
    render = dask.delayed(render_frame, pure=True)
    frames = [render(geometry, t, params, dask_key_name=f"synthetic-frame-{token}-{t}")
              for t in range(n_frames)]
    shape = tuple(params.shape)
    out = {}
    for name, dtype in FRAME_OUTPUTS.items():
        parts = [da.from_delayed(f[name], shape=shape, dtype=dtype, name=f"synthetic-{name}-{token}-{t}")
                 for t, f in enumerate(frames)]
        out[name] = da.stack(parts, axis=0)
    return out


def write_synthetic_zarr(
    path: str | Path,
    n_frames: int,
    shape: Sequence[int],
    *,
    overwrite: bool = False,
    include_truth: bool = False,
    num_workers: int | None = None,
    **kwargs: Any,
) -> TrackingDataset:
    """Write a synthetic movie frame by frame to our zarr layout, with bounded memory.

    Parameters
    ----------
    path : str or Path
        Output zarr v3 group (our layout: the six arrays, attrs ``axes``, ``scale``).
    n_frames : int
        Number of frames.
    shape : tuple of int
        Spatial shape, (Z, Y, X) for 3D or (Y, X) for 2D.
    overwrite : bool
        Replace an existing store.
    include_truth : bool
        Also write the true object ids as the array ``truth_objects``.
    num_workers : int, optional
        Threads of the local scheduler (ignored when a distributed client is active).
        Peak memory is about ``num_workers`` frames of all seven arrays plus temporaries.
    **kwargs
        Passed to :func:`synthetic` (``spacing``, ``n_objects``, ``seed`` ...); the
        keywords are stored in the group attribute ``synthetic`` so that
        ``synthetic(**attrs["synthetic"])`` rebuilds the truth.

    Returns
    -------
    TrackingDataset
        The written store, opened lazily, with ``truth`` attached.
    """
    from ..io.zarr_layout import write_tracking_zarr

    shape = tuple(shape)
    ds = synthetic(len(shape), n_frames, shape=shape, **kwargs)
    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(f"path {str(p)!r} exists; pass overwrite=True to replace it")
    store = write_tracking_zarr(ds, p, overwrite=overwrite, compute=False)
    targets = [store]
    if include_truth:
        import zarr

        g = zarr.open_group(str(p), mode="r+")
        a = ds.truth.objects
        z = g.create_array("truth_objects", shape=a.shape, dtype=a.dtype,
                           chunks=tuple(c[0] for c in a.chunks), overwrite=True)
        z.attrs["axes"] = ds.axes
        targets.append(da.store(a, z, lock=False, compute=False))
    import zarr

    g = zarr.open_group(str(p), mode="r+")
    meta = {"ndim": len(shape), "n_frames": int(n_frames), "shape": list(shape)}
    meta.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()})
    g.attrs["synthetic"] = meta
    compute_kw = {} if num_workers is None else {"num_workers": num_workers}
    dask.compute(*targets, **compute_kw)
    from ..io.zarr_layout import read_tracking_zarr

    out = read_tracking_zarr(p)
    return out.replace(truth=ds.truth)
