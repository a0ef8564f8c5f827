"""Task graphs of the object vote, per (frame, spatial block) of the labels' chunk grid.

Chain (:func:`chain_graph`), for each step ``t -> t + 1`` and block ``b``:

* ``rows``: one task per pair splits the pair's flow rows per block (rows that may be
  nearest to a voxel of the block's source box; the vector bound is checked here);
* ``vote(t+1, b)``: identities (and carried votes, ``memory``) of frame ``t`` over
  ``b``'s core plus the *vote halo* (``ceil(bound) + 1`` voxels per axis: no vote
  lands farther) read from the neighbouring blocks of ``t``, the block's rows and
  ``labels[t + 1]`` of the core -> per-voxel votes and a small table;
* ``decide(t+1)``: one small task per frame sums the tables (a few numbers per object)
  and carries the next unused identity;
* ``apply(t+1, b)``: labels and votes over the core plus the *near halo*
  (``ceil(near_radius_um / spacing)``) -> the block's identities;
* with ``memory``: identity sets per frame and the carried votes per block.

Every block task reads only the chunks overlapping its core plus a halo; the frame
tasks handle tables and id lists. :func:`respect_graph` is the same without the chain.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from dask._task_spec import Task, TaskRef

from ..backend import to_host
from ..blocks import halo_voxels, iter_blocks
from ..reads import ChunkReads, resolve
from .graph import Region, _assemble, _chunk_bounds, _region
from .object_vote_block import (BlockVotes, Decision, apply_decision, block_votes, decide, landed_votes,
                                vote_table)
from .object_vote_rows import split_rows

__all__ = ["chain_graph", "respect_graph", "vote_halo"]


def vote_halo(bound_voxels: Sequence[float]) -> tuple[int, ...]:
    """Depth per axis from which a vote can land in a core: ``ceil(bound) + 1`` voxels."""
    return tuple(int(np.ceil(float(b) - 1e-9)) + 1 for b in bound_voxels)


# --------------------------------------------------------------------------- task literals
@dataclass(frozen=True)
class VoteSpec:
    """Static arguments of one vote task (one opaque literal in the graph)."""

    region: Region
    n_ident: int
    n_ghost: int
    core: tuple[slice, ...]
    spacing: tuple[float, ...]


@dataclass(frozen=True)
class ApplySpec:
    """Static arguments of one apply task: the near region, where the core's own chunk is."""

    region: Region
    n_lab: int
    own: int
    inner: tuple[slice, ...]
    spacing: tuple[float, ...]
    radius: float


@dataclass(frozen=True)
class RowsSpec:
    """Static arguments of one pair's row split."""

    boxes: tuple
    spacing: tuple[float, ...]
    ndim: int
    bound: tuple[float, ...]
    pair: int


# --------------------------------------------------------------------------- task bodies
def _init_task(chunk) -> np.ndarray:
    return to_host(resolve(chunk))[0].astype(np.int32)


def _zeros_task(shape) -> np.ndarray:
    return np.zeros(tuple(shape), np.int32)


def _max_task(chunk) -> int:
    a = to_host(resolve(chunk))
    return int(a.max(initial=0)) if a.size else 0


def _first_next_task(values) -> int:
    return int(max(values, default=0)) + 1


def _rows_task(rows, spec: RowsSpec):
    return split_rows(rows, spec.boxes, spec.spacing, spec.ndim, spec.bound, spec.pair)


def _vote_task(spec: VoteSpec, picked, labels_chunk, *pieces) -> BlockVotes:
    n = spec.n_ident
    src = _assemble(spec.region, pieces[:n], np.int32)
    if spec.n_ghost:
        ghost = _assemble(spec.region, pieces[n:n + spec.n_ghost], np.int32)
        fill = (src == 0) & (ghost > 0)
        src[fill] = ghost[fill]
    rows, index = picked
    flat, ids = landed_votes(src, spec.region.offset, rows, index, spec.core, spec.spacing)
    return block_votes(to_host(resolve(labels_chunk))[0], flat, ids)


def _table_of(bv: BlockVotes):
    return bv.table


def _decide_task(pieces, split_share, prev) -> Decision:
    next_id = prev.next_id if isinstance(prev, Decision) else prev
    return decide(pieces, split_share, next_id)


def _apply_task(decision: Decision, spec: ApplySpec, *pieces) -> np.ndarray:
    own_chunk = resolve(pieces[spec.own])      # the neighbours' labels are read only if needed below
    own = to_host(own_chunk)[0]
    objects = own[own > 0].astype(np.int64)
    if not decision.multi[np.searchsorted(decision.objects, objects)].any():
        # no object of the core keeps two identities: the core alone decides
        whole = tuple(slice(0, n) for n in own.shape)
        return apply_decision(decision, own, pieces[spec.n_lab + spec.own].votes, (0,) * own.ndim, whole,
                              spec.spacing, spec.radius)
    region = spec.region
    labs = [own_chunk if i == spec.own else resolve(p) for i, p in enumerate(pieces[:spec.n_lab])]
    objects = _assemble(region, labs, np.int64)
    votes = _assemble(region, [p.votes for p in pieces[spec.n_lab:]], np.int32)
    return apply_decision(decision, objects, votes, region.offset, spec.inner, spec.spacing, spec.radius)


def _ids_task(block) -> np.ndarray:
    a = np.asarray(block)
    return np.unique(a[a > 0]).astype(np.int64)


def _frame_ids_task(pieces) -> np.ndarray:
    return np.unique(np.concatenate([np.zeros(0, np.int64)] + list(pieces)))


def _lost_task(before, after) -> np.ndarray:
    return np.setdiff1d(before, after)


def _ghost_task(bv: BlockVotes, lost) -> np.ndarray:
    v = bv.votes
    return np.where(np.isin(v, lost), v, 0).astype(np.int32)


def _table_task(votes_chunk, labels_chunk) -> BlockVotes:
    v = to_host(votes_chunk)[0].astype(np.int64)
    o = to_host(resolve(labels_chunk))[0]
    inside = (np.asarray(o) > 0) & (v > 0)
    flat = np.flatnonzero(inside)
    pairs, counts = vote_table(o, flat, v.ravel()[flat])
    present = np.unique(o[o > 0]).astype(np.int64)
    return BlockVotes(np.where(inside, v, 0).astype(np.int32), present, pairs, counts)


def _with_t(block) -> np.ndarray:
    return np.asarray(block)[None]


# --------------------------------------------------------------------------- builders
def _outer(core: Sequence[slice], halo: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(c.start - h, 0), min(c.stop + h, n)) for c, h, n in zip(core, halo, shape))


def _apply_specs(blocks, bounds, halo, shape, spacing, radius) -> dict:
    out = {}
    for b in blocks:
        reg, cidx = _region(bounds, _outer(b.core, halo, shape))
        inner = tuple(slice(c.start - o, c.stop - o) for c, o in zip(b.core, reg.offset))
        out[b.index] = (ApplySpec(reg, len(cidx), cidx.index(tuple(b.index)), inner, spacing, float(radius)), cidx)
    return out


def _label_reads(labels: Any):
    """``lab(t, block)``: the graph node of a labels chunk (read inside the task that uses it
    when the chunks are stored, so no task holds a chunk for another, and a frame's chunks are
    not kept from its votes to its decision)."""
    reads = ChunkReads(labels)

    def lab(t, c):
        return reads.node((labels.name, t) + tuple(c))

    return lab


def _next_id_task(decision) -> int | None:
    nid = decision.next_id if isinstance(decision, Decision) else decision
    return None if nid is None else int(nid)


def _initial_ident_task(chunk) -> np.ndarray:
    return np.asarray(to_host(resolve(chunk))).astype(np.int32)


def chain_graph(token: str, labels: Any, rows: Sequence[Any], spacing: Sequence[float],
                bound_voxels: Sequence[Sequence[float]], *, split_share: float, start_frame: int, memory: bool,
                near_radius_um: float, out_name: str, initial: dict | None = None,
                state_name: str | None = None) -> dict:
    """Task dict of :func:`~dask_tracking.reassign.object_vote.object_vote_chain`.

    Parameters
    ----------
    token : str
        Unique suffix of the keys.
    labels : dask.array.Array
        (T, ...) segmentation, one frame per chunk.
    rows : list of ndarray or key
        Flow rows per pair (an ndarray, or the key of a task that returns them).
    spacing : sequence of float
        Voxel size, um.
    bound_voxels : sequence of (sequence of float)
        Per pair, the flow vectors' bound per axis, voxels (sets the pair's vote halo).
    out_name : str
        Name of the output layer: keys ``(out_name, t, *block)``.
    initial : dict, optional
        The state of frame ``start_frame`` in a longer chain: ``"ident"`` (name of a
        spatial array of its identities, the chunks of ``labels``), ``"next_id"`` (first
        unused identity, int or None) and ``"ghosts"`` (name of a spatial array of the
        votes carried past it, ``memory``; or None). Default: the frame's own ids.
    state_name : str, optional
        Also make the state of the last frame: ``state_name + "-next"`` (its next
        unused identity) and, with ``memory``, ``(state_name + "-ghosts", *block)``.

    Returns
    -------
    dict
        The tasks (stored ``labels`` chunks are read inside the tasks that use them).
    """
    T = labels.shape[0]
    shape = tuple(labels.shape[1:])
    nd = len(shape)
    chunks = tuple(labels.chunks[1:])
    bounds = _chunk_bounds(chunks)
    blocks = list(iter_blocks(chunks))
    sp = tuple(float(s) for s in spacing)
    h_near = halo_voxels(near_radius_um, sp)
    dsk: dict = {}

    def k(kind, *idx):
        return (f"objvote-{kind}-{token}", *idx)

    lab = _label_reads(labels)

    apply_specs = _apply_specs(blocks, bounds, h_near, shape, sp, near_radius_um)
    by_halo: dict = {}          # vote halo -> (regions per block, source boxes)
    rows_spec, vote_regions = {}, {}
    for t in range(start_frame, T - 1):
        bound = tuple(float(x) for x in bound_voxels[t])
        h_vote = vote_halo(bound)
        if h_vote not in by_halo:
            outers = [_outer(b.core, h_vote, shape) for b in blocks]
            by_halo[h_vote] = ({b.index: _region(bounds, o) for b, o in zip(blocks, outers)},
                               tuple((tuple(s.start for s in o), tuple(s.stop for s in o)) for o in outers))
        vote_regions[t], boxes = by_halo[h_vote]
        rows_spec[t] = RowsSpec(boxes, sp, nd, bound, t)

    for t in range(T):
        for b in blocks:
            if t < start_frame:
                dsk[k("ident", t, *b.index)] = (_zeros_task, tuple(s.stop - s.start for s in b.core))
    t0 = start_frame
    if initial is None:
        for b in blocks:
            dsk[k("ident", t0, *b.index)] = Task(k("ident", t0, *b.index), _init_task, lab(t0, b.index))
            dsk[k("max", *b.index)] = Task(k("max", *b.index), _max_task, lab(t0, b.index))
        dsk[k("next", t0)] = (_first_next_task, [k("max", *b.index) for b in blocks])
    else:
        for b in blocks:
            dsk[k("ident", t0, *b.index)] = (_initial_ident_task, (initial["ident"],) + tuple(b.index))
            if memory and initial.get("ghosts") is not None:
                dsk[k("ghost", t0, *b.index)] = (_initial_ident_task, (initial["ghosts"],) + tuple(b.index))
        dsk[k("next", t0)] = initial["next_id"]
    carried = memory and initial is not None and initial.get("ghosts") is not None
    if memory:
        for b in blocks:
            dsk[k("ids", t0, *b.index)] = (_ids_task, k("ident", t0, *b.index))
        dsk[k("fids", t0)] = (_frame_ids_task, [k("ids", t0, *b.index) for b in blocks])

    for t in range(t0, T - 1):
        dsk[k("rows", t)] = (_rows_task, rows[t], rows_spec[t])
        for i, b in enumerate(blocks):
            dsk[k("pick", t, *b.index)] = (operator.getitem, k("rows", t), i)
            reg, cidx = vote_regions[t][b.index]
            ident = [k("ident", t, *c) for c in cidx]
            ghost = [k("ghost", t, *c) for c in cidx] if (memory and (t > t0 or carried)) else []
            spec = VoteSpec(reg, len(ident), len(ghost), b.core, sp)
            dsk[k("vote", t + 1, *b.index)] = Task(k("vote", t + 1, *b.index), _vote_task, spec,
                                                   TaskRef(k("pick", t, *b.index)), lab(t + 1, b.index),
                                                   *map(TaskRef, ident), *map(TaskRef, ghost))
            dsk[k("table", t + 1, *b.index)] = (_table_of, k("vote", t + 1, *b.index))
        prev = k("next", t0) if t == t0 else k("decide", t)
        dsk[k("decide", t + 1)] = (_decide_task, [k("table", t + 1, *b.index) for b in blocks], split_share, prev)
        for b in blocks:
            spec, cidx = apply_specs[b.index]
            dsk[k("ident", t + 1, *b.index)] = Task(k("ident", t + 1, *b.index), _apply_task,
                                                    TaskRef(k("decide", t + 1)), spec,
                                                    *[lab(t + 1, c) for c in cidx],
                                                    *[TaskRef(k("vote", t + 1, *c)) for c in cidx])
        if memory:
            for b in blocks:
                dsk[k("ids", t + 1, *b.index)] = (_ids_task, k("ident", t + 1, *b.index))
            dsk[k("fids", t + 1)] = (_frame_ids_task, [k("ids", t + 1, *b.index) for b in blocks])
            dsk[k("lost", t + 1)] = (_lost_task, k("fids", t), k("fids", t + 1))
            for b in blocks:
                dsk[k("ghost", t + 1, *b.index)] = (_ghost_task, k("vote", t + 1, *b.index), k("lost", t + 1))
    for t in range(T):
        for b in blocks:
            dsk[(out_name, t) + b.index] = (_with_t, k("ident", t, *b.index))
    if state_name is not None and T - 1 > t0:
        dsk[state_name + "-next"] = (_next_id_task, k("decide", T - 1))
        if memory:
            for b in blocks:
                dsk[(state_name + "-ghosts",) + tuple(b.index)] = k("ghost", T - 1, *b.index)
    return dsk


def respect_graph(token: str, votes: Any, labels: Any, spacing: Sequence[float], *, split_share: float,
                  near_radius_um: float, out_name: str) -> dict:
    """Task dict of :func:`~dask_tracking.reassign.object_vote.respect_objects` (same chunks, T chunks 1)."""
    T = labels.shape[0]
    shape = tuple(labels.shape[1:])
    chunks = tuple(labels.chunks[1:])
    bounds = _chunk_bounds(chunks)
    blocks = list(iter_blocks(chunks))
    sp = tuple(float(s) for s in spacing)
    h_near = halo_voxels(near_radius_um, sp)
    dsk: dict = {}

    def k(kind, *idx):
        return (f"objvote-respect-{kind}-{token}", *idx)

    apply_specs = _apply_specs(blocks, bounds, h_near, shape, sp, near_radius_um)
    lab = _label_reads(labels)
    for t in range(T):
        for b in blocks:
            dsk[k("votes", t, *b.index)] = Task(k("votes", t, *b.index), _table_task,
                                                TaskRef((votes.name, t) + b.index), lab(t, b.index))
            dsk[k("table", t, *b.index)] = (_table_of, k("votes", t, *b.index))
        dsk[k("decide", t)] = (_decide_task, [k("table", t, *b.index) for b in blocks], split_share, None)
        for b in blocks:
            spec, cidx = apply_specs[b.index]
            dsk[k("apply", t, *b.index)] = Task(k("apply", t, *b.index), _apply_task, TaskRef(k("decide", t)), spec,
                                                *[lab(t, c) for c in cidx],
                                                *[TaskRef(k("votes", t, *c)) for c in cidx])
            dsk[(out_name, t) + b.index] = (_with_t, k("apply", t, *b.index))
    return dsk
