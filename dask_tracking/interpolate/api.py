"""``interpolate_flow``: the flow at arbitrary voxel coordinates, lazily and in chunks."""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import dask
import dask.array as da
import numpy as np

from ..backend import array_module, to_host
from ..config import gate_radius_um, resolve_compat
from ..dataset import InputError, Scale, TrackingDataset
from ..flow.table import FlowTable
from .kernel import Anchors, frame_anchors, interpolate_points, neighbour_counts

__all__ = ["interpolate_flow", "as_flow_table", "resolve_spacing", "frame_anchors_lazy",
           "DEFAULT_CHUNK_SIZE"]

#: Query points per task when ``coords`` is a NumPy array (and per kernel call).
DEFAULT_CHUNK_SIZE = 262_144


def as_flow_table(flow: Any, ndim: int | None = None, n_frames: int | None = None) -> FlowTable:
    """A :class:`FlowTable` from a FlowTable or a Nellie-layout (M, 2d+2) array."""
    if isinstance(flow, FlowTable):
        if ndim is not None and flow.ndim != ndim:
            raise InputError(f"flow is {flow.ndim}D but the data is {ndim}D")
        return flow
    if isinstance(flow, da.Array):
        raise InputError("flow as a dask array: wrap it with FlowTable (or pass a NumPy array)")
    try:
        arr = np.asarray(flow, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"flow must be a FlowTable or an (M, 8) / (M, 6) Nellie flow array, got {type(flow).__name__}"
        ) from None
    if arr.ndim == 2 and arr.shape[0] == 0 and ndim is not None:
        arr = arr.reshape(0, 2 * ndim + 2)
    if n_frames is not None and len(arr):
        n_frames = max(int(n_frames), int(arr[:, 0].max()) + 2)
    return FlowTable.from_numpy(arr, ndim=ndim, n_frames=n_frames)


def resolve_spacing(flow: FlowTable, spacing: Any = None, dt: Any = None,
                    scale: Any = None) -> tuple[tuple[float, ...], float | None]:
    """Voxel size (um, per spatial axis) and frame interval (s) from the arguments.

    Explicit ``spacing`` / ``dt`` win over ``scale`` (a Scale, a TrackingDataset or
    a mapping ``{"T", "Z", "Y", "X"}``), which wins over ``flow.attrs["scale"]``.
    """
    sc = None
    src = scale if scale is not None else flow.attrs.get("scale")
    if isinstance(src, TrackingDataset):
        sc = src.scale
    elif src is not None:
        sc = Scale.coerce(src, "TZYX" if flow.ndim == 3 else "TYX")
    if spacing is None:
        if sc is None:
            raise InputError(
                "spacing is required: pass spacing=(z, y, x) voxel sizes in um, or scale= a Scale or "
                "TrackingDataset (the flow table carries no scale)"
            )
        spacing = sc.spatial
    try:
        sp = tuple(float(s) for s in spacing)
    except TypeError:
        raise InputError(f"spacing must be a sequence of {flow.ndim} voxel sizes in um, got {spacing!r}") from None
    if len(sp) != flow.ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be {flow.ndim} positive voxel sizes in um, got {spacing!r}")
    if dt is None and sc is not None:
        dt = sc.t
    if dt is not None:
        if not isinstance(dt, numbers.Real) or not np.isfinite(dt) or dt < 0:
            raise InputError(f"dt must be a frame interval in s (a number >= 0), got {dt!r}")
        dt = float(dt)
    return sp, dt


def frame_anchors_lazy(flow: FlowTable, t: int, forward: bool) -> Any:
    """A Delayed :class:`Anchors` for frame ``t`` (forward: pair t; backward: pair t-1)."""
    rows = flow.frame(t if forward else t - 1)
    return dask.delayed(frame_anchors, pure=True)(rows, flow.ndim, forward)


def _check_frame(t: Any, flow: FlowTable) -> int:
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        raise InputError(f"t must be an integer frame index, got {t!r}")
    if not 0 <= int(t) < flow.n_frames:
        raise InputError(f"t must be a frame index in [0, {flow.n_frames - 1}], got {t!r}")
    return int(t)


def interpolate_flow(
    flow: Any,
    coords: Any,
    t: int,
    *,
    forward: bool = True,
    max_distance_um: float = 0.5,
    compat: Any = None,
    spacing: Sequence[float] | None = None,
    dt: float | None = None,
    scale: Any = None,
    chunk_size: int | None = None,
) -> Any:
    """Displacement (voxels per frame) of the flow at voxel coordinates of frame ``t``.

    Nellie's ``FlowInterpolator.interpolate_coord`` (spec 2.2) as a function:
    every anchor (flow row) within ``r = max(max_distance_um * dt, 0.5)`` um of a
    point contributes, weighted by cost and inverse distance.

    Parameters
    ----------
    flow : FlowTable or ndarray, shape (M, 2d+2)
        Flow rows in Nellie's layout (:mod:`dask_tracking.flow.table`).
    coords : ndarray or dask.array.Array, shape (N, d)
        Voxel positions at frame ``t`` (``z, y, x`` or ``y, x``); NaN rows allowed.
    t : int
        Frame index.
    forward : bool
        True: anchors are the vector starts of pair ``(t, t+1)`` (add the result
        to get positions at ``t+1``). False: anchors are the vector ends of pair
        ``(t-1, t)`` (subtract the result to get positions at ``t-1``).
    max_distance_um : float
        A speed in um/s (Nellie's name, spec B9); the radius is
        ``max(max_distance_um * dt, 0.5)`` um.
    compat : None or "nellie"
        ``"nellie"``: bit-for-bit Nellie 1.0.4, quirks Q-A / Q-B included (they
        depend on the whole batch: the global non-NaN count and neighbour maximum
        are computed first, as a cheap reduction). Default: the B2/B3/B17 fixes.
    spacing : sequence of float, optional
        Voxel size in um per spatial axis.
    dt : float, optional
        Frame interval in s (``None`` or 0 is read as 1 s).
    scale : Scale, TrackingDataset or mapping, optional
        Where ``spacing`` and ``dt`` are read from when not given (else from
        ``flow.attrs["scale"]``).
    chunk_size : int, optional
        Points per task. A dask ``coords`` keeps its row chunks unless this is
        given; a NumPy ``coords`` is processed in blocks of this size
        (default 262,144).

    Returns
    -------
    ndarray or dask.array.Array, shape (N, d), float64
        Same kind as ``coords`` (dask in, dask out, same row chunks). NaN where a
        point has no anchor within ``r``. Nellie returns an empty (0, d) array
        when no point has any anchor; this returns all NaN rows instead (the
        ``dask_tracking.nellie`` facade keeps Nellie's shape).
    """
    mode = resolve_compat(compat)
    table = as_flow_table(flow)
    t = _check_frame(t, table)
    sp, dt_ = resolve_spacing(table, spacing, dt, scale)
    radius = gate_radius_um(max_distance_um, dt_)
    d = table.ndim
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
                                   or chunk_size < 1):
        raise InputError(f"chunk_size must be a positive integer (points per task), got {chunk_size!r}")
    if getattr(coords, "ndim", None) != 2 or coords.shape[1] != d:
        raise InputError(
            f"coords must be an (N, {d}) array of voxel positions for {d}D flow, "
            f"got shape {getattr(coords, 'shape', None)}"
        )

    if not isinstance(coords, da.Array):
        rows = table.frame(t if forward else t - 1)
        if dask.is_dask_collection(rows):
            rows = rows.compute()
        anchors = frame_anchors(rows, d, forward)
        return _interpolate_numpy(anchors, coords, sp, radius, mode, chunk_size or DEFAULT_CHUNK_SIZE)

    x = coords.rechunk({1: -1}) if coords.numblocks[1] != 1 else coords
    if chunk_size is not None:
        x = x.rechunk({0: int(chunk_size)})
    if mode == "nellie" and any(np.isnan(c) for c in x.chunks[0]):
        raise InputError("compat='nellie' needs known row chunk sizes in coords; call coords.compute_chunk_sizes()")
    anchors = frame_anchors_lazy(table, t, forward)
    glob = None
    if mode == "nellie":
        stats = x.map_blocks(_block_stats, anchors, sp, radius, chunks=((1,) * x.numblocks[0], (2,)),
                             dtype=np.int64, meta=np.zeros((0, 2), np.int64))
        glob = dask.delayed(_global_stats, pure=True)(stats)
    xp = array_module(x)
    meta = xp.zeros((0, d), dtype=np.float64)
    return x.map_blocks(_interp_block, anchors, sp, radius, mode, glob, dtype=np.float64, meta=meta)


def _interpolate_numpy(anchors: Anchors, coords: Any, sp: tuple, radius: float, mode: str | None,
                       chunk: int) -> np.ndarray:
    n = len(coords)
    glob = {}
    if mode == "nellie" and n > chunk:
        k = np.concatenate([neighbour_counts(anchors, coords[i:i + chunk], sp, radius)
                            for i in range(0, n, chunk)])
        glob = dict(n_good=int((~np.isnan(np.asarray(to_host(coords[:, 0]), dtype=float))).sum()),
                    k_max=int(k.max()))
    xp = array_module(coords)
    parts = [interpolate_points(anchors, coords[i:i + chunk], sp, radius, compat=mode, offset=i, **glob)
             for i in range(0, n, chunk)] or [xp.zeros((0, anchors.ndim))]
    return xp.concatenate(parts) if len(parts) > 1 else parts[0]


def _block_stats(block: Any, anchors: Anchors, sp: tuple, radius: float) -> np.ndarray:
    """(1, 2) int64: this block's non-NaN count and largest neighbour count."""
    k = neighbour_counts(anchors, block, sp, radius)
    good = int((~np.isnan(np.asarray(to_host(block[:, 0]), dtype=float))).sum()) if len(block) else 0
    return np.array([[good, int(k.max()) if len(k) else 0]], dtype=np.int64)


def _global_stats(stats: np.ndarray) -> tuple[int, int]:
    s = np.asarray(stats).reshape(-1, 2)
    return int(s[:, 0].sum()), int(s[:, 1].max()) if len(s) else 0


def _interp_block(block: Any, anchors: Anchors, sp: tuple, radius: float, mode: str | None,
                  glob: tuple[int, int] | None, block_info: dict | None = None) -> Any:
    if mode != "nellie":
        return interpolate_points(anchors, block, sp, radius)
    offset = block_info[0]["array-location"][0][0] if block_info else 0
    n_good, k_max = glob
    return interpolate_points(anchors, block, sp, radius, compat="nellie",
                              n_good=n_good, k_max=k_max, offset=offset)
