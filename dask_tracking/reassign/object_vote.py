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

from ..dataset import InputError

__all__ = ["object_vote", "respect_objects"]


def _check_share(split_share: Any) -> float:
    if isinstance(split_share, bool) or not isinstance(split_share, (int, float)) or \
            not 0.0 < float(split_share) <= 1.0:
        raise InputError(f"split_share must be a number in (0, 1], got {split_share!r}")
    return float(split_share)


def object_vote(votes: Any, objects: Any, *, split_share: float = 0.3) -> np.ndarray:
    """Identities of one frame, one per object of its segmentation.

    Parameters
    ----------
    votes : ndarray, int, shape (Z, Y, X) or (Y, X)
        Per-voxel identities from the voxel vote (e.g. reassigned labels), 0 = none.
    objects : ndarray, int, same shape
        The frame's own objects (connected components), 0 = background.
    split_share : float in (0, 1]
        Smallest share of an object's voted voxels for which a second identity keeps its voxels.

    Returns
    -------
    ndarray, int32, same shape
        0 outside ``objects``; inside, the object's majority identity, or the minority
        identity on its own voted voxels where that identity holds >= ``split_share``.
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
    pairs, counts = np.unique(np.stack([ov[voted], vv[voted]], axis=1), axis=0, return_counts=True)
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
        if keep.any():
            kept = {(int(a), int(b)) for a, b in pairs[keep]}
            sel = np.array([(int(a), int(b)) in kept for a, b in zip(ov, vv)]) & voted
            res[sel] = vv[sel]
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
