"""Filter -> ``preprocessed``: multi-scale Frangi vesselness (3D), plus a LoG blob term (2D).

Spec: ``nellie-prepare-spec.md`` section 2 (the behaviour of the Nellie 1.0.4 wheel).
The local work (cascaded Gaussians, Hessians, eigenvalues, the 2D LoG) runs per
spatial block with a halo that covers the exact support of the cascade; the
per-frame, per-scale statistics (gamma, the largest |H|, the Frobenius threshold,
the 1st percentile of the post-mask) are exact reductions over the frame, computed
from the deterministic strided sample of the spec, in separate passes:

1. statistics pass: per block, the samples and maxima of every scale;
2. per frame: gamma, A and the Frobenius cutoff of every scale;
3. vesselness pass: per block, with the frame's statistics;
4. (2D) the global maximum of the LoG term; then the 1st-percentile post-mask,
   whose binary opening is a halo-2 block operation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from .overlap import frame_scalars, map_cores, per_frame
from .params import FilterParams, filter_sigmas, sigma_vector
from .thresholds import min_threshold, sample_strides, strided_core_slices

__all__ = ["filter_movie", "filter_frame", "filter_halo"]

_F32 = np.float32


# ----------------------------------------------------------------------------- geometry
def _cascade_deltas(sigmas: Sequence[float], spacing: tuple[float, ...]) -> list[tuple[float, ...]]:
    """Per-scale increments of the Gaussian cascade, per axis (voxels)."""
    out, prev = [], 0.0
    for s in sigmas:
        pv, cv = sigma_vector(prev, spacing), sigma_vector(s, spacing)
        out.append(tuple(float(np.sqrt(max(0.0, float(c) ** 2 - float(p) ** 2))) for p, c in zip(pv, cv)))
        prev = s
    return out


def filter_halo(spacing: tuple[float, ...], params: FilterParams = FilterParams()) -> tuple[int, ...]:
    """Halo in voxels per spatial axis that makes the Filter's block kernels exact.

    The cascade's support is the sum of scipy's kernel radii ``int(truncate * delta + 0.5)``
    over the scales, plus 2 for the two nested central differences; in 2D the LoG
    term needs ``int(4 * sigma_max + 0.5)`` around the raw frame. Yeast: (10, 32, 32).
    """
    sigmas = filter_sigmas(params, spacing)
    deltas = _cascade_deltas(sigmas, spacing)
    halo = [sum(int(params.truncate * float(d[a]) + 0.5) for d in deltas) + 2 for a in range(len(spacing))]
    if len(spacing) == 2 and sigmas:
        sv = sigma_vector(max(sigmas), spacing)
        halo = [max(h, int(4.0 * float(s) + 0.5)) for h, s in zip(halo, sv)]
    return tuple(halo)


# ------------------------------------------------------------------------------- kernels
def _scales(img: np.ndarray, sigmas, spacing, truncate) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k, g_k)``: the frame block blurred to scale k by composing Gaussians (f32)."""
    g = img.astype(_F32, copy=True)
    for k, delta in enumerate(_cascade_deltas(sigmas, spacing)):
        if any(d > 0 for d in delta):
            ndi.gaussian_filter(g, sigma=delta, output=g, mode="reflect", cval=0.0, truncate=truncate)
        yield k, g


def _hessian(g: np.ndarray, spacing: tuple[float, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """Hessian components (upper triangle, row major, f32) and the squared Frobenius norm."""
    grads = np.gradient(g, *spacing)
    nd = g.ndim
    comps = []
    for i in range(nd):
        for j in range(i, nd):
            comps.append(np.gradient(grads[i], spacing[j], axis=j).astype(_F32, copy=False))
    if nd == 2:
        hxx, hxy, hyy = comps
        frob_sq = hxx ** 2 + hyy ** 2 + 2.0 * (hxy ** 2)
    else:
        hxx, hxy, hxz, hyy, hyz, hzz = comps
        frob_sq = hxx ** 2 + hyy ** 2 + hzz ** 2 + 2.0 * (hxy ** 2 + hxz ** 2 + hyz ** 2)
    return comps, frob_sq


def _eigenvalues(comps: list[np.ndarray], where: tuple[np.ndarray, ...]) -> np.ndarray:
    """Eigenvalues (N, d) at the voxels ``where``, ordered by increasing |lambda|."""
    if len(comps) == 3:
        hxx, hxy, hyy = (c[where] for c in comps)
        trace = hxx + hyy
        diff = hxx - hyy
        delta = np.sqrt(diff * diff + 4.0 * (hxy * hxy))
        l1 = 0.5 * (trace - delta)
        l2 = 0.5 * (trace + delta)
        swap = np.abs(l1) > np.abs(l2)
        return np.stack([np.where(swap, l2, l1), np.where(swap, l1, l2)], axis=1)
    hxx, hxy, hxz, hyy, hyz, hzz = (c[where] for c in comps)
    h = np.stack([np.stack([hxx, hxy, hxz], axis=-1),
                  np.stack([hxy, hyy, hyz], axis=-1),
                  np.stack([hxz, hyz, hzz], axis=-1)], axis=-2)
    ev = np.linalg.eigvalsh(h)
    order = np.argsort(np.abs(ev), axis=1)
    return np.take_along_axis(ev, order, axis=1)


def _vesselness(ev: np.ndarray, gamma_sq: float, alpha_sq: float, beta_sq: float) -> np.ndarray:
    """Frangi-like vesselness of eigenvalue rows (spec 2.3 step 7), f32."""
    if ev.shape[1] == 2:
        l1, l2 = ev[:, 0], ev[:, 1]
        rb_sq = (np.abs(l1) / (np.abs(l2) + 1e-12)) ** 2
        s_sq = l1 ** 2 + l2 ** 2
        v = np.exp(-(rb_sq / beta_sq)) * (1.0 - np.exp(-(s_sq / gamma_sq)))
    else:
        l1, l2, l3 = ev[:, 0], ev[:, 1], ev[:, 2]
        ra_sq = (np.abs(l2) / (np.abs(l3) + 1e-12)) ** 2
        rb_sq = (np.abs(l2) / (np.sqrt(np.abs(l2 * l3)) + 1e-12)) ** 2
        s_sq = l1 ** 2 + l2 ** 2 + l3 ** 2
        v = ((1.0 - np.exp(-(ra_sq / alpha_sq))) * np.exp(-(rb_sq / beta_sq))
             * (1.0 - np.exp(-(s_sq / gamma_sq))))
        v[ev[:, 2] > 0] = 0.0
    v[ev[:, 1] > 0] = 0.0
    return np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class _ScaleStats:
    """Per frame and scale: gamma**2 term, largest |H|, Frobenius cutoff, inf replacement, skip."""

    gamma_sq: float
    max_abs: float
    cutoff: float
    inf_value: float
    skip: bool


def _scale_sample(g, comps, frob_sq, inner, sample_sl) -> dict:
    """One block's statistics of one scale: strided positive samples and maxima of the core."""
    gc = g[inner][sample_sl]
    root = np.sqrt(frob_sq[inner])
    finite = np.isfinite(root)
    return {
        "g": gc[gc > 0],
        "root": root[sample_sl],
        "max_abs": max(float(np.max(np.abs(c[inner]))) if c[inner].size else 0.0 for c in comps),
        "root_max_finite": float(root[finite].max()) if finite.any() else None,
        "has_inf": bool(np.isinf(root).any()),
    }


def _stats_kernel(block, inner, start, *, sigmas, spacing, truncate, strides):
    """Statistics pass: per scale, the strided positive samples and maxima of the core."""
    sample_sl = strided_core_slices(start, [s + (i.stop - i.start) for s, i in zip(start, inner)], strides)
    out = []
    for _k, g in _scales(block[0], sigmas, spacing, truncate):
        comps, frob_sq = _hessian(g, spacing)
        out.append(_scale_sample(g, comps, frob_sq, inner, sample_sl))
    return out


def _frame_stats(items, *, spacing, params: FilterParams, guard: bool) -> list[_ScaleStats]:
    """Per frame: reduce the blocks' statistics to gamma, A and the Frobenius cutoff per scale."""
    return [_scale_stats([it[k] for it in items], spacing=spacing, params=params, guard=guard)
            for k in range(len(items[0]))]


def _scale_stats(blocks, *, spacing, params: FilterParams, guard: bool) -> _ScaleStats:
    """One scale of one frame: gamma**2 term, A = max|H|, Frobenius cutoff, from all its blocks."""
    geo = float(np.prod(spacing)) ** (1.0 / len(spacing))
    pos = np.concatenate([b["g"] for b in blocks])
    if pos.size == 0:
        gamma = float(np.finfo(np.float32).eps)
    else:
        gamma = min_threshold(pos, guard=guard)
        if gamma <= 0:
            gamma = float(np.finfo(np.float32).eps)
        if geo > 0:
            gamma = gamma / (geo ** 2)
    gamma_sq = 2.0 * (float(gamma) ** 2)
    max_abs = max(b["max_abs"] for b in blocks)
    if max_abs <= 0:
        max_abs = 1.0
    froot = np.concatenate([b["root"].reshape(-1) for b in blocks]) / max_abs
    has_inf = any(b["has_inf"] for b in blocks)
    finite_max = [b["root_max_finite"] for b in blocks if b["root_max_finite"] is not None]
    # F = root / A; the replacement of +inf is the largest finite F of the whole frame
    inf_value = float(np.float32(max(finite_max)) / np.float32(max_abs)) if finite_max else 0.0
    if has_inf:
        froot = np.where(np.isinf(froot), np.float32(inf_value), froot)
    f_max = inf_value
    if not params.frob_thresh_division:
        cutoff = 0.0
    else:
        if params.frob_thresh is None:
            p = froot[froot > 0]
            thr = 0.0 if p.size == 0 else min_threshold(p, guard=guard)
        else:
            thr = float(params.frob_thresh)
        cutoff = thr / params.frob_thresh_division
    skip = not bool(np.float32(f_max) > np.array([cutoff], dtype=_F32)[0]) if finite_max else True
    return _ScaleStats(gamma_sq, max_abs, cutoff, inf_value, skip)


def _vessel_scale(comps, frob_sq, inner, st: _ScaleStats, params: FilterParams, core_shape):
    """V_sigma and the Frobenius mask of one scale on the core (f32, bool)."""
    comps = [c[inner] for c in comps]
    frob = np.sqrt(frob_sq[inner]) / st.max_abs
    if np.isinf(frob).any():
        frob = frob.copy()
        frob[np.isinf(frob)] = st.inf_value
    h_mask = frob > st.cutoff if params.frob_thresh_division else frob > 0
    where = np.nonzero(h_mask)
    vs = np.zeros(core_shape, dtype=_F32)
    if where[0].size:
        ev = _eigenvalues(comps, where)
        vs[where] = _vesselness(ev, st.gamma_sq, float(params.alpha_sq),
                                float(params.beta_sq)).astype(_F32, copy=False)
    return vs, h_mask


def _log_term(img32, inner, masks, sigmas, spacing):
    """2D: the masked multi-scale LoG blob response (before its global normalisation)."""
    lap = None
    for i, s in enumerate(sigmas):
        cur = (-ndi.gaussian_laplace(img32, sigma_vector(s, spacing)) * (float(s) ** 2))[inner]
        cur = cur * masks
        if i == 0:
            lap = cur
        else:
            better = cur > lap
            lap[better] = cur[better]
    lap[lap < 0] = 0.0
    return lap


def _vessel_kernel(block, inner, start, stats, *, sigmas, spacing, truncate, params: FilterParams,
                   strides=None, guard=False):
    """Vesselness pass: max over scales of V_sigma and the AND of the Frobenius masks (core).

    ``stats`` is the frame's per-scale statistics, or None when the block is the whole
    frame: each scale's statistics then come from the block itself, in the same pass
    (they depend on that scale only), and the cascade is computed once.

    Returns (1, C, *core): channel 0 = V * M; in 2D channel 1 = the masked LoG term
    before its global normalisation.
    """
    stats = None if stats is None else stats.reshape(-1)[0]
    img = block[0]
    core_shape = tuple(i.stop - i.start for i in inner)
    vessel = np.zeros(core_shape, dtype=_F32)
    masks = np.ones(core_shape, dtype=bool)
    for k, g in _scales(img, sigmas, spacing, truncate):
        if stats is not None:
            st = stats[k]
            if st.skip:
                continue
            comps, frob_sq = _hessian(g, spacing)
        else:
            comps, frob_sq = _hessian(g, spacing)
            sample_sl = strided_core_slices((0,) * len(core_shape), core_shape, strides)
            st = _scale_stats([_scale_sample(g, comps, frob_sq, inner, sample_sl)], spacing=spacing,
                              params=params, guard=guard)
            if st.skip:
                continue
        vs, h_mask = _vessel_scale(comps, frob_sq, inner, st, params, core_shape)
        vessel = np.maximum(vessel, vs)
        masks &= h_mask
    out = vessel * masks
    if img.ndim == 3:
        return out[None, None]
    return np.stack([out, _log_term(img.astype(_F32, copy=False), inner, masks, sigmas, spacing)])[None]


def _percentile_of(items):
    pos = np.concatenate([b for b in items]) if items else np.zeros(0, _F32)
    return None if pos.size == 0 else np.percentile(pos, 1)


def _sample_positive_kernel(block, inner, start, *, strides):
    core = block[0][inner]
    stop = [s + (i.stop - i.start) for s, i in zip(start, inner)]
    smp = core[strided_core_slices(start, stop, strides)]
    return smp[smp > 0]


def _opening_kernel(block, inner, start, thr):
    thr = thr.reshape(-1)[0]
    frame = block[0]
    if thr is None:
        return frame[inner][None]
    mask = ndi.binary_opening(frame > thr)
    return (frame * mask)[inner][None]


# --------------------------------------------------------------------------------- graph
def filter_movie(raw: da.Array, spacing: Sequence[float], params: FilterParams = FilterParams(),
                 *, guard: bool = False) -> da.Array:
    """Lazy ``preprocessed`` (T, *spatial) float32 of a raw movie.

    Parameters
    ----------
    raw : dask.array.Array, shape (T, Z, Y, X) or (T, Y, X)
        Raw intensities, any real dtype (converted to float32).
    spacing : sequence of float
        Voxel size per spatial axis in um, ``(z, y, x)`` or ``(y, x)``.
    params : FilterParams
    guard : bool
        Guard the triangle threshold against single-bin histograms (Nellie raises).

    Returns
    -------
    dask.array.Array
        float32, same shape and spatial chunks as ``raw`` (re-chunked only where a
        chunk is smaller than the halo), one frame per chunk on T.
    """
    spacing = tuple(float(s) for s in spacing)
    sigmas = filter_sigmas(params, spacing)
    halo = filter_halo(spacing, params)
    strides = sample_strides(raw.shape[1:], params.max_threshold_samples)
    common = dict(sigmas=sigmas, spacing=spacing, truncate=float(params.truncate))
    channels = 1 if raw.ndim == 4 else 2
    if all(len(c) == 1 for c in raw.chunks[1:]):
        # whole frames: statistics and vesselness in one pass per frame (one cascade)
        both = map_cores(_vessel_kernel, raw, (0,) * (raw.ndim - 1), None, dtype=_F32, channels=channels,
                         params=params, strides=strides, guard=guard, **common)
    else:
        blocks = map_cores(_stats_kernel, raw, halo, dtype=object, out="object", strides=strides, **common)
        stats = per_frame(_frame_stats, blocks, spacing=spacing, params=params, guard=guard)
        both = map_cores(_vessel_kernel, raw, halo, stats, dtype=_F32, channels=channels,
                         params=params, **common)
    out = both[:, 0]
    if raw.ndim == 3:
        lap = both[:, 1]
        lap_max = lap.max(axis=(1, 2), keepdims=True)
        out = da.maximum(out, lap / (lap_max + 1e-12) / 10.0)
    samples = map_cores(_sample_positive_kernel, out, (0,) * (raw.ndim - 1), dtype=object, out="object",
                        strides=strides)
    thr = per_frame(_percentile_of, samples)
    result = map_cores(_opening_kernel, out, (2,) * (raw.ndim - 1), thr, dtype=_F32)
    return result.rechunk(raw.chunks) if result.chunks != raw.chunks else result


def filter_frame(frame: np.ndarray, spacing: Sequence[float], params: FilterParams = FilterParams(),
                 *, guard: bool = False) -> np.ndarray:
    """The Filter on one in-memory frame (Z, Y, X) or (Y, X): float32 vesselness."""
    x = da.from_array(np.asarray(frame)[None], chunks=(1,) + np.shape(frame))
    return filter_movie(x, spacing, params, guard=guard)[0].compute(scheduler="synchronous")
