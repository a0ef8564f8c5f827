"""Sub-voxel flow by an affine Lucas-Kanade fit around each flow row.

A translation-only patch search (:mod:`dask_tracking.flow.refine`) is biased where
the structure in the patch turns or bends between frames: a curved tube that
rotates looks, to a translated patch, like a tube that slid sideways, and the
error (a fraction of a voxel per frame) accumulates along a track. Here each
row's vector is polished by fitting, by Gauss-Newton, an *affine* warp plus a
gain and an offset of the intensities::

    I_{t+1}(p + v + (1 + A) o) ~= alpha * T(o) + beta

over a window of offsets ``o`` around the row's start voxel ``p`` (``T`` the
normalised frame-``t`` patch, Gaussian-weighted), so rotation, shear and local
bending of the patch no longer bias the translation ``v``. ``A`` (d x d) is lightly
regularised toward 0. The brightness terms make it insensitive to bleaching.

Every row is computed on its own (batched array code whose per-row arithmetic
does not depend on the other rows), so the result of a row does not depend on the
batch or on the image window it was cut from, as long as the window holds
:func:`affine_reach` voxels around the row (see :func:`affine_vectors`'s
``offset_t`` / ``offset_t1``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..dataset import InputError

__all__ = ["affine_vectors", "affine_reach", "AFFINE_DEFAULTS"]

#: Defaults (3D; 2D drops the first entry): window half size (voxels), sampling stride
#: (voxels), iterations, largest correction of the starting vector (voxels).
AFFINE_DEFAULTS = {"half_window": (2, 12, 12), "stride": (1, 3, 3), "iterations": 6,
                   "max_correction": (2.0, 8.0, 8.0)}

_MAX_AFFINE = 0.5    # |A_ij| bound: a window may turn/shear by at most ~27 degrees per frame
_BATCH = 128


def _per_axis(name: str, v: Any, d: int, *, integer: bool, positive: bool) -> np.ndarray:
    if d == 2 and isinstance(v, (tuple, list)) and len(v) == 3:
        v = tuple(v)[1:]
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        v = (v,) * d
    try:
        arr = np.asarray([float(x) for x in v], dtype=np.float64)
        ok = arr.shape == (d,) and bool(np.all(np.isfinite(arr)))
        if integer:
            ok = ok and bool(np.all(arr == np.round(arr)))
        ok = ok and bool(np.all(arr > 0) if positive else np.all(arr >= 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        kind = "integer" if integer else "number"
        sign = "positive" if positive else "non-negative"
        raise InputError(f"{name} must be a {sign} {kind} or {d} of them (Z, Y, X order), got {v!r}")
    return arr.astype(np.int64) if integer else arr


def affine_reach(ndim: int, *, half_window: Any = None, max_correction: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Voxels per axis an image window must hold around each row.

    Returns
    -------
    (reach_t, reach_t1) : two (d,) int64 arrays
        Frame ``t`` is read at ``p + o`` (``|o| <= half_window``); frame ``t + 1`` at
        ``p + v0 + (1 + A) o + dv`` plus one voxel for linear interpolation and one for
        the central-difference gradient, with ``|dv| <= max_correction`` and
        ``|A_ij| <= 0.5``. A window holding ``p +- reach_t`` of frame ``t`` and
        ``round(p + v0) +- reach_t1`` of frame ``t + 1`` (clipped to the frame) gives
        exactly the whole-frame answer.
    """
    d = int(ndim)
    h = _per_axis("half_window", AFFINE_DEFAULTS["half_window"] if half_window is None else half_window, d,
                  integer=True, positive=False)
    c = _per_axis("max_correction", AFFINE_DEFAULTS["max_correction"] if max_correction is None
                  else max_correction, d, integer=False, positive=True)
    shear = np.ceil(_MAX_AFFINE * h.sum()).astype(np.int64)   # sum_j |A_ij| |o_j|
    return h + 1, (h + shear + np.ceil(c).astype(np.int64) + 3).astype(np.int64)


def affine_vectors(rows: Any, image_t: Any, image_t1: Any, *, half_window: Any = None, stride: Any = None,
                   iterations: int | None = None, max_correction: Any = None, ridge: float = 1e-3,
                   offset_t: Sequence[int] | None = None, offset_t1: Sequence[int] | None = None,
                   frame_shape: Sequence[int] | None = None) -> np.ndarray:
    """Polish the vectors of one frame pair's flow rows by an affine Lucas-Kanade fit.

    Parameters
    ----------
    rows : (n, 2d+2) array_like
        Flow rows ``t, (z), y, x, (dz), dy, dx, cost`` (voxels); the vectors are the
        starting point (e.g. from :func:`dask_tracking.flow.refine.refine_vectors`).
    image_t, image_t1 : ndarray, shape (Z, Y, X) or (Y, X)
        Intensities (e.g. preprocessed) of frames ``t`` and ``t + 1``: whole frames, or
        windows of them starting at ``offset_t`` / ``offset_t1`` that hold
        :func:`affine_reach` voxels around every row (see there).
    half_window : int or tuple of int
        Window half size per axis, voxels (default ``(2, 12, 12)``: about 0.5 / 0.8 / 0.8 um
        at the yeast sample's voxel size).
    stride : int or tuple of int
        Sampling step of the window per axis, voxels (default ``(1, 3, 3)``).
    iterations : int
        Gauss-Newton iterations (default 6).
    max_correction : number or tuple
        Largest change of a row's vector per axis, voxels (default ``(2, 8, 8)``); a
        fit that would move further, or that ends with a worse weighted correlation
        than the starting vector, keeps the starting vector.
    ridge : float
        Weight of the pull of the affine part ``A`` toward 0 (relative to the data term).
    offset_t, offset_t1 : sequence of int, optional
        Global voxel index of each window's first voxel (default: zeros, whole frames).
    frame_shape : sequence of int, optional
        Shape of the whole frame (default: ``image_t.shape``); sample positions are
        clamped to it, as on whole frames.

    Returns
    -------
    (n, 2d+2) float64
        The rows with polished (float) vectors; other columns unchanged.
    """
    rows = np.array(rows, dtype=np.float64, copy=True)
    # the windows stay in their own dtype (float32 for the preprocessed image): sampling reads
    # them as float64 (``_sample``), which gives the bits of a float64 copy without holding one
    a, b = (np.asarray(im) for im in (image_t, image_t1))
    a, b = (im if im.dtype in (np.float32, np.float64) else im.astype(np.float64) for im in (a, b))
    d = a.ndim
    if d not in (2, 3) or b.ndim != d:
        raise InputError(f"image_t and image_t1 must both be 2D or 3D, got shapes {a.shape} and {b.shape}")
    if rows.ndim != 2 or rows.shape[1] != 2 * d + 2:
        raise InputError(f"rows must have shape (n, {2 * d + 2}) for {d}D images, got {rows.shape}")
    h = _per_axis("half_window", AFFINE_DEFAULTS["half_window"] if half_window is None else half_window, d,
                  integer=True, positive=False)
    st = _per_axis("stride", AFFINE_DEFAULTS["stride"] if stride is None else stride, d,
                   integer=True, positive=True)
    corr = _per_axis("max_correction", AFFINE_DEFAULTS["max_correction"] if max_correction is None
                     else max_correction, d, integer=False, positive=True)
    iters = AFFINE_DEFAULTS["iterations"] if iterations is None else iterations
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise InputError(f"iterations must be an integer >= 1, got {iterations!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not (np.isfinite(ridge) and ridge >= 0):
        raise InputError(f"ridge must be a non-negative number, got {ridge!r}")
    shape = np.asarray(a.shape if frame_shape is None else tuple(frame_shape), dtype=np.int64)
    if shape.shape != (d,):
        raise InputError(f"frame_shape must have {d} entries, got {frame_shape!r}")
    off_a = np.zeros(d, np.int64) if offset_t is None else np.asarray(offset_t, dtype=np.int64)
    off_b = np.zeros(d, np.int64) if offset_t1 is None else np.asarray(offset_t1, dtype=np.int64)
    if len(rows) == 0:
        return rows
    offs = np.stack(np.meshgrid(*[np.arange(-int(hh), int(hh) + 1, int(s)) for hh, s in zip(h, st)],
                                indexing="ij"), -1).reshape(-1, d).astype(np.float64)
    sig = h * 0.6 + 0.5
    wgt = np.exp(-0.5 * ((offs / sig) ** 2).sum(axis=1))
    # batches of rows near each other (sorted by where they land in Y, then X), each with the
    # gradient (central differences per axis, one-sided at the frame edge; none along an axis of
    # one voxel) of only the part of frame t+1 its samples can reach: a row's result does not
    # depend on its batch, and the gradient values read are those of the whole window
    land = np.rint(rows[:, 1:1 + d]) + rows[:, 1 + d:1 + 2 * d]
    order = np.lexsort(tuple(land[:, k] for k in [0] * (d == 3) + [d - 1, d - 2]))
    reach = h + np.ceil(_MAX_AFFINE * h.sum()) + corr
    for i, j in _batch_bounds(land[order], reach, shape):
        sel = order[i:j]
        part = rows[sel]
        grads, g_off = _batch_gradients(b, land[sel], reach, shape, off_b)
        rows[sel, 1 + d:1 + 2 * d] = _fit(part, a, b, grads, offs, wgt, int(iters), corr, float(ridge),
                                          shape, off_a, off_b, g_off)
        del grads                   # before the next batch's: one batch's gradients at a time
    return rows


#: Voxels of frame t+1 whose gradients one polish batch holds at most: a batch ends before the
#: row that would make its reach box larger (the box holds four float64 copies, 32 bytes a voxel).
_BOX_VOXELS = 1 << 19


def _batch_bounds(land: np.ndarray, reach: np.ndarray, shape: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the polish batches over rows sorted by landing voxel ``land``
    (global voxels, (n, d)): at most :data:`_BATCH` rows, and a reach box of at most
    :data:`_BOX_VOXELS` voxels unless one row alone needs more. A row's result does not
    depend on its batch, so the batches only bound the memory of a task."""
    top = np.asarray(shape, dtype=np.float64) - 1
    out, i, n = [], 0, len(land)
    while i < n:
        seg = land[i:min(i + _BATCH, n)]
        lo = np.clip(np.minimum.accumulate(seg, axis=0) - reach, 0, top)
        hi = np.clip(np.maximum.accumulate(seg, axis=0) + reach, 0, top)
        over = np.flatnonzero(np.prod(hi - lo + 4, axis=1) > _BOX_VOXELS)
        stop = i + (max(int(over[0]), 1) if len(over) else len(seg))
        out.append((i, stop))
        i = stop
    return out


def _batch_gradients(b: np.ndarray, land: np.ndarray, reach: np.ndarray, shape: np.ndarray,
                     off_b: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Central-difference gradients (float64, per axis) of the part of window ``b`` that the
    samples of rows landing at ``land`` (global voxels, (n, d)) can read, and its global origin.

    The samples lie within ``land +- reach`` clamped to the frame; linear interpolation reads
    the voxel below and the one above each, and their central differences one more voxel on
    each side. Those voxels' gradients are computed from the same neighbours as on the whole
    window (one-sided only at the window's own edges, as there), so they have the same bits.
    """
    d = b.ndim
    top = np.asarray(shape, dtype=np.float64) - 1
    lo = np.floor(np.clip(land.min(axis=0) - reach, 0, top)).astype(np.int64) - 1
    hi = np.floor(np.clip(land.max(axis=0) + reach, 0, top)).astype(np.int64) + 3
    lo = np.clip(lo - off_b, 0, np.asarray(b.shape))
    hi = np.clip(hi - off_b, lo, np.asarray(b.shape))
    sub = np.asarray(b[tuple(slice(int(x), int(y)) for x, y in zip(lo, hi))], dtype=np.float64)
    grads = [np.gradient(sub, axis=k) if b.shape[k] > 1 else np.zeros(sub.shape) for k in range(d)]
    return grads, off_b + lo


def _sample(img: np.ndarray, coords: np.ndarray, shape: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Linear interpolation at global coordinates (..., d), clamped to the frame."""
    d = coords.shape[-1]
    c = np.empty_like(coords)
    for k in range(d):
        np.clip(coords[..., k], 0.0, float(shape[k] - 1), out=c[..., k])
        c[..., k] -= off[k]        # exact: an integer shift of a coordinate >= it
    flat = c.reshape(-1, d).T
    return ndi.map_coordinates(img, flat, order=1, mode="nearest", prefilter=False,
                               output=np.float64).reshape(coords.shape[:-1])


def _fit(rows, a, b, grads, offs, wgt, iters, corr, ridge, shape, off_a, off_b, off_g=None) -> np.ndarray:
    d = a.ndim
    n, m = len(rows), len(offs)
    p = np.rint(rows[:, 1:1 + d])
    v0 = rows[:, 1 + d:1 + 2 * d].copy()
    # template: frame t at integer positions (no interpolation)
    idx = p[:, None, :] + offs[None, :, :]
    for k in range(d):
        np.clip(idx[..., k], 0, shape[k] - 1, out=idx[..., k])
    idx = idx.astype(np.int64) - off_a
    # C order: every per-row reduction below then runs along a contiguous row, in an order that does
    # not depend on the other rows of the batch (fancy indexing may return the transposed layout)
    T = np.ascontiguousarray(a[tuple(idx[..., k] for k in range(d))], dtype=np.float64)
    wsum = wgt.sum()
    T = T - ((T * wgt).sum(axis=1) / wsum)[:, None]
    tn = np.sqrt((T * T * wgt).sum(axis=1))
    flat_ok = tn > 1e-9
    T = T / np.where(flat_ok, tn, 1.0)[:, None]
    npar = d + d * d + 2
    reg = np.zeros(npar)
    reg[d:d + d * d] = ridge
    eye = np.eye(npar)
    v = v0.copy()
    A = np.zeros((n, d, d))
    alpha = np.ones(n)
    beta = np.zeros(n)

    def warp(v, A):
        return p[:, None, :] + v[:, None, :] + offs[None] + np.matmul(A, offs.T[None]).transpose(0, 2, 1)

    def ncc(v, A):
        I = _sample(b, warp(v, A), shape, off_b)
        I = I - ((I * wgt).sum(axis=1) / wsum)[:, None]
        nI = np.sqrt((I * I * wgt).sum(axis=1))
        return (I * T * wgt).sum(axis=1) / np.maximum(nI, 1e-12)

    start_score = ncc(v, A)
    for _ in range(iters):
        W = warp(v, A)
        I = _sample(b, W, shape, off_b)
        g = np.stack([_sample(gk, W, shape, off_b if off_g is None else off_g) for gk in grads],
                     axis=-1)                                                            # (n, m, d)
        r = I - (alpha[:, None] * T + beta[:, None])
        J = np.concatenate([g, (g[:, :, :, None] * offs[None, :, None, :]).reshape(n, m, d * d),
                            -T[:, :, None], -np.ones((n, m, 1))], axis=-1)               # (n, m, P)
        Jw = J * wgt[None, :, None]
        H = np.matmul(Jw.transpose(0, 2, 1), J)                                          # (n, P, P)
        scale = np.trace(H, axis1=1, axis2=2) / npar
        H = H + (reg[None, :] * scale[:, None] + 1e-9 * np.maximum(scale, 1e-30)[:, None])[:, :, None] * eye[None]
        rhs = -np.matmul(Jw.transpose(0, 2, 1), r[:, :, None])                            # (n, P, 1)
        dp = _solve(H, rhs)
        big = np.abs(dp[:, :d]).max(axis=1)
        dp = dp / np.maximum(1.0, big)[:, None]                                            # at most 1 voxel a step
        v = np.clip(v + dp[:, :d], v0 - corr, v0 + corr)
        A = np.clip(A + dp[:, d:d + d * d].reshape(n, d, d), -_MAX_AFFINE, _MAX_AFFINE)
        alpha = alpha + dp[:, -2]
        beta = beta + dp[:, -1]
    end_score = ncc(v, A)
    at_bound = np.any(np.abs(v - v0) >= corr - 1e-9, axis=1)
    ok = flat_ok & np.all(np.isfinite(v), axis=1) & ~at_bound & (end_score >= start_score)
    return np.where(ok[:, None], v, v0)


def _solve(H: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched solve; a singular system gives no step."""
    try:
        return np.linalg.solve(H, rhs)[:, :, 0]
    except np.linalg.LinAlgError:
        out = np.zeros(rhs.shape[:2])
        for i in range(len(H)):
            try:
                out[i] = np.linalg.solve(H[i], rhs[i])[:, 0]
            except np.linalg.LinAlgError:
                pass
        return out
