"""Histogram thresholds (Otsu, triangle) and the deterministic samplers of the spec.

All functions are per frame and work on small 1-D samples (at most
``max_samples`` values), so they run inside a single task.
Spec: ``nellie-prepare-spec.md`` section 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["otsu_threshold", "triangle_threshold", "min_threshold", "sample_strides",
           "strided_core_slices", "NBINS"]

#: Histogram bins used by every threshold of the preparation stages.
NBINS = 256


def _histogram(values: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    flat = values.reshape(-1)
    counts, edges = np.histogram(flat, bins=nbins, range=(flat.min(), flat.max()))
    centers = (edges[:-1] + edges[1:]) / 2.0
    return counts / np.sum(counts), centers


def otsu_threshold(values: np.ndarray, nbins: int = NBINS):
    """Otsu's threshold of ``values`` (any shape), as a bin center in the data's dtype.

    The between-class score of split ``k`` is ``w1[k] w2[k+1] (m1[k] - m2[k+1])**2``;
    the first maximum wins.
    """
    p, c = _histogram(np.asarray(values), nbins)
    w_lo = np.cumsum(p)
    m_lo = np.cumsum(p * c) / w_lo
    w_hi = np.cumsum(p[::-1])[::-1]
    m_hi = (np.cumsum((p * c)[::-1]) / w_hi[::-1])[::-1]
    score = w_lo[:-1] * w_hi[1:] * (m_lo[:-1] - m_hi[1:]) ** 2
    return c[np.argmax(score)]


def triangle_threshold(values: np.ndarray, nbins: int = NBINS, *, guard: bool = False):
    """The triangle threshold of ``values`` (skimage's algorithm), as a bin center.

    With every value in one bin the line has zero width: Nellie then fails on an
    empty ``argmax``; ``guard=True`` returns that bin's center instead.
    """
    p, c = _histogram(np.asarray(values), nbins)
    peak = int(np.argmax(p))
    height = p[peak]
    nz = np.flatnonzero(p)
    lo, hi = int(nz[0]), int(nz[-1])
    flip = peak - lo < hi - peak
    if flip:
        p = p[::-1]
        lo = nbins - hi - 1
        peak = nbins - peak - 1
    width = peak - lo
    if width == 0 and guard:
        return c[nbins - peak - 1 if flip else peak]
    x = np.arange(width)
    y = p[x + lo]
    norm = np.sqrt(height ** 2 + width ** 2)
    score = (height / norm) * x - (width / norm) * y
    level = int(np.argmax(score)) + lo
    if flip:
        level = nbins - level - 1
    return c[level]


def min_threshold(values: np.ndarray, *, guard: bool = False) -> float:
    """``min(triangle, otsu)`` of ``values`` as a Python float (the combination used everywhere)."""
    return float(min(triangle_threshold(values, guard=guard), otsu_threshold(values)))


def sample_strides(shape: Sequence[int], max_samples: int) -> tuple[int, ...]:
    """Per-axis strides of the Filter sampler S_F (spec 1.2).

    ``ceil((N / M) ** (1 / d))`` on every axis, then the axis with the largest
    ``size / stride`` gets one more step until the strided shape holds at most
    ``max_samples`` voxels. All ones when the frame has at most ``max_samples``.
    """
    nd = len(shape)
    if max_samples is None or max_samples <= 0:
        return (1,) * nd
    total = int(np.prod(shape))
    if total <= max_samples:
        return (1,) * nd
    k = int(np.ceil((total / max_samples) ** (1.0 / nd)))
    strides = [max(1, k) for _ in range(nd)]
    while int(np.prod([math.ceil(s / st) for s, st in zip(shape, strides)])) > max_samples:
        a = int(np.argmax([s / st for s, st in zip(shape, strides)]))
        strides[a] += 1
    return tuple(strides)


def strided_core_slices(core_start: Sequence[int], core_stop: Sequence[int],
                        strides: Sequence[int]) -> tuple[slice, ...]:
    """Slices, relative to a block's core, that pick the voxels of the global strided grid.

    A voxel at global index ``i`` is sampled when ``i % stride == 0``; the sample of a
    frame is the union of the samples of its blocks (the thresholds only use its
    histogram, and the percentile its sorted values, so block order does not matter).
    """
    return tuple(slice((-int(a)) % int(s), int(b) - int(a), int(s))
                 for a, b, s in zip(core_start, core_stop, strides))
