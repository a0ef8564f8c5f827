"""``label_tracks``: voxel tracks of one label or all labels, forward and backward (spec section 3)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..config import gate_radius_um, resolve_compat
from ..dataset import InputError, TrackingDataset
from ..backend import to_host
from ..gpu import array_to_host
from ..interpolate.api import as_flow_table, frame_anchors_lazy
from .model import Tracks
from .walk import WalkParams, WalkResult, walk_lazy

__all__ = ["label_tracks", "track_plan", "TrackPlan", "DEFAULT_SEED_CHUNK"]

#: Seeds per chunk (each chunk walks through time as its own chain of tasks).
DEFAULT_SEED_CHUNK = 100_000


def _int_arg(name: str, value: Any, low: int, high: int | None = None, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
            high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{name} must be an integer in {rng}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def label_tracks(
    dataset: TrackingDataset,
    flow: Any,
    *,
    label: int | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
    min_track_num: int = 0,
    skip_coords: int = 1,
    max_distance_um: float = 0.5,
    compat: Any = None,
    labels: Any = None,
    chunk_size: int = DEFAULT_SEED_CHUNK,
    fallback_radius_um: Any = "auto",
    keep_outside: bool | None = None,
) -> Tracks:
    """Track every voxel of a label (or of all labels) from a start frame, both ways in time.

    Seeds are the voxels of ``labels[start_frame]`` (``> 0``, or ``== label``) in
    raster order, subsampled as ``seeds[::skip_coords]``; seed ``i`` becomes track
    ``i + min_track_num``. Each seed walks forward (frames ``start_frame`` to
    ``end_frame - 1`` step to the next frame) and backward (to frame 0) with the
    interpolated flow (:func:`dask_tracking.interpolate_flow`). A point is kept
    when its rounded position (half to even) lies inside the volume and inside
    any label of that frame, so tracks can have gaps (Nellie's filter).

    Parameters
    ----------
    dataset : TrackingDataset
        Gives the scale (spacing, dt) and, by default, the labels.
    flow : FlowTable or ndarray, shape (M, 2d+2)
        The flow rows (Nellie layout).
    label : int, optional
        Track only this label id; ``None`` tracks every labelled voxel.
    start_frame : int
        Frame of the seeds.
    end_frame : int, optional
        Forward tracking stops at this frame (exclusive bound of the frames
        stepped from; default: the number of frames).
    min_track_num : int
        Id of the first track.
    skip_coords : int
        Take every ``skip_coords``-th seed.
    max_distance_um : float
        Speed in um/s; interpolation radius ``max(max_distance_um * dt, 0.5)`` um.
    compat : None or "nellie"
        ``"nellie"`` reproduces Nellie 1.0.4's ``LabelTracks.run`` rows (quirks
        Q-A / Q-B included: the whole batch of seeds is one interpolation batch at
        every step; the start frame appears twice when both directions run; the
        backward rows keep Nellie's unstable order). The default fixes those:
        each seed is independent (no track dies because another one did), the
        start point is emitted once per seed, rows are sorted by (track, t), and
        a frame without flow ends the tracks instead of shifting them in time.
    labels : dask or NumPy array, optional
        Another label volume with the dataset's shape (e.g. reassigned labels);
        default ``dataset.labels``.
    chunk_size : int
        Seeds per chunk.
    fallback_radius_um : float, "auto" or None
        Default mode only (accuracy option "living_tracks", issue 11): a point with no
        flow within the radius takes the vector interpolated within this larger radius
        (um) instead of ending its track. ``"auto"`` (default): 4 x the radius in the
        default mode, off with ``compat="nellie"``; None: off (the reference behaviour).
    keep_outside : bool, optional
        Default mode only: keep points whose rounded position lies outside every
        label (flagged ``properties["outside"] = 1``) instead of dropping them, so a
        track does not get gaps when the segmentation misses its point. Default
        (None): on in the default mode, off with ``compat="nellie"``.

    Returns
    -------
    Tracks
        ``data`` rows ``track_id, t, (z), y, x``; ``properties["frame_num"]``; in
        the default mode also ``properties["label"]`` (the seed's label id); with
        ``fallback_radius_um`` or ``keep_outside`` also ``properties["outside"]`` (1 where
        a kept point lies outside the labels) and ``properties["end_reason"]`` (on each
        track's last row: 1 the walk reached the
        last frame, 2 the point had no flow vector, 3 the point left the volume or,
        without ``keep_outside``, the labels; 0 on every other row).
        ``data, props = label_tracks(...)`` unpacks.
    """
    plan = track_plan(dataset, flow, label=label, start_frame=start_frame, end_frame=end_frame,
                      min_track_num=min_track_num, skip_coords=skip_coords,
                      max_distance_um=max_distance_um, compat=compat, labels=labels, chunk_size=chunk_size,
                      fallback_radius_um=fallback_radius_um, keep_outside=keep_outside)
    mode, lab, d, attrs = plan.mode, plan.lab, plan.ndim, plan.attrs
    seeds, seed_labels, chunks = plan.seeds, plan.seed_labels, plan.chunks
    min_track_num, start = plan.min_track_num, plan.start
    if len(seeds) == 0:
        return Tracks(np.zeros((0, 2 + d)), empty_properties(mode), {}, attrs)
    graphs = [walk_lazy(chunks, plan.fw_frames, plan.fw_anchors, plan.fw_params),
              walk_lazy(chunks, plan.bw_frames, plan.bw_anchors, plan.bw_params)]
    (fw_s, _), (bw_s, _) = dask.compute(*graphs)
    offsets = plan.offsets
    fw = WalkResult(plan.fw_frames, offsets, fw_s, [])
    bw = WalkResult(plan.bw_frames, offsets, bw_s, [])

    del fw_s, bw_s   # the walks' emissions: freed as soon as their rows exist (peak memory)
    if mode == "nellie":
        data_f, fn_f = emission_rows(fw, True, min_track_num, d)
        del fw
        data_b, fn_b = emission_rows(bw, False, min_track_num, d)
        del bw
        data_b, fn_b = data_b[::-1], fn_b[::-1]
        order = np.argsort(data_b[:, 0].astype(np.int64))  # Nellie's (unstable) sort by track id
        data = np.concatenate([data_b[order], data_f])
        del data_b, data_f
        frame_num = np.concatenate([fn_b[order], fn_f])
        del fn_b, fn_f, order
        keep = inside_labels(data, lab)
        return Tracks(data[keep], {"frame_num": frame_num[keep]}, {}, attrs)

    ids = np.arange(len(seeds), dtype=np.float64) + min_track_num
    first = np.column_stack([ids, np.full(len(seeds), float(start)), seeds])
    data_f, _ = emission_rows(fw, True, min_track_num, d)
    del fw
    data_b, _ = emission_rows(bw, False, min_track_num, d)
    del bw
    data = np.concatenate([first, data_f, data_b])
    del data_f, data_b
    walked = data[np.lexsort((data[:, 1], data[:, 0]))]
    inside = inside_labels(walked, lab)
    data, props = default_rows(walked, inside, seed_labels, min_track_num, **plan.default_kwargs())
    return Tracks(data, props, {}, attrs)


def default_rows(walked: np.ndarray, inside: np.ndarray, seed_labels: np.ndarray, first_id: int, *,
                 spatial: tuple[int, ...], end: int, keep_outside: bool,
                 reasons: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The default mode's kept rows and their properties, from the walked rows.

    ``walked`` (K, 2+d) rows sorted by (track, t), whole tracks only; ``inside`` (K,)
    bool, whether each row lies in a label; ``seed_labels`` the label ids of the seeds
    of tracks ``first_id, first_id + 1, ...``; ``spatial`` the volume's spatial shape;
    ``end`` the end frame; ``keep_outside`` keeps rows inside the volume but outside the
    labels (``outside`` = 1); ``reasons`` adds ``outside`` and ``end_reason``.
    """
    if keep_outside:
        r = np.round(walked[:, 2:])
        in_volume = np.all(np.isfinite(r) & (r >= 0) & (r < np.asarray(spatial)), axis=1)
        data = walked[inside | in_volume]
        outside = (~inside[inside | in_volume]).astype(np.int8)
    else:
        data = walked[inside]
        outside = np.zeros(len(data), np.int8)
    props = {"frame_num": data[:, 1].astype(np.int64),
             "label": seed_labels[data[:, 0].astype(np.int64) - first_id]}
    if reasons:
        props["outside"] = outside
        props["end_reason"] = _end_reasons(walked, inside, data, end, spatial)
    return data, props



@dataclass(frozen=True)
class TrackPlan:
    """Checked arguments, seeds and lazy walk inputs shared by :func:`label_tracks` and
    :func:`dask_tracking.write_label_tracks`.

    ``seeds`` (n, d) float64 voxels and ``seed_labels`` (n,) int64 in raster order,
    ``chunks`` the seeds split in chunks of ``attrs["chunk_size"]``; ``fw_frames`` /
    ``bw_frames`` the frames stepped from, with their lazy anchors and walk parameters.
    """

    mode: str | None
    lab: Any
    ndim: int
    start: int
    end: int
    min_track_num: int
    attrs: dict
    seeds: np.ndarray
    seed_labels: np.ndarray
    chunks: list
    fw_frames: list
    bw_frames: list
    fw_params: WalkParams
    bw_params: WalkParams
    fw_anchors: dict
    bw_anchors: dict
    fallback: float | None

    def default_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`default_rows` for this plan (plain values, safe in a task)."""
        keep = bool(self.attrs["keep_outside"])
        return {"spatial": tuple(int(n) for n in self.lab.shape[1:]), "end": int(self.end),
                "keep_outside": keep, "reasons": self.fallback is not None or keep}

    @property
    def offsets(self) -> list[int]:
        """Index of each chunk's first seed."""
        return [int(o) for o in np.cumsum([0] + [len(c) for c in self.chunks[:-1]])]


def empty_properties(mode: str | None) -> dict[str, np.ndarray]:
    """The properties of an empty track table."""
    props = {"frame_num": np.zeros(0, np.int64)}
    if mode is None:
        props["label"] = np.zeros(0, np.int64)
    return props


def track_plan(dataset: TrackingDataset, flow: Any, *, label: int | None = None, start_frame: int = 0,
               end_frame: int | None = None, min_track_num: int = 0, skip_coords: int = 1,
               max_distance_um: float = 0.5, compat: Any = None, labels: Any = None,
               chunk_size: Any = DEFAULT_SEED_CHUNK, fallback_radius_um: Any = "auto",
               keep_outside: bool | None = None, rows_per_chunk: int = 1 << 18,
               min_seeds: int = 1) -> TrackPlan:
    """Check the arguments of :func:`label_tracks` (InputError before any work), find the
    seeds (one small task per block of the start frame) and build the walks' inputs.

    ``chunk_size="auto"`` takes ``rows_per_chunk // (frames walked + 1)`` seeds per chunk,
    so that a chunk's rows stay near ``rows_per_chunk`` whatever the number of frames,
    but at least ``min_seeds``.
    """
    mode = resolve_compat(compat)
    if not isinstance(dataset, TrackingDataset):
        raise InputError(f"dataset must be a TrackingDataset, got {type(dataset).__name__}")
    lab = dataset.labels if labels is None else labels
    if not isinstance(lab, da.Array):
        lab = np.asarray(lab)
        lab = da.from_array(lab, chunks=(1,) + lab.shape[1:])
    if tuple(lab.shape) != tuple(dataset.shape):
        raise InputError(f"labels must have the dataset's shape {dataset.shape}, got {tuple(lab.shape)}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"labels must hold integer ids, got dtype {lab.dtype}")
    lab = array_to_host(lab)  # CuPy chunks: seeds and label look-ups are small host work
    n_frames = dataset.n_frames
    start = _int_arg("start_frame", start_frame, 0, n_frames - 1)
    end = _int_arg("end_frame", end_frame, 0, n_frames, allow_none=True)
    end = n_frames if end is None else end
    label = _int_arg("label", label, 0, allow_none=True)
    min_track_num = _int_arg("min_track_num", min_track_num, 0)
    skip = _int_arg("skip_coords", skip_coords, 1)
    table = as_flow_table(flow, ndim=dataset.ndim, n_frames=n_frames)
    radius = gate_radius_um(max_distance_um, dataset.dt)
    d = dataset.ndim
    attrs = {"label": label, "start_frame": start, "end_frame": end_frame, "min_track_num": min_track_num,
             "skip_coords": skip, "max_distance_um": float(max_distance_um), "radius_um": radius,
             "compat": mode or "fixed"}

    fw_frames = list(range(start, end)) if start < end else []
    bw_frames = list(range(start, -1, -1)) if start > 0 else []
    if isinstance(chunk_size, str) and chunk_size == "auto":
        chunk = max(1, int(min_seeds), rows_per_chunk // (len(fw_frames) + len(bw_frames) + 1))
    else:
        chunk = _int_arg("chunk_size", chunk_size, 1)
    fallback = None
    if isinstance(fallback_radius_um, str):
        if fallback_radius_um != "auto":
            raise InputError(f"fallback_radius_um must be a number (um), 'auto' or None, got {fallback_radius_um!r}")
        fallback_radius_um = 4.0 * radius if mode is None else None
    if keep_outside is None:
        keep_outside = mode is None
    if fallback_radius_um is not None and mode is None:
        fallback = float(fallback_radius_um)
        if not np.isfinite(fallback) or fallback <= radius:
            raise InputError(f"fallback_radius_um must be a number above the radius {radius:g} um, "
                             f"got {fallback_radius_um!r}")
        attrs["fallback_radius_um"] = fallback
    attrs["keep_outside"] = bool(keep_outside) and mode is None

    seeds, seed_labels = _seeds(lab, start, label, skip)
    attrs["n_seeds"] = len(seeds)
    attrs["chunk_size"] = int(chunk)  # seeds per chunk, as resolved ("auto" included)
    chunks = [seeds[i:i + chunk] for i in range(0, len(seeds), chunk)]
    fw_p = WalkParams(tuple(dataset.spacing), radius, True, mode, fallback)
    bw_p = WalkParams(tuple(dataset.spacing), radius, False, mode, fallback)
    fw_a = {t: frame_anchors_lazy(table, t, True) for t in fw_frames} if len(seeds) else {}
    bw_a = {t: frame_anchors_lazy(table, t, False) for t in bw_frames} if len(seeds) else {}
    return TrackPlan(mode, lab, d, start, end, min_track_num, attrs, seeds, seed_labels, chunks,
                     fw_frames, bw_frames, fw_p, bw_p, fw_a, bw_a, fallback)


def _end_reasons(walked: np.ndarray, inside: np.ndarray, kept: np.ndarray, end: int,
                 spatial: tuple[int, ...]) -> np.ndarray:
    """Per kept row: 0, or on a track's last kept row why it ends (1 last frame, 2 no flow, 3 left)."""
    out = np.zeros(len(kept), np.int8)
    if len(kept) == 0:
        return out
    last_kept = np.r_[kept[1:, 0] != kept[:-1, 0], True]
    last_walk = np.r_[walked[1:, 0] != walked[:-1, 0], True]
    walk_end_t = dict(zip(walked[last_walk, 0].tolist(), walked[last_walk, 1].tolist()))
    walk_end_in = dict(zip(walked[last_walk, 0].tolist(),
                           (np.all((np.round(walked[last_walk, 2:]) >= 0)
                                   & (np.round(walked[last_walk, 2:]) < np.asarray(spatial)), axis=1)).tolist()))
    for i in np.flatnonzero(last_kept):
        tid, t = float(kept[i, 0]), float(kept[i, 1])
        if t < walk_end_t[tid] or not walk_end_in[tid]:
            out[i] = 3
        elif t >= end - 1:
            out[i] = 1
        else:
            out[i] = 2
    return out


def _seeds(lab: da.Array, start: int, label: int | None, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed voxels of ``lab[start]`` in raster order, every ``skip``-th, and their label ids.

    One task per spatial block returns its labelled voxels (coordinates and ids, a small
    share of the block); no task holds more than one block.
    """
    frame = lab[start]
    d = frame.ndim
    blocks = frame.to_delayed(optimize_graph=False)   # one graph for all blocks (fast to build)
    tasks = [dask.delayed(_block_seeds)(blocks[idx], tuple(int(c[:i].sum()) for c, i in
                                                           zip(map(np.asarray, frame.chunks), idx)), label)
             for idx in np.ndindex(*frame.numblocks)]
    parts = dask.compute(*tasks)
    pts = np.concatenate([p[0] for p in parts] + [np.zeros((0, d), np.int64)])
    vals = np.concatenate([p[1] for p in parts] + [np.zeros(0, np.int64)])
    if len(pts) == 0:
        return np.zeros((0, d)), np.zeros(0, np.int64)
    order = np.lexsort(pts.T[::-1])[::skip]
    return pts[order].astype(np.float64), vals[order]


def _block_seeds(block: Any, origin: tuple[int, ...], label: int | None) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(to_host(block))
    mask = b > 0 if label is None else b == label
    pts = np.argwhere(mask)
    vals = b[mask].astype(np.int64)       # raster order within the block, as argwhere
    return pts.astype(np.int64) + np.asarray(origin, dtype=np.int64), vals


def emission_rows(res: WalkResult, forward: bool, min_track_num: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``track_id, t, pos`` and ``frame_num`` of a walk, in Nellie's emission order.

    Per step, per point in index order: its start point (when the step emits
    them) and then its moved position.
    """
    rows, fns = [np.zeros((0, 2 + d))], [np.zeros(0, np.int64)]
    for s, t in enumerate(res.frames):
        nxt = t + 1 if forward else t - 1
        for off, em in zip(res.offsets, res.steps[s]):
            m = len(em.index)
            if m == 0:
                continue
            gid = (em.index + off + min_track_num).astype(np.float64)
            moved = np.column_stack([gid, np.full(m, float(nxt)), em.moved])
            if em.start is not None:
                first = np.column_stack([gid, np.full(m, float(res.frames[0])), em.start])
                rows.append(np.stack([first, moved], axis=1).reshape(-1, 2 + d))
                fns.append(np.stack([np.full(m, res.frames[0]), np.full(m, nxt)], axis=1).ravel())
            else:
                rows.append(moved)
                fns.append(np.full(m, nxt, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(fns).astype(np.int64)


def inside_labels(data: np.ndarray, lab: da.Array) -> np.ndarray:
    """Rows whose rounded ``(t, z, y, x)`` (half to even) is in bounds and labelled (> 0).

    The rows are grouped by the chunk of ``lab`` they fall in; one task per chunk with rows
    looks them up (no task holds more than one chunk).
    """
    keep = np.zeros(len(data), dtype=bool)
    if len(data) > _LOOKUP_ROWS:   # bounded temporaries: the rows in slices
        for i in range(0, len(data), _LOOKUP_ROWS):
            keep[i:i + _LOOKUP_ROWS] = inside_labels(data[i:i + _LOOKUP_ROWS], lab)
        return keep
    if len(data) == 0:
        return keep
    r = np.round(data[:, 1:])
    finite = np.all(np.isfinite(r), axis=1)
    inb = finite & np.all((r >= 0) & (r < np.asarray(lab.shape)), axis=1)
    if not inb.any():
        return keep
    rows = np.flatnonzero(inb)
    idx = r[inb].astype(np.int64)
    bounds = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in lab.chunks]
    bidx = np.stack([np.searchsorted(b, idx[:, a], side="right") - 1 for a, b in enumerate(bounds)], axis=1)
    flat = np.ravel_multi_index(tuple(bidx.T), lab.numblocks)
    order = np.argsort(flat, kind="stable")
    flat_sorted = flat[order]
    starts = np.flatnonzero(np.r_[True, flat_sorted[1:] != flat_sorted[:-1]])
    stops = np.r_[starts[1:], len(order)]
    tasks, sel = [], []
    blocks = lab.to_delayed(optimize_graph=False)   # one graph for all blocks (fast to build)
    for a0, a1 in zip(starts, stops):
        which = order[a0:a1]
        block = tuple(int(v) for v in bidx[which[0]])
        origin = np.array([bounds[a][block[a]] for a in range(len(block))], dtype=np.int64)
        tasks.append(dask.delayed(_block_labelled)(blocks[block], idx[which] - origin))
        sel.append(which)
    for which, vals in zip(sel, dask.compute(*tasks)):
        keep[rows[which]] = vals
    return keep


#: Rows looked up at once by :func:`inside_labels`.
_LOOKUP_ROWS = 1 << 20


def _block_labelled(block: Any, local: np.ndarray) -> np.ndarray:
    b = np.asarray(to_host(block))
    return b[tuple(local.T)] > 0
