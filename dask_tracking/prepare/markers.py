"""Markers -> ``markers``, ``distance`` and ``border``.

Spec: ``nellie-prepare-spec.md`` section 5. The clamped distance transform, the
multi-scale LoG peaks and the intensity NMS run per frame (one task per frame).
"""

from __future__ import annotations

from typing import Sequence

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from .params import MarkerParams, marker_sigmas, sigma_vector

__all__ = ["markers_frame", "markers_movie", "MARKER_OUTPUTS"]

#: Names and dtypes of the Markers stage's outputs.
MARKER_OUTPUTS = (("markers", np.uint8), ("distance", np.float32), ("border", np.uint8))


def markers_frame(labels: np.ndarray, raw: np.ndarray, spacing: Sequence[float],
                  params: MarkerParams = MarkerParams(), preprocessed: np.ndarray | None = None):
    """Markers stage of one frame.

    Returns
    -------
    markers : ndarray uint8
        1 at tracking markers.
    distance : ndarray float32
        Euclidean distance to the background in voxels (isotropic, Z spacing ignored),
        clamped at ``2 * max_radius_um / sX``.
    border : ndarray uint8
        The outer one-voxel shell of the objects (face connectivity).
    """
    mask = np.asarray(labels) > 0
    raw = np.asarray(raw)
    if not mask.any():
        z = np.zeros(mask.shape, dtype=np.uint8)
        return z, np.zeros(mask.shape, dtype=np.float32), z.copy()
    border = ndi.binary_dilation(mask, iterations=1) ^ mask
    dist = ndi.distance_transform_edt(mask).astype(np.float32, copy=False)
    np.minimum(dist, params.max_radius_px(tuple(spacing)) * 2.0, out=dist)
    base = dist if params.use_im == "distance" else np.asarray(preprocessed)
    valid = mask & (dist > 0)
    best = np.zeros(base.shape, dtype=np.float32)
    peaks = np.zeros(base.shape, dtype=bool)
    for s in marker_sigmas(params, tuple(spacing)):
        resp = -ndi.gaussian_laplace(base, sigma_vector(float(s), tuple(spacing)))
        resp = (resp * (float(s) ** 2)).astype(np.float32, copy=False)
        resp[resp < 0] = 0
        local = resp == ndi.maximum_filter(resp, size=3, mode="nearest")
        local &= valid
        better = local & (resp > best)
        peaks[better] = True
        best[better] = resp[better]
    marker = np.zeros(mask.shape, dtype=np.uint8)
    coords = np.nonzero(peaks)
    if coords[0].size:
        score = np.zeros(raw.shape, dtype=np.float32)
        score[coords] = raw[coords]
        size = 2 * int(params.peak_min_distance) + 1
        keep = (score == ndi.maximum_filter(score, size=size, mode="nearest")) & (score > 0)
        marker[keep] = 1
    return marker, dist, border.astype(np.uint8)


def markers_movie(labels: da.Array, raw: da.Array, spacing: Sequence[float],
                  params: MarkerParams = MarkerParams(),
                  preprocessed: da.Array | None = None, *, chunks: tuple | None = None) -> dict[str, da.Array]:
    """Lazy Markers outputs ``{"markers", "distance", "border"}``, one task per frame.

    ``chunks`` (T, *spatial chunks) re-chunks the outputs (default: whole frames).
    """
    whole = (1,) + tuple(-1 for _ in labels.shape[1:])
    spacing = tuple(float(s) for s in spacing)
    args = [labels.rechunk(whole), raw.rechunk(whole)]
    if params.use_im == "frangi":
        args.append(preprocessed.rechunk(whole))

    def _call(l, r, *p):
        out = markers_frame(l[0], r[0], spacing, params, p[0][0] if p else None)
        return np.stack([a.astype(np.float32) for a in out])[None]

    stacked = da.map_blocks(_call, *args, new_axis=1, chunks=(args[0].chunks[0], (3,)) + args[0].chunks[1:],
                            dtype=np.float32, meta=np.empty((0,) * (labels.ndim + 1), np.float32))
    if chunks is not None and tuple(chunks) != args[0].chunks:
        stacked = stacked.rechunk((chunks[0], (3,)) + tuple(chunks[1:]))
    return {name: stacked[:, i].astype(dt) for i, (name, dt) in enumerate(MARKER_OUTPUTS)}
