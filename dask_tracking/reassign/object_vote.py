"""A label vote that respects the objects of the later frame (no identity leak).

Nellie's reassignment votes voxel by voxel: a voxel of frame ``t + 1`` takes the
label of the voxels of ``t`` that flow onto it, so where two objects touch or
come close, one object's identity spreads into the voxels of its neighbour
(spec section 9). :func:`object_vote` makes the vote per *object* of frame
``t + 1`` (its own segmentation, e.g. ``ds.labels[t + 1]``): every object takes
the identity held by most of its voted voxels, and a second identity keeps its
voxels only when it holds at least ``split_share`` of the object (a real merge
of two tracked objects stays visible). Voxels of an object that received no
vote take the object's identity, so coverage follows the segmentation.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from ..dataset import InputError
from ..flow.table import FlowTable

__all__ = ["object_vote", "respect_objects", "propagate_votes", "object_vote_chain"]


def _check_share(split_share: Any) -> float:
    if isinstance(split_share, bool) or not isinstance(split_share, (int, float)) or \
            not 0.0 < float(split_share) <= 1.0:
        raise InputError(f"split_share must be a number in (0, 1], got {split_share!r}")
    return float(split_share)


def object_vote(votes: Any, objects: Any, *, split_share: float = 0.3, landed: Any = None) -> np.ndarray:
    """Identities of one frame, one per object of its segmentation.

    Parameters
    ----------
    votes : ndarray, int, shape (Z, Y, X) or (Y, X)
        Per-voxel identities from the voxel vote (e.g. reassigned labels), 0 = none.
    objects : ndarray, int, same shape
        The frame's own objects (connected components), 0 = background.
    split_share : float in (0, 1]
        Smallest share of an object's voted voxels for which a second identity keeps its voxels.
    landed : tuple of two (n,) int arrays, optional
        Every single vote (flat voxel index, identity), several per voxel allowed; the
        shares are then counted over these instead of over the per-voxel ``votes``.

    Returns
    -------
    ndarray, int32, same shape
        0 outside ``objects``; inside, the object's majority identity; in an object where
        a second identity holds >= ``split_share`` of the votes, each voxel takes the
        identity of the nearest voted voxel among the identities kept.
        Objects with no vote keep 0.
    """
    split_share = _check_share(split_share)
    v = np.asarray(votes)
    o = np.asarray(objects)
    if v.shape != o.shape:
        raise InputError(f"votes and objects must have one shape, got {v.shape} and {o.shape}")
    out = np.zeros(v.shape, np.int32)
    inside = o > 0
    if not inside.any():
        return out
    ov, vv = o[inside].astype(np.int64), v[inside].astype(np.int64)
    voted = vv > 0
    if landed is None:
        pairs, counts = np.unique(np.stack([ov[voted], vv[voted]], axis=1), axis=0, return_counts=True)
    else:
        flat, ids = (np.asarray(x, dtype=np.int64) for x in landed)
        lo = o.ravel()[flat].astype(np.int64)
        ok = (lo > 0) & (ids > 0)
        pairs, counts = np.unique(np.stack([lo[ok], ids[ok]], axis=1), axis=0, return_counts=True)
    res = np.zeros(ov.shape, np.int64)
    if len(pairs):
        total = np.zeros(int(ov.max()) + 1, np.int64)
        np.add.at(total, pairs[:, 0], counts)
        order = np.lexsort((-counts, pairs[:, 0]))          # per object, most voxels first
        pairs, counts = pairs[order], counts[order]
        first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
        major = np.zeros(int(ov.max()) + 1, np.int64)
        major[pairs[first, 0]] = pairs[first, 1]
        res = major[ov]
        keep = (~first) & (counts >= split_share * total[pairs[:, 0]])
        out[inside] = res.astype(np.int32)
        if keep.any():
            # objects holding several identities: each voxel takes the nearest voted
            # voxel's identity among the identities the object keeps
            kept = {(int(a), int(b)) for a, b in pairs[keep | first]}
            multi = np.unique(pairs[keep, 0])
            vote_ok = np.zeros(v.shape, bool)
            vote_ok[inside] = voted & np.array([(int(a), int(b)) in kept for a, b in zip(ov, vv)])
            _, idx = ndi.distance_transform_edt(~vote_ok, return_indices=True)
            near = v[tuple(idx)]
            sel = np.isin(o, multi)
            out[sel] = near[sel].astype(np.int32)
        return out
    out[inside] = res.astype(np.int32)
    return out


def respect_objects(reassigned: Any, labels: Any, *, split_share: float = 0.3) -> da.Array:
    """:func:`object_vote` on every frame: reassigned labels made consistent with the segmentation.

    Parameters
    ----------
    reassigned : dask array, int, shape (T, ...)
        Voxel-vote identities (``reassign_labels(...).labels``).
    labels : dask array, int, same shape
        The movie's segmentation (``ds.labels``).

    Returns
    -------
    dask array, int32, shape (T, ...)
        Lazy, one task per frame (whole frames).
    """
    split_share = _check_share(split_share)
    if tuple(reassigned.shape) != tuple(labels.shape):
        raise InputError(f"reassigned and labels must have one shape, got {tuple(reassigned.shape)} "
                         f"and {tuple(labels.shape)}")
    frame = (1,) + tuple(reassigned.shape[1:])
    a = da.asarray(reassigned).rechunk(frame)
    b = da.asarray(labels).rechunk(frame)
    return da.map_blocks(lambda x, y: object_vote(x[0], y[0], split_share=split_share)[None],
                         a, b, dtype=np.int32)


def propagate_votes(identities: Any, rows: Any, shape_next: tuple[int, ...],
                    spacing: Any, *, neighbours: int = 1) -> np.ndarray:
    """Carry one frame's identities to the next frame along the flow (per-voxel votes).

    Every labelled voxel of ``identities`` (frame ``t``) moves by the per-axis median
    vector of the ``neighbours`` nearest flow row starts (Euclidean in um) and votes for its identity at its
    rounded end point in frame ``t + 1``; where several votes land on one voxel the
    most frequent identity wins (ties: the smaller id).

    Parameters
    ----------
    identities : ndarray, int, shape (Z, Y, X) or (Y, X)
        Identities at frame ``t`` (0 = none).
    rows : (n, 2d+2) array_like
        Flow rows of the pair ``(t, t + 1)``.
    shape_next : tuple of int
        Spatial shape of frame ``t + 1``.
    spacing : sequence of float
        Voxel size, um.
    neighbours : int
        Flow rows whose median vector moves a voxel.

    Returns
    -------
    ndarray, int32, shape ``shape_next``
        Votes at ``t + 1`` (0 where none landed).
    """
    flat, ids = _landed(identities, rows, shape_next, spacing, neighbours)
    out = np.zeros(shape_next, np.int32)
    if len(flat) == 0:
        return out
    key, counts = np.unique(np.stack([flat, ids], axis=1), axis=0, return_counts=True)
    order = np.lexsort((key[:, 1], -counts, key[:, 0]))
    key = key[order]
    first = np.r_[True, key[1:, 0] != key[:-1, 0]]
    out.ravel()[key[first, 0]] = key[first, 1].astype(np.int32)
    return out


def _landed(identities: Any, rows: Any, shape_next: tuple[int, ...], spacing: Any,
            neighbours: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every vote: (flat index at ``t + 1``, identity), one per labelled voxel of ``t`` that lands."""
    from scipy.spatial import cKDTree

    ident = np.asarray(identities)
    d = ident.ndim
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2 * d + 2)
    pts = np.argwhere(ident > 0)
    if len(pts) == 0 or len(rows) == 0:
        return none
    s = np.asarray(spacing, dtype=np.float64)
    tree = cKDTree(rows[:, 1:1 + d] * s)
    k = int(min(neighbours, len(rows)))
    _, nn = tree.query(pts * s, k=k)
    nn = np.asarray(nn).reshape(len(pts), k)
    vec = np.median(rows[:, 1 + d:1 + 2 * d][nn], axis=1)
    end = np.rint(pts + vec).astype(np.int64)
    ok = np.all((end >= 0) & (end < np.asarray(shape_next)), axis=1)
    ids = ident[tuple(pts[ok].T)].astype(np.int64)
    flat = np.ravel_multi_index(tuple(end[ok].T), shape_next).astype(np.int64)
    return flat, ids


def _chain_step(state: tuple, rows: Any, objects_next: Any, spacing: Any, split_share: float,
                memory: bool) -> tuple:
    """One link: (identities at t, ghost identities at t, next free id) -> the same at t + 1."""
    prev, ghost, next_id = state
    src = np.array(prev, dtype=np.int32, copy=True)
    if memory and ghost is not None:
        fill = (src == 0) & (ghost > 0)
        src[fill] = ghost[fill]
    objects_next = np.asarray(objects_next)
    shape = objects_next.shape
    votes = propagate_votes(src, rows, shape, spacing)
    landed = _landed(src, rows, shape, spacing)
    out = object_vote(votes, objects_next, split_share=split_share, landed=landed)
    # objects that received no vote at all: a new identity each (coverage follows the segmentation)
    orphan = (objects_next > 0) & (out == 0)
    if orphan.any():
        ids = np.unique(objects_next[orphan])
        fresh = np.zeros(int(objects_next.max()) + 1, np.int64)
        fresh[ids] = np.arange(next_id, next_id + len(ids))
        out[orphan] = fresh[objects_next[orphan]].astype(np.int32)
        next_id += len(ids)
    new_ghost = None
    if memory:
        # identities of frame t (not ghosts themselves) that no object of t + 1 took:
        # their landed votes wait one frame for a segmentation that finds them again
        lost = np.setdiff1d(np.unique(prev[prev > 0]), np.unique(out))
        if len(lost):
            new_ghost = np.where(np.isin(votes, lost), votes, 0).astype(np.int32)
    return out, new_ghost, next_id


def _first_state(labels0: Any) -> tuple:
    a = np.asarray(labels0).astype(np.int32)
    return a, None, int(a.max(initial=0)) + 1


def _result(state: tuple) -> np.ndarray:
    return state[0]


def object_vote_chain(labels: Any, flow: FlowTable, spacing: Any, *, split_share: float = 0.3,
                      start_frame: int = 0, memory: bool = True) -> da.Array:
    """Identities through time by an object vote chained along the flow.

    Frame ``start_frame`` keeps its own label ids. Each later frame's objects
    (``labels[t + 1] > 0`` connected as given) take their identities from the
    previous frame's *result*, carried along the flow (:func:`propagate_votes`) and
    decided per object (:func:`object_vote`): an identity cannot leak into a
    neighbouring object unless it holds ``split_share`` of it. An object that gets
    no vote at all takes a new identity (never used before). With ``memory`` an
    identity that no object of frame ``t + 1`` takes (a frame of poor segmentation)
    keeps its carried votes one more frame and can be taken again at ``t + 2``.

    Parameters
    ----------
    labels : dask array, int, shape (T, ...)
        The movie's segmentation (``ds.labels``).
    flow : FlowTable
        Flow of the movie (voxel rows).
    spacing : sequence of float
        Voxel size, um.

    Returns
    -------
    dask array, int32, shape (T, ...)
        Lazy, one task per frame, frame ``t + 1``'s task depending on frame ``t``'s.
    """
    import dask

    split_share = _check_share(split_share)
    if not isinstance(flow, FlowTable):
        raise InputError(f"flow must be a FlowTable, got {type(flow).__name__}")
    lab = da.asarray(labels)
    T = lab.shape[0]
    if flow.n_frames != T or flow.ndim != lab.ndim - 1:
        raise InputError(f"flow covers {flow.n_frames} frames in {flow.ndim}D but labels have shape "
                         f"{tuple(lab.shape)}")
    if isinstance(start_frame, bool) or not isinstance(start_frame, (int, np.integer)) or \
            not 0 <= start_frame < T:
        raise InputError(f"start_frame must be an integer in [0, {T - 1}], got {start_frame!r}")
    spatial = tuple(lab.shape[1:])
    frames: list[Any] = [None] * T
    states: list[Any] = [None] * T
    states[start_frame] = dask.delayed(_first_state, pure=True)(lab[start_frame])
    step = dask.delayed(_chain_step, pure=True)
    for t in range(start_frame, T - 1):
        states[t + 1] = step(states[t], flow.frame(t), lab[t + 1], tuple(float(x) for x in spacing),
                             split_share, bool(memory))
    for t in range(start_frame, T):
        frames[t] = dask.delayed(_result, pure=True)(states[t])
    blank = da.zeros((1,) + spatial, dtype=np.int32)
    parts = [blank if f is None else da.from_delayed(f, shape=spatial, dtype=np.int32)[None]
             for f in frames]
    return da.concatenate(parts, axis=0)
