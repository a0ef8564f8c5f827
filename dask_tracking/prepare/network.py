"""Network -> skeleton branch seeds (``skel``), ``pixel_class`` and ``branches``.

Spec: ``nellie-prepare-spec.md`` section 4. Thinning is per object (each object's
bounding-box crop, other objects removed), which equals skeletonising the whole
frame because objects are never 26/8-adjacent; the nearest-seed relabel is per
object too. Branch seed ids are numbered over the frame in raster order. One task
per frame.
"""

from __future__ import annotations

from typing import Sequence

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

__all__ = ["network_frame", "network_movie", "NETWORK_OUTPUTS"]

#: Names and dtypes of the Network stage's outputs.
NETWORK_OUTPUTS = (("skel", np.int32), ("pixel_class", np.uint8), ("branches", np.uint32))


def _skeleton(labels: np.ndarray) -> np.ndarray:
    """Instance id on every skeleton voxel (Lee thinning in 3D, Zhang-Suen in 2D), per object."""
    from skimage.morphology import skeletonize

    out = np.zeros_like(labels)
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        obj = labels[sl] == lab
        if not obj.any():
            continue
        sk = skeletonize(obj)
        sub = out[sl]
        sub[sk] = lab
    return out


def _drop_ambiguous(skel: np.ndarray) -> np.ndarray:
    """Zero skeleton voxels that see two different ids in their 3^d neighbourhood (not on faces)."""
    nd = skel.ndim
    size = (3,) * nd
    mx = ndi.maximum_filter(skel, size=size, mode="constant", cval=0)
    bg = int(skel.max()) + 1
    mn = ndi.minimum_filter(np.where(skel == 0, bg, skel), size=size, mode="constant", cval=bg)
    mn = np.where(mn == bg, 0, mn)
    amb = (skel > 0) & (mn > 0) & (mx > 0) & (mn != mx)
    inner = np.zeros(skel.shape, dtype=bool)
    inner[(slice(1, -1),) * nd] = True
    return np.where(amb & inner, 0, skel)


def _add_missing(skel: np.ndarray, labels: np.ndarray, preprocessed: np.ndarray) -> np.ndarray:
    """Give every object without a skeleton voxel one at its argmax of ``preprocessed``."""
    ids = np.unique(labels)
    missing = np.setdiff1d(ids, np.unique(skel))
    missing = missing[missing != 0]
    if missing.size == 0:
        return skel
    pos = ndi.maximum_position(preprocessed, labels=labels, index=missing)
    for lab, p in zip(missing, pos):
        skel[tuple(int(v) for v in p)] = lab
    return skel


def _relabel(branch_seeds: np.ndarray, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Every object voxel gets the branch id of its nearest seed (EDT with physical sampling)."""
    labels = labels.astype(np.int32, copy=False)
    seeds = branch_seeds.astype(np.int32, copy=False)
    out = np.zeros(labels.shape, dtype=np.uint32)
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        obj = labels[sl] == lab
        if not obj.any():
            continue
        sub_seeds = seeds[sl]
        seed_mask = (sub_seeds > 0) & obj
        if not seed_mask.any():
            continue
        idx = ndi.distance_transform_edt(~seed_mask, sampling=tuple(spacing), return_distances=False,
                                         return_indices=True)
        nearest = sub_seeds[tuple(idx)]
        sub = out[sl]
        sub[obj] = nearest[obj].astype(np.uint32, copy=False)
    return out


def network_frame(labels: np.ndarray, preprocessed: np.ndarray, spacing: Sequence[float]):
    """Network stage of one frame.

    Returns
    -------
    skel : ndarray int32
        Branch seed ids (connected non-junction skeleton voxels, raster order), 0 elsewhere.
    pixel_class : ndarray uint8
        0 background, 1 isolated, 2 tip, 3 edge, 4 junction.
    branches : ndarray uint32
        Every object voxel labelled with its nearest branch seed.
    """
    labels = np.asarray(labels)
    nd = labels.ndim
    sk = _skeleton(labels)
    sk = _drop_ambiguous(sk)
    sk = _add_missing(sk, labels, np.asarray(preprocessed))
    pre = (sk > 0) * labels
    kmask = (pre > 0).astype(np.uint8)
    pclass = ndi.convolve(kmask, weights=np.ones((3,) * nd), mode="constant", cval=0) * kmask
    pclass[pclass > 4] = 4
    pclass = pclass.astype(np.uint8, copy=False)
    seeds, _ = ndi.label((pclass > 0) & (pclass != 4), structure=np.ones((3,) * nd))
    branches = _relabel(seeds, labels, spacing)
    return seeds.astype(np.int32, copy=False), pclass, branches


def network_movie(labels: da.Array, preprocessed: da.Array, spacing: Sequence[float], *,
                  chunks: tuple | None = None) -> dict[str, da.Array]:
    """Lazy Network outputs ``{"skel", "pixel_class", "branches"}``, one task per frame.

    ``chunks`` (T, *spatial chunks) re-chunks the outputs (default: whole frames).
    """
    whole = (1,) + tuple(-1 for _ in labels.shape[1:])
    lab = labels.rechunk(whole)
    pre = preprocessed.rechunk(whole)
    spacing = tuple(float(s) for s in spacing)

    def _call(l, p):
        # ids are >= 0 and below 2**31, so one uint32 stack carries all three exactly
        return np.stack([a.astype(np.uint32) for a in network_frame(l[0], p[0], spacing)])[None]

    stacked = da.map_blocks(_call, lab, pre, new_axis=1, chunks=(lab.chunks[0], (3,)) + lab.chunks[1:],
                            dtype=np.uint32, meta=np.empty((0,) * (lab.ndim + 1), np.uint32))
    if chunks is not None and tuple(chunks) != lab.chunks:
        stacked = stacked.rechunk((chunks[0], (3,)) + tuple(chunks[1:]))
    return {name: stacked[:, i].astype(dt) for i, (name, dt) in enumerate(NETWORK_OUTPUTS)}
