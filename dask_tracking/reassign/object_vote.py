"""A label vote that respects the objects of the later frame (no identity leak).

Nellie's reassignment votes voxel by voxel: a voxel of frame ``t + 1`` takes the
label of the voxels of ``t`` that flow onto it, so where two objects touch or
come close, one object's identity spreads into the voxels of its neighbour
(spec section 9). :func:`object_vote` makes the vote per *object* of frame
``t + 1`` (its own segmentation, e.g. ``ds.labels[t + 1]``): every object takes
the identity held by most of its votes, and a second identity keeps its voxels
only when it holds at least ``split_share`` of the object (a real merge of two
tracked objects stays visible). Voxels of an object that received no vote take
the object's identity, so coverage follows the segmentation.

:func:`respect_objects` and :func:`object_vote_chain` are lazy and bounded: one
task per (frame, spatial block of the labels' chunk grid) reading the block plus a
halo, one small task per frame for the per-object decision (see
:mod:`dask_tracking.reassign.object_vote_graph`). Their answer does not depend on
the chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..blocks import in_box
from ..dataset import InputError
from ..flow.table import FlowTable
from .object_vote_block import BlockVotes, apply_decision, decide, landed_votes, vote_table, voxel_majority
from .object_vote_graph import chain_graph, respect_graph

__all__ = ["object_vote", "respect_objects", "propagate_votes", "object_vote_chain", "object_vote_window",
           "ObjectVoteWindow"]


def _check_share(split_share: Any) -> float:
    if isinstance(split_share, bool) or not isinstance(split_share, (int, float)) or \
            not 0.0 < float(split_share) <= 1.0:
        raise InputError(f"split_share must be a number in (0, 1], got {split_share!r}")
    return float(split_share)


def _check_radius(near_radius_um: Any, allow_none: bool) -> float | None:
    if near_radius_um is None and allow_none:
        return None
    try:
        r = float(near_radius_um)
    except (TypeError, ValueError):
        r = float("nan")
    if isinstance(near_radius_um, bool) or not (r > 0 and math.isfinite(r)):
        allowed = "a finite number > 0 (um)" + (" or None" if allow_none else "")
        raise InputError(f"near_radius_um must be {allowed}, got {near_radius_um!r}")
    return r


def _check_spacing(spacing: Any, ndim: int, allow_none: bool = False) -> tuple[float, ...]:
    if spacing is None and allow_none:
        return (1.0,) * ndim
    try:
        s = tuple(float(x) for x in spacing)
    except (TypeError, ValueError):
        s = ()
    if len(s) != ndim or not all(x > 0 and math.isfinite(x) for x in s):
        raise InputError(f"spacing must be {ndim} finite numbers > 0 (um per voxel), got {spacing!r}")
    return s


def object_vote(votes: Any, objects: Any, *, split_share: float = 0.3, landed: Any = None,
                spacing: Any = None, near_radius_um: float | None = None) -> np.ndarray:
    """Identities of one frame, one per object of its segmentation (whole frame, NumPy).

    Parameters
    ----------
    votes : ndarray, int, shape (Z, Y, X) or (Y, X)
        Per-voxel identities from the voxel vote (e.g. reassigned labels), 0 = none.
    objects : ndarray, int, same shape
        The frame's own objects, 0 = background.
    split_share : float in (0, 1]
        Smallest share of an object's votes for which a second identity keeps its voxels.
    landed : tuple of two (n,) int arrays, optional
        Every single vote (flat voxel index, identity), several per voxel allowed; the
        shares are then counted over these instead of over the per-voxel ``votes``.
    spacing : sequence of float, optional
        Voxel size, um (distances of the nearest-voxel rule). Default: 1 per axis.
    near_radius_um : float, optional
        Search radius of the nearest-voxel rule, in the units of ``spacing``.
        Default None: no limit.

    Returns
    -------
    ndarray, int32, same shape
        0 outside ``objects``; inside, the object's majority identity (ties: the smaller);
        in an object where a second identity holds >= ``split_share`` of the votes,
        each voxel takes the identity of the nearest voxel *of the same object* whose
        vote is one of the kept identities (ties: the smaller identity; none within
        ``near_radius_um``: the majority). Objects with no vote keep 0.
    """
    split_share = _check_share(split_share)
    v = np.asarray(votes)
    o = np.asarray(objects)
    if v.shape != o.shape:
        raise InputError(f"votes and objects must have one shape, got {v.shape} and {o.shape}")
    s = _check_spacing(spacing, v.ndim, allow_none=True)
    radius = _check_radius(near_radius_um, allow_none=True)
    if landed is None:
        flat = np.flatnonzero((o > 0) & (v > 0))
        ids = v.ravel()[flat].astype(np.int64)
    else:
        flat, ids = (np.asarray(x, dtype=np.int64) for x in landed)
    pairs, counts = vote_table(o, flat, ids)
    present = np.unique(o[o > 0]).astype(np.int64)
    dec = decide([BlockVotes(v, present, pairs, counts)], split_share, None)
    whole = tuple(slice(0, n) for n in v.shape)
    return apply_decision(dec, o, np.where(o > 0, v, 0), (0,) * v.ndim, whole, s, radius)


def _frames_chunked(a: da.Array) -> da.Array:
    return a if all(c == 1 for c in a.chunks[0]) else a.rechunk({0: 1})


def _as_array(hlg: HighLevelGraph, name: str, like: da.Array, chunks: tuple) -> da.Array:
    out = da.Array(hlg, name, chunks, dtype=np.int32, meta=np.empty((0,) * like.ndim, np.int32))
    return out if out.chunks == like.chunks else out.rechunk(like.chunks)


def respect_objects(reassigned: Any, labels: Any, *, split_share: float = 0.3, spacing: Any = None,
                    near_radius_um: float = 2.0) -> da.Array:
    """:func:`object_vote` on every frame: reassigned labels made consistent with the segmentation.

    Parameters
    ----------
    reassigned : dask array, int, shape (T, ...)
        Voxel-vote identities (``reassign_labels(...).labels``).
    labels : dask array, int, same shape
        The movie's segmentation (``ds.labels``).
    split_share : float in (0, 1]
        See :func:`object_vote`.
    spacing : sequence of float, optional
        Voxel size, um. Default: 1 per axis (then ``near_radius_um`` is in voxels).
    near_radius_um : float
        Search radius of the nearest-voxel rule, um (a halo of
        ``ceil(near_radius_um / spacing)`` voxels per axis).

    Returns
    -------
    dask array, int32, shape (T, ...), chunks of ``labels``
        Lazy: one task per (frame, block) reading the block plus the halo, one
        small task per frame. The same for every chunking.
    """
    split_share = _check_share(split_share)
    lab = da.asarray(labels)
    if tuple(da.asarray(reassigned).shape) != tuple(lab.shape):
        raise InputError(f"reassigned and labels must have one shape, got {tuple(da.asarray(reassigned).shape)} "
                         f"and {tuple(lab.shape)}")
    s = _check_spacing(spacing, lab.ndim - 1, allow_none=True)
    radius = _check_radius(near_radius_um, allow_none=False)
    lab1 = _frames_chunked(lab)
    votes = da.asarray(reassigned).rechunk(lab1.chunks)
    token = tokenize(votes.name, lab1.name, split_share, s, radius)
    name = f"respect-objects-{token}"
    dsk = respect_graph(token, votes, lab1, s, split_share=split_share, near_radius_um=radius, out_name=name)
    hlg = HighLevelGraph.from_collections(name, dsk, dependencies=[votes, lab1])
    return _as_array(hlg, name, lab, lab1.chunks)


def propagate_votes(identities: Any, rows: Any, shape_next: tuple[int, ...],
                    spacing: Any, *, neighbours: int = 1) -> np.ndarray:
    """Carry one frame's identities to the next frame along the flow (per-voxel votes).

    Every labelled voxel of ``identities`` (frame ``t``) moves by the per-axis median
    vector of the ``neighbours`` nearest flow row starts (Euclidean in um; with one
    neighbour, equidistant rows: the row listed first) and votes for its identity at
    its rounded end point in frame ``t + 1``; where several votes land on one voxel
    the most frequent identity wins (ties: the smaller id).

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
    return voxel_majority(flat, ids, tuple(shape_next))


def _landed(identities: Any, rows: Any, shape_next: tuple[int, ...], spacing: Any,
            neighbours: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every vote: (flat index at ``t + 1``, identity), one per labelled voxel of ``t`` that lands."""
    ident = np.asarray(identities)
    d = ident.ndim
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2 * d + 2)
    whole = tuple(slice(0, int(n)) for n in shape_next)
    if neighbours == 1:
        return landed_votes(ident, (0,) * d, rows, np.arange(len(rows)), whole, spacing)
    from scipy.spatial import cKDTree

    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    pts = np.argwhere(ident > 0)
    if len(pts) == 0 or len(rows) == 0:
        return none
    s = np.asarray(spacing, dtype=np.float64)
    k = int(min(neighbours, len(rows)))
    _, nn = cKDTree(rows[:, 1:1 + d] * s).query(pts * s, k=k)
    vec = np.median(rows[:, 1 + d:1 + 2 * d][np.asarray(nn).reshape(len(pts), k)], axis=1)
    end = np.rint(pts + vec).astype(np.int64)
    ok = in_box(end, 0, np.asarray(shape_next))
    ids = ident[tuple(pts[ok].T)].astype(np.int64)
    return np.ravel_multi_index(tuple(end[ok].T), tuple(shape_next)).astype(np.int64), ids


def _bound_voxels(flow: FlowTable, spacing: tuple[float, ...], max_displacement_um: Any) -> tuple:
    """Per pair the bound on the flow vectors per axis (voxels), and the rows to use.

    ``max_displacement_um`` when given; else a computed table's own largest vector per
    pair; else a lazy table's ``attrs["gate_radius_um"]``; else the lazy table computed.
    """
    from .halo import max_displacement

    n = max(flow.n_frames - 1, 0)
    if max_displacement_um is not None:
        try:
            b = float(max_displacement_um)
        except (TypeError, ValueError):
            b = -1.0
        if isinstance(max_displacement_um, bool) or not (b >= 0 and math.isfinite(b)):
            raise InputError(f"max_displacement_um must be a finite number >= 0 (um), got {max_displacement_um!r}")
        return [tuple(b / x for x in spacing)] * n, list(flow.pairs)
    gate = flow.attrs.get("gate_radius_um")
    if flow.is_lazy and gate is not None:
        return [tuple(float(gate) / x for x in spacing)] * n, list(flow.pairs)
    pairs = flow.compute_pairs() if flow.is_lazy else [np.asarray(p, dtype=np.float64).reshape(-1, flow.ncols)
                                                        for p in flow.pairs]
    return [max_displacement(p, flow.ndim) for p in pairs], pairs


@dataclass(frozen=True)
class ObjectVoteWindow:
    """The object vote over a window of frames, and its state at the window's last frame.

    Attributes
    ----------
    identities : dask array, int32, shape (T, ...)
        As :func:`object_vote_chain` returns.
    next_id : Delayed or None
        Evaluates to the first identity not used by the last frame (int, or None when the
        chain makes no new identities); None for a window of one frame.
    ghosts : dask array, int32, spatial shape, or None
        ``memory``: the votes the last frame carries for identities no object took
        (0 elsewhere); None without ``memory`` or for a window of one frame.

    A later window started from the last frame with ``initial=(identities[-1], next_id,
    ghosts)`` continues the chain exactly (see :func:`object_vote_window`).
    """

    identities: da.Array
    next_id: Any
    ghosts: da.Array | None


def object_vote_chain(labels: Any, flow: FlowTable, spacing: Any, *, split_share: float = 0.3,
                      start_frame: int = 0, memory: bool = True, near_radius_um: float = 2.0,
                      max_displacement_um: float | None = None) -> da.Array:
    """Identities through time by an object vote chained along the flow.

    Frame ``start_frame`` keeps its own label ids. Each later frame's objects
    (``labels[t + 1] > 0``, one object per id) take their identities from the
    previous frame's *result*, carried along the flow (every labelled voxel moves by
    its nearest flow row, :func:`propagate_votes`) and decided per object
    (:func:`object_vote`): an identity cannot leak into a neighbouring object unless
    it holds ``split_share`` of it. Objects that get no vote at all take new
    identities (never used before, in ascending object id). With ``memory`` an
    identity that no object of frame ``t + 1`` takes (a frame of poor segmentation)
    keeps its carried votes one more frame and can be taken again at ``t + 2``.

    Parameters
    ----------
    labels : dask array, int, shape (T, ...)
        The movie's segmentation (``ds.labels``), any spatial chunks.
    flow : FlowTable
        Flow of the movie (voxel rows).
    spacing : sequence of float
        Voxel size, um.
    split_share : float in (0, 1]
        Smallest share of an object's votes for which a second identity is kept.
    start_frame : int
        First frame (its own ids); earlier frames are 0.
    memory : bool
        Carry the votes of an identity that no object took one more frame.
    near_radius_um : float
        Search radius of the nearest-voxel rule in objects that keep two identities, um
        (a halo of ``ceil(near_radius_um / spacing)`` voxels per axis).
    max_displacement_um : float, optional
        Bound on every flow vector's length, um (sets the vote halo). Default: a
        computed table's own largest vector per pair; for a lazy table its
        ``attrs["gate_radius_um"]`` (``estimate_flow`` records it; no vector is
        longer), else the table is computed (a few rows per marker). A row beyond the
        bound raises InputError when its pair is computed.

    Returns
    -------
    dask array, int32, shape (T, ...), chunks of ``labels``
        Lazy: per step, one task per (frame, block) reading the blocks of the
        previous frame within the vote halo, one small task per frame deciding the
        objects, one per (frame, block) applying it. The same for every chunking.

    Raises
    ------
    InputError
        On a bad argument, before any work; at compute time when a flow row exceeds
        the bound.
    """
    return object_vote_window(labels, flow, spacing, split_share=split_share, start_frame=start_frame,
                              memory=memory, near_radius_um=near_radius_um,
                              max_displacement_um=max_displacement_um).identities


def _check_window_initial(initial: Any, spatial_shape: tuple, chunks: tuple, memory: bool) -> tuple | None:
    if initial is None:
        return None
    try:
        ident, next_id, ghosts = initial
    except (TypeError, ValueError):
        raise InputError("initial must be a tuple (identities, next_id, ghosts): two arrays of the spatial "
                         f"shape {spatial_shape} (ghosts may be None) and an integer or None") from None
    if next_id is not None and (isinstance(next_id, bool) or not isinstance(next_id, (int, np.integer))
                                or next_id < 1):
        raise InputError(f"initial next_id must be an integer >= 1 or None, got {next_id!r}")
    out = []
    for name, a in (("identities", ident), ("ghosts", ghosts)):
        if a is None:
            if name == "identities":
                raise InputError("initial identities must be an array, got None")
            out.append(None)
            continue
        a = da.asarray(a)
        if tuple(a.shape) != tuple(spatial_shape):
            raise InputError(f"initial {name} has shape {tuple(a.shape)}; allowed: the spatial shape "
                             f"{tuple(spatial_shape)}")
        if not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"initial {name} has dtype {a.dtype}; allowed: an integer dtype")
        out.append(a.rechunk(chunks))
    return out[0], None if next_id is None else int(next_id), out[1] if memory else None


def object_vote_window(labels: Any, flow: FlowTable, spacing: Any, *, split_share: float = 0.3,
                       start_frame: int = 0, memory: bool = True, near_radius_um: float = 2.0,
                       max_displacement_um: float | None = None,
                       initial: tuple[Any, int | None, Any] | None = None) -> ObjectVoteWindow:
    """:func:`object_vote_chain`, started from a given state, with the state of its last frame.

    A long movie can be decided in windows of frames: each window is a (time) slice
    of the movie starting at the last frame of the window before, with
    ``initial=(identities of that frame, next_id, ghosts)`` from the window before's
    :class:`ObjectVoteWindow`. The windows give, frame for frame, the identities of one
    uninterrupted chain, and the graph of a window does not grow with the movie.

    Parameters
    ----------
    labels, flow, spacing, split_share, start_frame, memory, near_radius_um, max_displacement_um
        As :func:`object_vote_chain`.
    initial : (identities, next_id, ghosts), optional
        State of frame ``start_frame``: its identities (spatial array), the first unused
        identity (int or None) and, with ``memory``, the carried votes (spatial array or
        None). Default: the frame keeps its own label ids.

    Returns
    -------
    ObjectVoteWindow
    """
    split_share = _check_share(split_share)
    if not isinstance(flow, FlowTable):
        raise InputError(f"flow must be a FlowTable, got {type(flow).__name__}")
    lab = da.asarray(labels)
    T = lab.shape[0]
    if flow.n_frames != T or flow.ndim != lab.ndim - 1:
        raise InputError(f"flow covers {flow.n_frames} frames in {flow.ndim}D but labels have shape "
                         f"{tuple(lab.shape)}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"labels must have an integer dtype, got {lab.dtype}")
    if isinstance(start_frame, bool) or not isinstance(start_frame, (int, np.integer)) or \
            not 0 <= start_frame < T:
        raise InputError(f"start_frame must be an integer in [0, {T - 1}], got {start_frame!r}")
    s = _check_spacing(spacing, flow.ndim)
    radius = _check_radius(near_radius_um, allow_none=False)
    bound, pairs = _bound_voxels(flow, s, max_displacement_um)
    lab1 = _frames_chunked(lab)
    rows: list[Any] = []
    lazy: list[Delayed] = []
    for p in pairs:
        if isinstance(p, Delayed):
            rows.append(p.key)
            lazy.append(p)
        else:
            rows.append(np.asarray(p, dtype=np.float64).reshape(-1, flow.ncols))
    init = _check_window_initial(initial, tuple(lab.shape[1:]), tuple(lab1.chunks[1:]), bool(memory))
    token = tokenize(lab1.name, [r if isinstance(r, tuple | str) else tokenize(r) for r in rows], s, bound,
                     split_share, int(start_frame), bool(memory), radius,
                     None if init is None else (init[0].name, init[1], None if init[2] is None else init[2].name))
    name = f"object-vote-chain-{token}"
    state = f"object-vote-state-{token}"
    init_names = None if init is None else {"ident": init[0].name, "next_id": init[1],
                                            "ghosts": None if init[2] is None else init[2].name}
    dsk = chain_graph(token, lab1, rows, s, bound, split_share=split_share, start_frame=int(start_frame),
                      memory=bool(memory), near_radius_um=radius, out_name=name, initial=init_names,
                      state_name=state)
    deps = [lab1, *lazy] + ([] if init is None else [a for a in (init[0], init[2]) if a is not None])
    gname = state + "-ghosts"
    ghost_keys = {key: dsk.pop(key) for key in [key for key in dsk if isinstance(key, tuple) and key[0] == gname]}
    hlg = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    ident = _as_array(hlg, name, lab, lab1.chunks)
    has_state = state + "-next" in dsk
    next_id = Delayed(state + "-next", hlg, layer=name) if has_state else None
    ghosts = None
    if ghost_keys:      # a layer of its own, on the chain's
        layers = dict(hlg.layers)
        dependencies = {key: set(v) for key, v in hlg.dependencies.items()}
        layers[gname] = ghost_keys
        dependencies[gname] = {name}
        ghosts = da.Array(HighLevelGraph(layers, dependencies), gname, lab1.chunks[1:], dtype=np.int32,
                          meta=np.empty((0,) * (lab.ndim - 1), np.int32))
    return ObjectVoteWindow(ident, next_id, ghosts)
