"""Label voting, running matches and the fill of unmatched voxels, per block (spec 4.4, 4.5).

All functions work on one spatial block of frame t+1 (its core) and the small
arrays derived from it; nothing here sees a whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .candidates import Candidates

__all__ = ["ObjectVotes", "best_matches", "fill_at_voxels", "match_dtype", "merge_matches", "merge_object_votes",
           "object_votes_at_voxels", "vote_at_voxels"]

VOTE_EPS = 1e-6


def _local(coords: np.ndarray, start: Sequence[int]) -> tuple[np.ndarray, ...]:
    return tuple((coords - np.asarray(start, dtype=np.int64)).T)


def vote_at_voxels(cands: Candidates, source_labels: np.ndarray, flat: np.ndarray, labels_next: np.ndarray,
                   shape: Sequence[int], core_start: Sequence[int]) -> np.ndarray:
    """Reassigned labels of one block of frame t+1 by weighted vote (spec 4.5), at its labelled voxels.

    Parameters
    ----------
    cands : Candidates
        The block's candidates (targets in this core).
    source_labels : (n,) int64
        Reassigned label at frame t of ``cands.source`` (0: none).
    flat : (m,) int64
        Raster index within the block (``shape``) of its labelled voxels, ascending.
    labels_next : (m,) int
        Original ids (objects or branches) of frame t+1 at those voxels.
    shape, core_start : sequence of int
        The block's shape and the frame coordinates of its first voxel.

    Returns
    -------
    (m,) int32
        For each voxel of ``flat`` with candidates whose source carries a label and
        which is labelled in ``labels_next``: the label with the largest sum of
        ``1 / (error + 1e-6)`` (summed in candidate order), the smallest label on exact
        ties; 0 elsewhere. (Nellie's further "refinement" passes never change this: B5.)
    """
    flat = np.asarray(flat, dtype=np.int64).reshape(-1)
    out = np.zeros(len(flat), dtype=np.int32)
    if len(cands) == 0 or len(flat) == 0:
        return out
    lab = np.asarray(source_labels, dtype=np.int64)
    f = np.ravel_multi_index(_local(cands.target.astype(np.int64), core_start), tuple(shape))
    pos = np.minimum(np.searchsorted(flat, f), len(flat) - 1)
    lab_next = np.asarray(labels_next)
    keep = (lab > 0) & (flat[pos] == f)
    keep &= lab_next[pos] > 0
    if not keep.any():
        return out
    pos = pos[keep]
    lab = lab[keep]
    w = 1.0 / (cands.error[keep].astype(np.float64) + VOTE_EPS)
    # group (target, label) in candidate order; sum weights in that order
    order = np.lexsort((lab, pos))
    p, l = pos[order], lab[order]
    new = np.ones(len(p), dtype=bool)
    new[1:] = (p[1:] != p[:-1]) | (l[1:] != l[:-1])
    gid = np.cumsum(new) - 1
    group_of = np.empty(len(p), dtype=np.int64)
    group_of[order] = gid
    sums = np.bincount(group_of, weights=w, minlength=int(gid[-1]) + 1)
    gp, gl = p[new], l[new]
    # per target: largest sum, then smallest label
    o2 = np.lexsort((gl, -sums, gp))
    gp, gl = gp[o2], gl[o2]
    first = np.ones(len(gp), dtype=bool)
    first[1:] = gp[1:] != gp[:-1]
    out[gp[first]] = gl[first].astype(np.int32)
    return out


def match_dtype(spatial_shape: Sequence[int]) -> np.dtype:
    """Nellie's dtype of voxel matches: uint16, or uint32/uint64 for larger frames."""
    m = max(spatial_shape)
    if m <= 65536:
        return np.dtype(np.uint16)
    if m <= 2 ** 32:
        return np.dtype(np.uint32)
    return np.dtype(np.uint64)


def best_matches(cands: Candidates, spatial_shape: Sequence[int]) -> np.ndarray:
    """Best source per target voxel (smallest error, then earliest candidate) (spec 4.4).

    Returns
    -------
    (n, 2, d) int64
        ``[source, target]`` rows sorted by the target's raster index.
    """
    nd = len(spatial_shape)
    if len(cands) == 0:
        return np.zeros((0, 2, nd), dtype=np.int64)
    flat = np.ravel_multi_index(tuple(cands.target.T.astype(np.int64)), tuple(spatial_shape))
    order = np.lexsort((cands.error, flat))
    f = flat[order]
    first = np.ones(len(f), dtype=bool)
    first[1:] = f[1:] != f[:-1]
    pick = order[first]
    return np.stack([cands.source[pick], cands.target[pick]], axis=1).astype(np.int64)


def merge_matches(pieces: Sequence[np.ndarray], spatial_shape: Sequence[int]) -> np.ndarray:
    """Join the blocks' best matches of one pair, sorted by target raster index, Nellie's dtype."""
    nd = len(spatial_shape)
    pieces = [np.asarray(p).reshape(-1, 2, nd) for p in pieces]
    allm = np.concatenate(pieces) if pieces else np.zeros((0, 2, nd), dtype=np.int64)
    if len(allm):
        order = np.argsort(np.ravel_multi_index(tuple(allm[:, 1].T), tuple(spatial_shape)),
                           kind="stable")
        allm = allm[order]
    return allm.astype(match_dtype(spatial_shape))


@dataclass(frozen=True)
class ObjectVotes:
    """Per-block summary for the fill: objects present and (object, label) voxel counts.

    Attributes
    ----------
    objects : (k,) int64
        Distinct original ids of frame t+1 in the block.
    pairs : (p, 2) int64
        Distinct (original id, reassigned label) among voted voxels.
    counts : (p,) int64
        Voxels per pair.
    """

    objects: np.ndarray
    pairs: np.ndarray
    counts: np.ndarray


def object_votes_at_voxels(voted: np.ndarray, labels_next: np.ndarray) -> ObjectVotes:
    """Summarise a voted block: which objects it holds and which labels their voxels got.

    ``voted`` and ``labels_next`` are aligned (m,) arrays: the voted label and the
    original id of each labelled voxel of the block.
    """
    lab = np.asarray(labels_next)
    voted = np.asarray(voted)
    m = lab > 0
    objects = np.unique(lab[m]).astype(np.int64)
    mv = m & (voted > 0)
    if not mv.any():
        return ObjectVotes(objects, np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64))
    pairs, _, counts = unique_pairs(lab[mv].astype(np.int64), voted[mv].astype(np.int64))
    return ObjectVotes(objects, pairs, counts.astype(np.int64))


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(np.stack([a, b], 1), axis=0, return_inverse=True, return_counts=True)`` for
    non-negative int64 ``a``, ``b`` of the same length, through one int64 key per row.

    The same arrays (pairs sorted by ``a``, then ``b``): ``axis=0`` compares rows as raw
    bytes, many times slower than sorting integers.
    """
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    if len(a) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    span = int(b.max()) + 1
    if min(int(a.min()), int(b.min())) < 0 or int(a.max()) >= (2 ** 63 - 1 - span) // span:
        up, inv, cnt = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True, return_counts=True)
        return up, inv.reshape(-1), cnt
    keys, inv, cnt = np.unique(a * span + b, return_inverse=True, return_counts=True)
    return np.stack([keys // span, keys % span], 1), inv.reshape(-1), cnt


def merge_object_votes(pieces: Sequence[ObjectVotes], new_id_base: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity of every object of a frame for its unmatched voxels.

    An object whose voxels received reassigned labels gets the label held by most
    of them (smallest label on ties); an object with none gets the new id
    ``new_id_base + original id``.

    Returns
    -------
    objects : (k,) int64, sorted
    labels : (k,) int64
    """
    objs = np.unique(np.concatenate([p.objects for p in pieces])) if pieces else np.zeros(0, np.int64)
    labels = objs.astype(np.int64) + int(new_id_base)
    pairs = [p.pairs for p in pieces if len(p.pairs)]
    if pairs:
        allp = np.concatenate(pairs)
        allc = np.concatenate([p.counts for p in pieces if len(p.pairs)])
        up, inv, _ = unique_pairs(allp[:, 0], allp[:, 1])
        cnt = np.bincount(inv, weights=allc).astype(np.int64)
        o = np.lexsort((up[:, 1], -cnt, up[:, 0]))
        up = up[o]
        first = np.ones(len(up), dtype=bool)
        first[1:] = up[1:, 0] != up[:-1, 0]
        win = up[first]
        pos = np.searchsorted(objs, win[:, 0])
        labels[pos] = win[:, 1]
    if len(labels) and labels.max() > np.iinfo(np.int32).max:
        raise OverflowError(
            f"new identity {int(labels.max())} does not fit int32; run with fill_unmatched=False"
        )
    return objs, labels


def fill_at_voxels(voted: np.ndarray, labels_next: np.ndarray,
                   mapping: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Give the labelled voxels left at 0 by the vote their object's identity, (m,) int32.

    ``voted`` and ``labels_next`` are aligned (m,) arrays at a block's labelled voxels.
    """
    out = np.array(voted, dtype=np.int32, copy=True)
    lab = np.asarray(labels_next)
    un = (lab > 0) & (out == 0)
    if un.any():
        objs, labels = mapping
        ids = lab[un].astype(np.int64)
        pos = np.clip(np.searchsorted(objs, ids), 0, max(len(objs) - 1, 0))
        ok = len(objs) > 0
        val = np.where(ok & (objs[pos] == ids), labels[pos], 0) if ok else np.zeros_like(ids)
        out[un] = val.astype(np.int32)
    return out
