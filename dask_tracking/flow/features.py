"""Marker features: intensity statistics and log Hu moments of each marker's ROI box.

The kernels here run inside one task on one spatial block of one frame (the
block's core plus a halo). They come in two flavours:

* ``compat=True`` reproduces Nellie 1.0.4's numerics bit for bit: the ROI
  boxes are stacked in a zero-padded ``(n, R, ..., R)`` cube (``R`` frame-global),
  the statistics are summed in the ROI's dtype (uint16 squares wrap, spec B1),
  and the Hu moments are broadcast sums over ``(n, H, W, 4, 4)``; in Nellie's
  streaming layout (too many ROI voxels, or ``low_memory``) every box is
  reduced at its exact size and the Hu moments are kept as float32.
* ``compat=False`` computes the same quantities in float64 with a two-pass
  variance (no overflow) and separable moment sums.

Every kernel reduces each marker's box on its own, so the features of a marker
do not depend on which block (or batch) it was computed in: any chunking gives
the same features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import libm

__all__ = [
    "FrameFeatures",
    "transform_preprocessed",
    "roi_radius_at",
    "window_max",
    "block_features",
    "n_hu",
]

#: Voxels of padded ROI cubes reduced in one batch (bounds a task's temporaries).
_BATCH_VOXELS = 2_000_000


def n_hu(ndim: int) -> int:
    """Number of Hu features: 6 in 2D, 18 (three projections) in 3D."""
    return 6 if ndim == 2 else 18


@dataclass(frozen=True)
class FrameFeatures:
    """Features of the markers of one frame, in raster order.

    Attributes
    ----------
    coords : ndarray, (N, d) int64
        Marker voxel indices.
    stats : ndarray, (N, 4) float32
        ``[mean_raw, var_raw, mean_pre, var_pre]`` over the nonzero voxels of each ROI box.
    hu : ndarray, (N, 6) or (N, 18), float64 (float32 in Nellie's streaming layout)
        Log Hu moments (2D: of the box; 3D: of its Z, Y and X max projections).
    """

    coords: np.ndarray
    stats: np.ndarray
    hu: np.ndarray

    @property
    def n(self) -> int:
        return int(self.coords.shape[0])

    @classmethod
    def empty(cls, ndim: int) -> "FrameFeatures":
        return cls(np.zeros((0, ndim), np.int64), np.zeros((0, 4), np.float32),
                   np.zeros((0, n_hu(ndim)), np.float64))

    @classmethod
    def concat(cls, parts: list["FrameFeatures"], ndim: int) -> "FrameFeatures":
        """Concatenate block features and sort them into raster order."""
        parts = [p for p in parts if p.n]
        if not parts:
            return cls.empty(ndim)
        coords = np.concatenate([p.coords for p in parts])
        stats = np.concatenate([p.stats for p in parts])
        hu = np.concatenate([p.hu for p in parts])
        order = np.lexsort(coords.T[::-1])
        return cls(coords[order], stats[order], hu[order])


# ------------------------------------------------------------------ transforms
def transform_preprocessed(pre: Any, shift: float | None, compat: bool = False,
                           use_libm: bool = True) -> Any:
    """Nellie's log transform of the preprocessed image (spec 1.3 step 1).

    ``log10`` of the positive voxels (float32), then ``shift`` (the frame's minimum
    negative value, or ``None`` if there is none) subtracted from the negative ones.

    Parameters
    ----------
    pre : ndarray, float32, any shape
    shift : float32 scalar or None
        Minimum over the whole frame of the log-transformed values, when negative.
    compat, use_libm : bool
        With both, use the C library's ``log10f`` (Nellie's bits, see :mod:`.libm`).
    """
    xp = _xp(pre)
    out = xp.array(pre, dtype=pre.dtype, copy=True)
    pos = out > 0
    out[pos] = _log10f(out[pos]) if (compat and use_libm) else xp.log10(out[pos])
    if shift is not None:
        neg = out < 0
        out[neg] -= np.asarray(shift, dtype=out.dtype)
    return out


def log_min(pre: Any, compat: bool = False, use_libm: bool = True) -> float | None:
    """Minimum of the log-transformed values of ``pre`` if negative, else None (a block reduction).

    Only the values within a relative 1e-5 of the smallest positive value are
    transformed: their logs are at least 4 float32 ULPs below all others, so the
    minimum is exact even for a log10 that is not monotonic within 1 ULP.
    """
    if pre.size == 0:
        return None
    pos = pre > 0
    low = pre.min()
    cand = [low] if low <= 0 else []          # values that are not log-transformed
    if pos.any():
        pmin = np.min(pre, where=pos, initial=np.inf)
        small = pre[pos & (pre <= pmin * (1 + 1e-5))]
        cand.append(transform_preprocessed(small, None, compat, use_libm).min())
    m = min(cand)
    return float(m) if m < 0 else None


def roi_radius_at(distance: Any, points: np.ndarray, frame_shape: tuple[int, ...],
                  offset: tuple[int, ...]) -> np.ndarray:
    """``2 * max`` of ``distance`` over the 3^d window at each point, clipped at the frame edge.

    Equals Nellie's ``2 * maximum_filter(distance, size=3)`` (mode 'reflect') at the points.

    Parameters
    ----------
    distance : ndarray
        A region of the frame's distance image starting at ``offset`` that holds
        every point's window (clipped to the frame).
    points : (n, d) int64
        Frame voxel indices.
    frame_shape, offset : tuple of int

    Returns
    -------
    ndarray, (n,) of distance's dtype
    """
    d = len(frame_shape)
    best = window_max(distance, points, (0,) * d, frame_shape, offset)
    return best * distance.dtype.type(2)


def window_max(values: Any, points: np.ndarray, lo: tuple[int, ...], hi: tuple[int, ...],
               offset: tuple[int, ...]) -> np.ndarray:
    """Maximum of ``values`` over each point's 3^d window clipped to the frame box ``[lo, hi)``.

    Parameters
    ----------
    values : ndarray
        A region of the frame starting at ``offset`` that holds ``[lo, hi)``.
    points : (n, d) int64
        Frame voxel indices inside ``[lo, hi)``.
    lo, hi, offset : tuple of int
        Frame coordinates.

    Returns
    -------
    ndarray, (n,) of values' dtype
    """
    d = len(lo)
    first, last = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64) - 1
    off0 = np.asarray(offset, dtype=np.int64)
    best = None
    for off in np.ndindex(*(3,) * d):
        q = np.clip(points + (np.asarray(off) - 1), first, last) - off0
        v = values[tuple(q.T)]
        best = v if best is None else np.maximum(best, v)
    if best is None:
        best = np.zeros(0, values.dtype)
    return best


# ---------------------------------------------------------------- statistics
def _stats_compat(images: np.ndarray) -> np.ndarray:
    """Nellie's mean/variance over nonzero voxels, with its dtypes (spec 1.3 step 6, B1).

    ``images`` (n, ...) in the ROI's dtype; returns (n, 2) float32.
    """
    axis = tuple(range(1, images.ndim))
    mask = images != 0
    count = np.sum(mask, axis=axis)
    safe = np.where(count == 0, 1, count)
    masked = images * mask
    s1 = np.sum(masked, axis=axis)
    s2 = np.sum(masked ** 2, axis=axis)
    mean = s1 / safe
    var = (s2 - (s1 ** 2) / safe) / safe
    out = np.zeros((images.shape[0], 2), np.float32)
    out[:, 0] = np.where(count == 0, 0.0, mean)
    out[:, 1] = np.where(count == 0, 0.0, var)
    return out


def _stats_fixed(images: np.ndarray) -> np.ndarray:
    """Mean and population variance over nonzero voxels in float64 (two-pass; fixes B1)."""
    axis = tuple(range(1, images.ndim))
    v = images.astype(np.float64)
    mask = v != 0
    count = mask.sum(axis=axis)
    safe = np.maximum(count, 1)
    mean = v.sum(axis=axis) / safe
    dev = (v - mean.reshape((-1,) + (1,) * len(axis))) * mask
    var = (dev * dev).sum(axis=axis) / safe
    out = np.zeros((images.shape[0], 2), np.float32)
    out[:, 0] = np.where(count == 0, 0.0, mean)
    out[:, 1] = np.where(count == 0, 0.0, var)
    return out


# --------------------------------------------------------------- Hu moments
def _buffer(work: dict | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
    """A reusable output array (``None`` without a work dict): numpy temporaries above
    128 KiB are fresh page-faulting mmaps in dask workers (MALLOC_TRIM_THRESHOLD_),
    so the big (n, H, W, 4, 4) products are written into arrays kept between calls."""
    if work is None:
        return None
    key = (tuple(shape), np.dtype(dtype).str)
    if key not in work:
        work[key] = np.empty(shape, dtype)
    return work[key]


def _eta_compat(images: np.ndarray, use_libm: bool = True, work: dict | None = None) -> np.ndarray:
    """Normalised central moments eta_pq, p, q < 4, as Nellie sums them: (n, 4, 4) float64.

    Powers of float64 values use the C library's ``pow`` (see :mod:`.libm`); the
    powers of the centred coordinates are evaluated once per row or column and
    broadcast, which gives the same products as a full evaluation.
    """
    _, h, w = images.shape
    ext = images[:, :, :, None, None]
    xg, yg = np.meshgrid(np.arange(w), np.arange(h))
    xg = xg[None, :, :, None, None]
    yg = yg[None, :, :, None, None]
    p = np.arange(4)
    px = p[None, None, None, :, None]
    py = p[None, None, None, None, :]
    n = images.shape[0]
    xgp, ygp = xg ** px, yg ** py
    dt_raw = np.result_type(images.dtype, xgp.dtype)
    if dt_raw.kind == "i" and dt_raw.itemsize == 8:
        raw = _raw_moments_int(images)
    else:
        t1 = np.multiply(ext, xgp, out=_buffer(work, (n, h, w, 4, 1), dt_raw))
        raw = np.sum(np.multiply(t1, ygp, out=_buffer(work, (n, h, w, 4, 4), dt_raw)), axis=(1, 2))
    m00 = raw[:, 0, 0]
    xb = (raw[:, 1, 0] / (m00 + 1e-12))[:, None, None, None, None]
    yb = (raw[:, 0, 1] / (m00 + 1e-12))[:, None, None, None, None]
    order = np.arange(4)[:, None] + np.arange(4)[None, :]
    if use_libm:
        xs = libm.power(xg[:, :1] - xb, px)          # (n, 1, W, 4, 1)
        ys = libm.power(yg[:, :, :1] - yb, py)       # (n, H, 1, 1, 4)
        dt_mu = np.result_type(images.dtype, xs.dtype)
        t1 = np.multiply(ext, xs, out=_buffer(work, (n, h, w, 4, 1), dt_mu))
        mu = np.sum(np.multiply(t1, ys, out=_buffer(work, (n, h, w, 4, 4), dt_mu)), axis=(1, 2))
        denom = libm.power(m00[:, None, None].astype(np.float64), (order[None, :, :] + 2) / 2.0) + 1e-12
    else:  # NumPy's own power, as Nellie evaluates it in this process
        mu = np.sum(ext * (xg - xb) ** px * (yg - yb) ** py, axis=(1, 2))
        denom = (m00[:, None, None] ** ((order[None, :, :] + 2) / 2.0)) + 1e-12
    return mu / denom


def _raw_moments_int(images: np.ndarray) -> np.ndarray:
    """Raw moments ``sum(img * x**p * y**q)``, p, q < 4, of integer images as int64: (n, 4, 4).

    Integer sums are exact in any order (modulo 2**64, as NumPy's int64 products and
    sums wrap), so the separable form gives the values of the full broadcast sum.
    """
    _, h, w = images.shape
    p = np.arange(4, dtype=np.uint64)
    xp_ = np.arange(w, dtype=np.uint64)[:, None] ** p              # (w, 4)
    yp_ = np.arange(h, dtype=np.uint64)[:, None] ** p              # (h, 4)
    a = np.matmul(images.astype(np.uint64), xp_)                    # (n, h, 4): sum over x
    raw = np.matmul(a.transpose(0, 2, 1), yp_)                      # (n, 4, 4): sum over y
    return raw.view(np.int64)


def _eta_fixed(images: np.ndarray) -> np.ndarray:
    """eta_pq in float64 by separable sums (mathematically equal to :func:`_eta_compat`)."""
    n, h, w = images.shape
    im = images.astype(np.float64)
    x = np.arange(w, dtype=np.float64)
    y = np.arange(h, dtype=np.float64)
    m00 = im.sum(axis=(1, 2))
    xb = (im.sum(axis=1) @ x) / (m00 + 1e-12)
    yb = (im.sum(axis=2) @ y) / (m00 + 1e-12)
    p = np.arange(4)
    xp_ = (x[None, :] - xb[:, None])[:, :, None] ** p          # (n, w, 4)
    yp_ = (y[None, :] - yb[:, None])[:, :, None] ** p          # (n, h, 4)
    mu = np.einsum("nhw,nwp,nhq->npq", im, xp_, yp_)
    order = p[:, None] + p[None, :]
    denom = m00[:, None, None] ** ((order[None] + 2) / 2.0) + 1e-12
    return mu / denom


def _hu_from_eta(eta: np.ndarray) -> np.ndarray:
    """Hu invariants 1-6 from eta (n, 4, 4), in eta's dtype (the 7th is left out, as in Nellie)."""
    e20, e02, e11 = eta[:, 2, 0], eta[:, 0, 2], eta[:, 1, 1]
    e30, e12, e21, e03 = eta[:, 3, 0], eta[:, 1, 2], eta[:, 2, 1], eta[:, 0, 3]
    hu = np.zeros((eta.shape[0], 6), dtype=eta.dtype)
    a = e30 + e12
    b = e21 + e03
    hu[:, 0] = e20 + e02
    hu[:, 1] = (e20 - e02) ** 2 + 4 * e11 ** 2
    hu[:, 2] = (e30 - 3 * e12) ** 2 + (3 * e21 - e03) ** 2
    hu[:, 3] = a ** 2 + b ** 2
    hu[:, 4] = ((e30 - 3 * e12) * a * (a ** 2 - 3 * b ** 2)
                + (3 * e21 - e03) * b * (3 * a ** 2 - b ** 2))
    hu[:, 5] = (e20 - e02) * (a ** 2 - b ** 2) + 4 * e11 * a * b
    return hu


def log_hu(hu: np.ndarray, compat: bool = False, use_libm: bool = True) -> np.ndarray:
    """``-sign(h) * log10(max(|h|, tiny))``, non-finite values set to 0 (0 maps to 0)."""
    if hu.size == 0:
        return hu
    mag = np.maximum(np.abs(hu), np.finfo(hu.dtype).tiny)
    out = -np.sign(hu) * (libm.log10(mag) if (compat and use_libm) else np.log10(mag))
    return np.where(np.isfinite(out), out, 0.0)


def _hu(images: np.ndarray, ndim: int, compat: bool, use_libm: bool = True,
        work: dict | None = None) -> np.ndarray:
    def eta(im):
        return _eta_compat(im, use_libm, work) if compat else _eta_fixed(im)

    if ndim == 2:
        return _hu_from_eta(eta(images))
    parts = [_hu_from_eta(eta(np.max(images, axis=a))) for a in (1, 2, 3)]
    return np.concatenate(parts, axis=1)


# ------------------------------------------------------------ block kernel
def _boxes(points: np.ndarray, radii: np.ndarray, frame_shape: tuple[int, ...]):
    lo = np.clip(points - radii[:, None], 0, np.asarray(frame_shape))
    hi = np.clip(points + (radii[:, None] + 1), 0, np.asarray(frame_shape))
    return lo.astype(np.int64), hi.astype(np.int64)


def block_features(raw: np.ndarray, pre: np.ndarray, points: np.ndarray, radii: np.ndarray, *,
                   offset: tuple[int, ...], frame_shape: tuple[int, ...], cube: int,
                   shift: float | None, compat: bool, streaming: bool = False,
                   use_libm: bool = True) -> FrameFeatures:
    """Features of the markers ``points`` from a block region of one frame.

    Parameters
    ----------
    raw : ndarray, (Z, Y, X) or (Y, X), raw dtype
        The block's region (core plus halo), starting at ``offset`` in the frame.
    pre : ndarray, same shape, float
        The preprocessed image on the same region (not yet log-transformed).
    points : (n, d) int64
        Frame voxel indices of the markers in the block's core, raster order.
    radii : (n,) float
        ``ceil(2 * maxfilter(distance))`` at each marker (ROI half-width, voxels).
    offset, frame_shape : tuple of int
    cube : int
        ``R``, the frame-global side of the padded ROI cube (compat layout).
    shift : float or None
        Frame minimum of the log-transformed preprocessed values (see
        :func:`transform_preprocessed`).
    compat : bool
        Nellie's numerics (True) or float64 statistics (False).
    streaming : bool
        Nellie's streaming layout (exact-size boxes, float32 Hu); compat only.
    use_libm : bool
        Compat only: ``log10f``/``log10``/``pow`` from the C library (the bits of
        Nellie's reference outputs) rather than NumPy's SIMD kernels (the bits of
        Nellie run in this process on an AVX-512 CPU).

    Returns
    -------
    FrameFeatures
    """
    ndim = len(frame_shape)
    n = int(points.shape[0])
    if n == 0:
        return FrameFeatures.empty(ndim)
    lo, hi = _boxes(points, radii, frame_shape)
    off = np.asarray(offset)
    lo_l, hi_l = lo - off, hi - off
    if np.any(lo_l < 0) or np.any(hi_l > np.asarray(raw.shape)):
        raise RuntimeError("a marker's ROI box reaches beyond the block halo")
    # log-transform only the voxels some ROI box covers (elementwise, so exact)
    covered = np.zeros(pre.shape, bool)
    for a, b in zip(lo_l, hi_l):
        covered[tuple(slice(x, y) for x, y in zip(a, b))] = True
    pre = np.array(pre, copy=True)
    pre[covered] = transform_preprocessed(pre[covered], shift, compat, use_libm)
    if streaming and compat:
        return _streaming_compat(raw, pre, points, lo_l, hi_l, ndim, use_libm)
    stats = np.zeros((n, 4), np.float32)
    hu = np.zeros((n, n_hu(ndim)), np.float64)
    batch = max(1, _BATCH_VOXELS // (cube ** ndim))
    stat_fn = _stats_compat if compat else _stats_fixed
    work: dict = {}
    for s in range(0, n, batch):
        e = min(n, s + batch)
        rc = _buffer(work, (e - s,) + (cube,) * ndim, raw.dtype)
        pc = _buffer(work, (e - s,) + (cube,) * ndim, pre.dtype)
        if pc is rc:  # same shape and dtype: the second cube needs its own array
            pc = np.empty_like(rc)
        rc.fill(0)
        pc.fill(0)
        for k in range(s, e):
            src = tuple(slice(a, b) for a, b in zip(lo_l[k], hi_l[k]))
            dst = (k - s,) + tuple(slice(0, b - a) for a, b in zip(lo_l[k], hi_l[k]))
            rc[dst] = raw[src]
            pc[dst] = pre[src]
        stats[s:e] = np.concatenate([stat_fn(rc), stat_fn(pc)], axis=1)
        hu[s:e] = log_hu(_hu(rc, ndim, compat, use_libm, work), compat, use_libm)
    return FrameFeatures(points.astype(np.int64), stats, hu)


def _streaming_compat(raw, pre, points, lo_l, hi_l, ndim, use_libm=True) -> FrameFeatures:
    n = points.shape[0]
    stats = np.zeros((n, 4), np.float32)
    hu = np.zeros((n, n_hu(ndim)), np.float32)
    for k in range(n):
        src = tuple(slice(a, b) for a, b in zip(lo_l[k], hi_l[k]))
        r = raw[src][None]
        p = pre[src][None]
        stats[k] = np.concatenate((_stats_compat(r)[0], _stats_compat(p)[0]))
        hu[k] = log_hu(_hu(r, ndim, True, use_libm), True, use_libm)[0]
    return FrameFeatures(points.astype(np.int64), stats, hu)


def _log10f(x: Any) -> Any:
    """The C library's log10 in the precision of ``x`` (log10f for float32, log10 for float64)."""
    if type(x).__module__.startswith("cupy"):  # pragma: no cover - GPU path
        x = x.get()
    if x.dtype == np.float32:
        return libm.log10f(x)
    if x.dtype == np.float64:
        return libm.log10(x)
    return np.log10(x)


def _xp(a: Any):
    from ..backend import array_module

    return array_module(a)
