"""Render one frame of a synthetic movie and derive the six tracking inputs from it.

Everything is done per object inside the object's bounding box (plus a margin),
so a frame costs about the number of object voxels, not the frame size, except
for three cheap whole-frame passes (noise, connected components, branch ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ._geometry import ObjectSet

__all__ = ["RenderParams", "render_frame", "FRAME_OUTPUTS"]

#: Arrays returned by :func:`render_frame`, with their dtypes.
FRAME_OUTPUTS: dict[str, np.dtype] = {
    "raw": np.dtype(np.uint16),
    "preprocessed": np.dtype(np.float32),
    "distance": np.dtype(np.float32),
    "markers": np.dtype(np.uint8),
    "labels": np.dtype(np.int32),
    "branches": np.dtype(np.uint32),
    "objects": np.dtype(np.int32),
}


@dataclass(frozen=True)
class RenderParams:
    """How a frame is drawn.

    Attributes
    ----------
    shape : tuple of int
        Spatial shape, voxels.
    spacing : tuple of float
        Voxel size, um.
    blur_um : tuple of float
        Gaussian sigma of the optical blur per axis, um.
    noise : float
        Standard deviation of the Gaussian noise as a fraction of the object intensity.
    background, amplitude : float
        Raw intensity of the background and of a fully covered object voxel (uint16 counts).
    marker_spacing_um : float
        Smallest distance between two markers of a frame, um.
    max_radius_um : float
        Nellie's ``max_radius_um``: the distance is clamped to ``2 * max_radius_um / spacing_x`` voxels.
    seed : int
        Seed of the noise (each frame draws from ``(seed, t)``).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    blur_um: tuple[float, ...]
    noise: float
    background: float = 100.0
    amplitude: float = 1000.0
    marker_spacing_um: float = 0.4
    max_radius_um: float = 1.0
    seed: int = 0


def _box(center_vox: np.ndarray, half_vox: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    lo = np.maximum(np.floor(center_vox - half_vox).astype(int), 0)
    hi = np.minimum(np.ceil(center_vox + half_vox).astype(int) + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _grow(box: tuple[slice, ...], pad: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, shape))


def _coords_um(box: tuple[slice, ...], spacing: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1) * spacing


def _markers(dist: np.ndarray, spacing: np.ndarray, min_um: float) -> np.ndarray:
    """Greedy non-maximum suppression of ridge maxima of ``dist``; returns (n, d) indices."""
    ridge = (dist == ndi.maximum_filter(dist, size=3, mode="nearest")) & (dist > 0)
    cand = np.argwhere(ridge)
    if cand.size == 0:
        return cand
    order = np.lexsort((np.arange(len(cand)), -dist[ridge]))   # largest distance first, then raster
    cand = cand[order]
    pos = cand * spacing
    keep: list[int] = []
    for i in range(len(cand)):
        if not keep or np.min(((pos[keep] - pos[i]) ** 2).sum(axis=1)) >= min_um * min_um:
            keep.append(i)
    return cand[keep]


def render_frame(objects: ObjectSet, t: int, params: RenderParams) -> dict[str, np.ndarray]:
    """Draw frame ``t`` and derive its inputs.

    Returns
    -------
    dict of numpy arrays, each of ``params.shape``
        ``objects`` (int32 true ids 1..K, consistent through time), ``labels`` (int32,
        3^d connected components of the mask, ids in raster order), ``branches`` (uint32
        piece ids in raster order of first appearance), ``distance`` (float32 isotropic
        EDT of the mask in voxels, clamped), ``markers`` (uint8), ``preprocessed``
        (float32 blurred object indicator in [0, 1]) and ``raw`` (uint16).
    """
    shape = tuple(params.shape)
    nd = len(shape)
    spacing = np.asarray(params.spacing, dtype=float)
    obj = np.zeros(shape, np.int32)
    piece = np.zeros(shape, np.int32)
    centers = objects.center(t)
    bounds = objects.bound()
    n_pieces = objects.n_pieces()
    boxes = []
    for k in range(len(objects)):
        box = _box(centers[k] / spacing, bounds[k] / spacing + 1.0, shape)
        boxes.append(box)
        if any(s.stop <= s.start for s in box):
            continue
        p = _coords_um(box, spacing)
        sdf, along = objects.sdf(k, objects.to_body(k, p, t))
        inside = (sdf <= 0).reshape(tuple(s.stop - s.start for s in box))
        pc = np.minimum((along * n_pieces[k]).astype(np.int32), n_pieces[k] - 1)
        obj[box][inside] = k + 1
        piece[box][inside] = pc.reshape(inside.shape)[inside]

    mask = obj > 0
    labels, _ = ndi.label(mask, structure=np.ones((3,) * nd, bool))
    labels = labels.astype(np.int32, copy=False)

    # branches: (object, piece) pairs numbered in raster order of first appearance
    branches = np.zeros(shape, np.uint32)
    if mask.any():
        keys = obj[mask].astype(np.int64) * (int(n_pieces.max()) + 1) + piece[mask]
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        rank = np.empty(len(uniq), np.uint32)
        rank[np.argsort(first, kind="stable")] = np.arange(1, len(uniq) + 1, dtype=np.uint32)
        branches[mask] = rank[inverse.ravel()]

    # distance, markers, preprocessed: per object, in a padded box
    clamp = 2.0 * params.max_radius_um / spacing[-1]
    distance = np.zeros(shape, np.float32)
    markers = np.zeros(shape, np.uint8)
    pre = np.zeros(shape, np.float32)
    sigma = np.asarray(params.blur_um, dtype=float) / spacing
    blur_pad = tuple(int(math.ceil(4 * s)) + 1 for s in sigma)
    for k, box in enumerate(boxes):
        if any(s.stop <= s.start for s in box):
            continue
        dbox = _grow(box, (1,) * nd, shape)
        ind = obj[dbox] == k + 1
        if not ind.any():
            continue
        d = np.minimum(ndi.distance_transform_edt(ind), clamp).astype(np.float32)
        distance[dbox][ind] = d[ind]
        for idx in _markers(d, spacing, params.marker_spacing_um):
            markers[dbox][tuple(idx)] = 1
        bbox = _grow(box, blur_pad, shape)
        ind_b = (obj[bbox] == k + 1).astype(np.float32)
        if np.any(sigma > 0):
            ind_b = ndi.gaussian_filter(ind_b, sigma, mode="constant", truncate=4.0)
        np.maximum(pre[bbox], ind_b, out=pre[bbox])
    np.clip(pre, 0.0, 1.0, out=pre)

    rng = np.random.default_rng([int(params.seed), int(t)])
    raw = rng.standard_normal(shape, dtype=np.float32)
    raw *= np.float32(params.noise * params.amplitude)
    raw += np.float32(params.background)
    raw += np.float32(params.amplitude) * pre
    np.clip(raw, 1.0, 65535.0, out=raw)
    return {
        "raw": np.rint(raw).astype(np.uint16),
        "preprocessed": pre,
        "distance": distance,
        "markers": markers,
        "labels": labels,
        "branches": branches,
        "objects": obj,
    }
