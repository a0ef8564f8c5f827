"""Label -> ``labels``: per-frame threshold, fill holes, components, size filter, smoothing.

Spec: ``nellie-prepare-spec.md`` section 3. Fill holes and the component labelling
depend on the whole frame (background connectivity, raster-order ids), so one task
per frame; frames run in parallel.
"""

from __future__ import annotations

from typing import Sequence

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from .params import LabelParams
from .thresholds import otsu_threshold, triangle_threshold

__all__ = ["label_frame", "label_movie", "label_sample"]


def label_sample(frame: np.ndarray, max_samples: int, mask_frame: np.ndarray | None = None,
                 mask_thresh: float | None = None) -> np.ndarray:
    """The Label sampler S_L (spec 1.2): flat C-order stride, positive values, optional raw mask."""
    flat = frame.reshape(-1)
    if flat.size == 0:
        return flat
    mflat = mask_frame.reshape(-1) if (mask_frame is not None and mask_thresh is not None) else None
    step = max(int(flat.size) // max(1, int(max_samples)), 1)
    offsets = (0, step // 2) if step > 1 and step // 2 > 0 else (0,)
    values = flat[:0]
    for off in offsets:
        smp = flat[off::step]
        keep = smp > 0
        if mflat is not None:
            keep &= mflat[off::step] > mask_thresh
        values = smp[keep]
        if values.size > 0 or step == 1:
            return values
    if float(flat.max()) <= 0:
        return values
    keep = flat > 0
    if mflat is not None:
        keep &= mflat > mask_thresh
    return flat[keep]


def _log_threshold(values: np.ndarray, guard: bool):
    lv = np.log10(values)
    tri = 10 ** triangle_threshold(lv, guard=guard)
    ots = 10 ** otsu_threshold(lv)
    return min(tri, ots)


def label_frame(preprocessed: np.ndarray, raw: np.ndarray | None, spacing: Sequence[float],
                params: LabelParams = LabelParams(), *, guard: bool = False) -> np.ndarray:
    """Instance labels (int32) of one frame (Z, Y, X) or (Y, X).

    Parameters
    ----------
    preprocessed : ndarray, float32
        The Filter's output for this frame.
    raw : ndarray or None
        The raw frame; needed only with an intensity pre-mask.
    spacing : sequence of float
        Voxel size in um per spatial axis.
    """
    frame = np.asarray(preprocessed)
    nd = frame.ndim
    intensity = None
    if params.otsu_thresh_intensity:
        vals = label_sample(np.asarray(raw), params.threshold_sampling_pixels)
        intensity = otsu_threshold(vals) if vals.size else 0
    elif params.threshold is not None:
        intensity = params.threshold
    if intensity is not None:
        vals = label_sample(frame, params.threshold_sampling_pixels, np.asarray(raw), intensity)
        frame = frame * (np.asarray(raw) > intensity)
    else:
        vals = label_sample(frame, params.threshold_sampling_pixels)
    thr = _log_threshold(vals, guard) if vals.size else None
    mask = np.zeros(frame.shape, dtype=bool) if thr is None else frame > thr
    if nd == 3:
        mask = ndi.binary_fill_holes(mask)
    footprint = np.ones((3,) * nd, dtype=bool)
    labels, _ = ndi.label(mask, structure=footprint)
    if labels.size == 0:
        return labels.astype(np.int32, copy=False)
    areas = np.bincount(labels.ravel())
    if areas.size <= 1:
        return labels.astype(np.int32, copy=False)
    areas[0] = 0
    keep = areas >= params.min_size_voxels(tuple(spacing))
    mask = keep[labels]
    mask = ndi.uniform_filter(mask.astype(np.float32), size=3) > 0.5
    labels, _ = ndi.label(mask, structure=footprint)
    return labels.astype(np.int32, copy=False)


def label_movie(preprocessed: da.Array, raw: da.Array | None, spacing: Sequence[float],
                params: LabelParams = LabelParams(), *, guard: bool = False) -> da.Array:
    """Lazy ``labels`` (T, *spatial) int32, one whole-frame task per frame."""
    whole = (1,) + tuple(-1 for _ in preprocessed.shape[1:])
    pre = preprocessed.rechunk(whole)
    spacing = tuple(float(s) for s in spacing)
    needs_raw = params.otsu_thresh_intensity or params.threshold is not None

    def _call(p, *r):
        rr = r[0][0] if r else None
        return label_frame(p[0], rr, spacing, params, guard=guard)[None]

    args = (raw.rechunk(whole),) if needs_raw else ()
    return da.map_blocks(_call, pre, *args, dtype=np.int32, meta=np.empty((0,) * pre.ndim, np.int32))
