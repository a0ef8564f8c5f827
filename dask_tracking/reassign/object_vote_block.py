"""The object vote on one spatial block: votes, the frame's decision, its application.

Three steps, each NumPy on at most one block plus its halo, the middle one on a few
numbers per object of the frame:

1. :func:`landed_votes` / :func:`block_votes`: the votes landing in a block's core
   (several per voxel allowed), the per-voxel majority and a small table
   ``(object, identity) -> votes`` of the block;
2. :func:`decide`: the tables of a frame summed; per object the majority identity,
   the second identities kept (``>= split_share`` of the object's votes) and new
   identities for objects without votes (ascending object id from a running next id);
3. :func:`apply_decision`: the identities written into a block; a voxel of an object
   that keeps several identities takes the identity of the nearest voxel of the
   *same object* whose per-voxel vote is one of the kept identities, searched within
   ``near_radius_um`` (ties: the smaller identity); none within it: the majority.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..blocks import in_box
from .nearest import nearest_index

__all__ = ["BlockVotes", "Decision", "VoteTable", "apply_decision", "block_votes", "decide", "landed_votes",
           "pair_keys", "voxel_majority"]

_SHIFT = np.int64(1) << np.int64(32)


def pair_keys(objects: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """One int64 per (object, identity) pair (both below 2**31)."""
    return np.asarray(objects, dtype=np.int64) * _SHIFT + np.asarray(identities, dtype=np.int64)


@dataclass(frozen=True)
class VoteTable:
    """The few numbers per object that a block sends to its frame's decision.

    Attributes
    ----------
    objects : (k,) int64
        Object ids present in the core (sorted).
    pairs : (n, 2) int64
        ``(object, identity)`` pairs with votes in the core (sorted, unique).
    counts : (n,) int64
        Votes per pair.
    """

    objects: np.ndarray
    pairs: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class BlockVotes:
    """What one block tells its frame.

    Attributes
    ----------
    votes : ndarray, int32, shape of the block's core
        Per-voxel majority of the landed votes (ties: the smaller identity), 0 = none.
    objects : (k,) int64
        Object ids present in the core (sorted).
    pairs : (n, 2) int64
        ``(object, identity)`` pairs with votes in the core (sorted, unique).
    counts : (n,) int64
        Votes per pair.
    """

    votes: np.ndarray
    objects: np.ndarray
    pairs: np.ndarray
    counts: np.ndarray

    @property
    def table(self) -> VoteTable:
        """The block's table without its votes (what :func:`decide` needs)."""
        return VoteTable(self.objects, self.pairs, self.counts)


@dataclass(frozen=True)
class Decision:
    """The identities of one frame's objects (a few numbers per object).

    Attributes
    ----------
    objects : (k,) int64
        Every object id of the frame, sorted.
    identity : (k,) int64
        The majority identity, a new identity for an object without votes, or 0
        (no votes and no new identities).
    multi : (k,) bool
        The object keeps a second identity.
    kept : (p,) int64
        Sorted :func:`pair_keys` of the kept ``(object, identity)`` pairs.
    next_id : int or None
        First identity not used yet after this frame (None: no new identities).
    """

    objects: np.ndarray
    identity: np.ndarray
    multi: np.ndarray
    kept: np.ndarray
    next_id: int | None


def landed_votes(source: np.ndarray, offset: Sequence[int], rows: np.ndarray, row_index: np.ndarray,
                 core: Sequence[slice], spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The votes of a source region that land in a core.

    Parameters
    ----------
    source : ndarray, int, shape of the region
        Identities at frame ``t`` over the region (0 = none).
    offset : sequence of int
        Region start in frame coordinates.
    rows : (n, 2d+2) float64
        Flow rows of pair ``t`` (a subset holding every row nearest to a region voxel).
    row_index : (n,) int64
        The rows' indices in the pair's table (the tie rule between equidistant rows).
    core : tuple of slice
        Target core at ``t + 1``, frame coordinates.
    spacing : sequence of float
        Voxel size, um.

    Returns
    -------
    flat : (v,) int64
        Flat index in the core (C order) of every vote.
    ids : (v,) int64
        Identity of every vote.
    """
    d = source.ndim
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    pts = np.argwhere(source > 0)
    if len(pts) == 0 or len(rows) == 0:
        return none
    ids = source[tuple(pts.T)].astype(np.int64)
    pos = pts + np.asarray(offset, dtype=np.int64)
    near = nearest_index(rows[:, 1:1 + d], pos, spacing, row_index)
    end = np.rint(pos + rows[near, 1 + d:1 + 2 * d]).astype(np.int64)
    lo = np.array([c.start for c in core], dtype=np.int64)
    hi = np.array([c.stop for c in core], dtype=np.int64)
    ok = in_box(end, lo, hi)
    if not ok.any():
        return none
    flat = np.ravel_multi_index(tuple((end[ok] - lo).T), tuple(hi - lo)).astype(np.int64)
    return flat, ids[ok]


def voxel_majority(flat: np.ndarray, ids: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per voxel the most frequent identity among its votes (ties: the smaller), int32."""
    out = np.zeros(shape, np.int32)
    if len(flat) == 0:
        return out
    key, counts = np.unique(np.stack([flat, ids], axis=1), axis=0, return_counts=True)
    order = np.lexsort((key[:, 1], -counts, key[:, 0]))
    key = key[order]
    first = np.r_[True, key[1:, 0] != key[:-1, 0]]
    out.ravel()[key[first, 0]] = key[first, 1].astype(np.int32)
    return out


def vote_table(objects: np.ndarray, flat: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(object, identity)`` pairs and their counts of votes landing inside objects."""
    obj = np.asarray(objects).ravel()[flat].astype(np.int64)
    ok = (obj > 0) & (ids > 0)
    if not ok.any():
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    pairs, counts = np.unique(np.stack([obj[ok], ids[ok]], axis=1), axis=0, return_counts=True)
    return pairs.astype(np.int64), counts.astype(np.int64)


def block_votes(objects_core: np.ndarray, flat: np.ndarray, ids: np.ndarray) -> BlockVotes:
    """:class:`BlockVotes` of a core from its landed votes and its objects (frame ``t + 1``)."""
    o = np.asarray(objects_core)
    pairs, counts = vote_table(o, flat, ids)
    present = np.unique(o[o > 0]).astype(np.int64)
    return BlockVotes(voxel_majority(flat, ids, o.shape), present, pairs, counts)


def decide(pieces: Sequence[VoteTable | BlockVotes], split_share: float, next_id: int | None) -> Decision:
    """Sum the tables of a frame's blocks and decide every object's identities.

    Parameters
    ----------
    pieces : sequence of VoteTable (or BlockVotes)
        One per block of the frame (any order).
    split_share : float in (0, 1]
        Smallest share of an object's votes for which a second identity is kept.
    next_id : int or None
        First unused identity: objects without votes take ``next_id, next_id + 1, ...``
        in ascending object id. None: they keep 0.

    Returns
    -------
    Decision
    """
    empty = np.zeros(0, np.int64)
    objects = np.unique(np.concatenate([empty] + [p.objects for p in pieces]))
    pairs = np.concatenate([np.zeros((0, 2), np.int64)] + [p.pairs for p in pieces])
    counts = np.concatenate([empty] + [p.counts for p in pieces])
    identity = np.zeros(len(objects), np.int64)
    multi = np.zeros(len(objects), bool)
    kept = empty
    if len(pairs):
        pairs, inv = np.unique(pairs, axis=0, return_inverse=True)
        counts = np.bincount(inv.ravel(), weights=counts, minlength=len(pairs)).astype(np.int64)
        order = np.lexsort((-counts, pairs[:, 0]))          # per object, most votes first (stable: smaller id)
        pairs, counts = pairs[order], counts[order]
        first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
        starts = np.flatnonzero(first)
        total = np.add.reduceat(counts, starts)
        total_of = np.repeat(total, np.diff(np.r_[starts, len(pairs)]))
        keep = ~first & (counts >= split_share * total_of)
        at = np.searchsorted(objects, pairs[first, 0])
        identity[at] = pairs[first, 1]
        multi[np.searchsorted(objects, np.unique(pairs[keep, 0]))] = True
        kept = np.sort(pair_keys(pairs[keep | first, 0], pairs[keep | first, 1]))
    if next_id is not None:
        voted = np.zeros(len(objects), bool)
        if len(pairs):
            voted[np.searchsorted(objects, np.unique(pairs[:, 0]))] = True
        orphan = np.flatnonzero(~voted)
        identity[orphan] = np.arange(next_id, next_id + len(orphan), dtype=np.int64)
        next_id = int(next_id) + len(orphan)
    return Decision(objects, identity, multi, kept, next_id)


def apply_decision(decision: Decision, objects: np.ndarray, votes: np.ndarray, offset: Sequence[int],
                   inner: Sequence[slice], spacing: Sequence[float], near_radius_um: float | None) -> np.ndarray:
    """Identities of a block's core from its frame's decision.

    Parameters
    ----------
    decision : Decision
    objects, votes : ndarray, int, shape of the region (core plus a halo of at least
        ``near_radius_um`` on every side, clipped to the frame)
        Objects of the frame and per-voxel votes over the region.
    offset : sequence of int
        Region start in frame coordinates.
    inner : tuple of slice
        The core within the region.
    spacing : sequence of float
        Voxel size, um.
    near_radius_um : float or None
        Search radius of the nearest kept voted voxel, um (None: the whole region).

    Returns
    -------
    ndarray, int32, shape of the core
        0 outside objects.
    """
    inner = tuple(inner)
    obj_core = np.asarray(objects)[inner]
    out = np.zeros(obj_core.shape, np.int32)
    inside = obj_core > 0
    if not inside.any():
        return out
    o = obj_core[inside].astype(np.int64)
    at = np.searchsorted(decision.objects, o)
    out[inside] = decision.identity[at].astype(np.int32)
    if not decision.multi[at].any():
        return out
    multi = np.unique(o[decision.multi[at]])
    region = np.asarray(objects).astype(np.int64, copy=False)
    v = np.asarray(votes)
    cand = np.isin(region, multi) & (v > 0)
    pts = np.argwhere(cand)
    src_obj = region[cand]
    src_id = v[cand].astype(np.int64)
    keys = pair_keys(src_obj, src_id)
    pos = np.searchsorted(decision.kept, keys)
    good = (pos < len(decision.kept)) & (decision.kept[np.minimum(pos, len(decision.kept) - 1)] == keys)
    pts, src_obj, src_id = pts[good], src_obj[good], src_id[good]
    core_start = np.array([s.start for s in inner], dtype=np.int64)
    for m in multi:
        mine = src_obj == m
        if not mine.any():
            continue
        q = np.argwhere(obj_core == m)
        near = nearest_index(pts[mine], q + core_start, spacing, src_id[mine], radius=near_radius_um)
        hit = near >= 0
        out[tuple(q[hit].T)] = src_id[mine][near[hit]].astype(np.int32)
    return out
