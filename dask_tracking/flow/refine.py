"""Sub-voxel flow: refine each flow row by local intensity correlation.

Nellie's flow vectors join two marker voxels, so they are whole voxels and miss
any motion that does not land a marker exactly on a marker (spec section 9). For
each row, :func:`refine_vectors` compares a small patch of the preprocessed image
around the start voxel at ``t`` with patches around the end point at ``t + 1``
shifted by up to ``search`` voxels per axis, takes the integer shift of lowest
sum of squared differences (brightness-normalised, so bleaching does not bias
it) and then a parabola through that minimum and its two neighbours on each
axis for the sub-voxel part (clipped to +-0.5 voxel). A row whose patch has no
contrast, or whose best shift lies on the search border, keeps its vector.
:func:`coarse_vectors` first re-estimates each vector by the same search on
block-averaged images within a larger reach (coarse to fine), so that a wrong
partner from the marker matching does not survive; :func:`refine_flow` runs
both on a :class:`FlowTable`, one task per frame pair.
"""

from __future__ import annotations

from typing import Any, Sequence

import dask
import numpy as np

from ..dataset import InputError
from .table import FlowTable

__all__ = ["coarse_vectors", "refine_vectors", "refine_flow"]


def _tuple(name: str, v: Any, d: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v),) * d
    try:
        out = tuple(int(x) for x in v)
        ok = len(out) == d and all(x >= 0 for x in out) and all(float(x) == int(x) for x in v)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be a non-negative integer or {d} of them, got {v!r}")
    return out


def _axes(name: str, v: Any, d: int) -> tuple[int, ...]:
    """Per-axis integers; a 3-tuple given for 2D images drops its Z entry."""
    if d == 2 and isinstance(v, (tuple, list)) and len(v) == 3:
        v = tuple(v)[1:]
    return _tuple(name, v, d)


def _patches(img: np.ndarray, centers: np.ndarray, half: np.ndarray) -> np.ndarray:
    """(n, prod(2*half+1)) patches around integer centres, edge-padded."""
    pad = [(int(h), int(h)) for h in half]
    p = np.pad(img, pad, mode="edge")
    offs = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), -1).reshape(-1, len(half))
    idx = centers[:, None, :] + offs[None, :, :] + half
    for a, n in enumerate(img.shape):
        np.clip(idx[..., a], half[a], n - 1 + half[a], out=idx[..., a])
    return p[tuple(idx[..., a] for a in range(len(half)))].astype(np.float64)


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    """Block mean over ``f`` x ``f`` in Y/X (Z kept), edge blocks padded by reflection."""
    pad = [(0, 0)] * (img.ndim - 2) + [(0, (-img.shape[-2]) % f), (0, (-img.shape[-1]) % f)]
    a = np.pad(np.asarray(img, dtype=np.float64), pad, mode="reflect")
    sh = a.shape[:-2] + (a.shape[-2] // f, f, a.shape[-1] // f, f)
    return a.reshape(sh).mean(axis=(-1, -3))


def coarse_vectors(rows: Any, image_t: Any, image_t1: Any, *, reach: Sequence[int] | int = (1, 16, 16),
                   factor: int = 4, half_window: Sequence[int] | int = (1, 3, 3)) -> np.ndarray:
    """Whole-voxel flow of each row's start voxel by a coarse correlation search.

    The images are block-averaged by ``factor`` in Y/X and each start voxel's patch
    is searched within ``reach`` voxels (full resolution) of zero motion; the
    result (a multiple of ``factor`` in Y/X) seeds :func:`refine_vectors`.

    Returns
    -------
    (n, 2d+2) float64
        The rows with the coarse displacements.
    """
    rows = np.array(rows, dtype=np.float64, copy=True)
    a = np.asarray(image_t)
    d = a.ndim
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(f"factor must be an integer >= 1, got {factor!r}")
    r = np.asarray(_axes("reach", reach, d))
    if len(rows) == 0:
        return rows
    f = np.ones(d, np.int64)
    f[-2:] = factor
    ca, cb = _downsample(a, factor), _downsample(np.asarray(image_t1), factor)
    coarse = rows.copy()
    coarse[:, 1:1 + d] = np.floor(rows[:, 1:1 + d] / f)
    coarse[:, 1 + d:1 + 2 * d] = 0.0
    srch = tuple(int(np.ceil(x / fx)) for x, fx in zip(r, f))
    out, usable = _refine(coarse, ca, cb, half_window, srch, subvoxel=False)
    found = np.rint(out[:, 1 + d:1 + 2 * d]) * f
    rows[usable, 1 + d:1 + 2 * d] = found[usable]      # otherwise keep the row's own vector
    return rows


def refine_vectors(rows: Any, image_t: Any, image_t1: Any, *, half_window: Sequence[int] | int = (1, 5, 5),
                   search: Sequence[int] | int = (1, 8, 8)) -> np.ndarray:
    """Sub-voxel flow rows of one frame pair.

    Parameters
    ----------
    rows : (n, 2d+2) array_like
        Flow rows ``t, (z), y, x, (dz), dy, dx, cost`` (voxels).
    image_t, image_t1 : ndarray, shape (Z, Y, X) or (Y, X)
        Preprocessed intensities of frames ``t`` and ``t + 1``.
    half_window : int or tuple of int
        Patch half size per axis, voxels (patch ``2 h + 1``).
    search : int or tuple of int
        Largest integer correction per axis, voxels.

    Returns
    -------
    (n, 2d+2) float64
        The rows with refined (float) displacements; other columns unchanged.
    """
    return _refine(rows, image_t, image_t1, half_window, search)[0]


def _refine(rows: Any, image_t: Any, image_t1: Any, half_window: Any, search: Any, *,
            subvoxel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rows = np.array(rows, dtype=np.float64, copy=True)
    a, b = np.asarray(image_t), np.asarray(image_t1)
    d = a.ndim
    if d not in (2, 3) or a.shape != b.shape:
        raise InputError(f"image_t and image_t1 must be 2D or 3D of one shape, got {a.shape} and {b.shape}")
    if rows.ndim != 2 or rows.shape[1] != 2 * d + 2:
        raise InputError(f"rows must have shape (n, {2 * d + 2}) for {d}D images, got {rows.shape}")
    half = np.asarray(_axes("half_window", half_window, d))
    srch = np.asarray(_axes("search", search, d))
    if len(rows) == 0:
        return rows, np.zeros(0, bool)
    start = np.rint(rows[:, 1:1 + d]).astype(np.int64)
    vec = rows[:, 1 + d:1 + 2 * d]
    end = np.rint(start + vec).astype(np.int64)
    ref = _patches(a, start, half)
    ref = ref - ref.mean(axis=1, keepdims=True)
    norm_ref = np.sqrt((ref ** 2).sum(axis=1))
    shifts = np.stack(np.meshgrid(*[np.arange(-s, s + 1) for s in srch], indexing="ij"), -1).reshape(-1, d)
    ssd = np.empty((len(rows), len(shifts)))
    for j, sh in enumerate(shifts):
        q = _patches(b, end + sh, half)
        q = q - q.mean(axis=1, keepdims=True)
        nq = np.sqrt((q ** 2).sum(axis=1))
        # 1 - normalised correlation: insensitive to brightness (bleaching)
        ssd[:, j] = 1.0 - (ref * q).sum(axis=1) / np.maximum(norm_ref * nq, 1e-12)
    best = ssd.argmin(axis=1)
    bshift = shifts[best]
    grid = tuple(2 * s + 1 for s in srch)
    cube = ssd.reshape((len(rows),) + grid)
    sub = np.zeros((len(rows), d))
    center_idx = bshift + srch
    n = np.arange(len(rows))
    for ax in range(d):
        if srch[ax] == 0:
            continue
        lo, hi = center_idx.copy(), center_idx.copy()
        lo[:, ax] -= 1
        hi[:, ax] += 1
        inside = (lo[:, ax] >= 0) & (hi[:, ax] < grid[ax])
        lo[:, ax] = np.clip(lo[:, ax], 0, grid[ax] - 1)
        hi[:, ax] = np.clip(hi[:, ax], 0, grid[ax] - 1)
        f0 = cube[(n, *center_idx.T)]
        fm = cube[(n, *lo.T)]
        fp = cube[(n, *hi.T)]
        den = fm - 2.0 * f0 + fp
        off = np.where(inside & (den > 1e-12), 0.5 * (fm - fp) / np.where(den > 1e-12, den, 1.0), 0.0)
        sub[:, ax] = np.clip(off, -0.5, 0.5)
    on_border = np.any((np.abs(bshift) == srch) & (srch > 1), axis=1)   # a 1-voxel search (Z) may end on its border
    usable = (norm_ref > 1e-6) & ~on_border
    if not subvoxel:
        sub[:] = 0.0
    new = np.where(usable[:, None], (end - start) + bshift + sub, vec)
    rows[:, 1 + d:1 + 2 * d] = new
    return rows, usable


def _pair(rows: Any, a: Any, b: Any, half_window: Any, search: Any, coarse: bool, reach: Any,
          factor: int) -> np.ndarray:
    if coarse:
        rows = coarse_vectors(rows, a, b, reach=reach, factor=factor)
    return refine_vectors(rows, a, b, half_window=half_window, search=search)


def refine_flow(flow: FlowTable, image: Any, *, coarse: bool = True, reach: Sequence[int] | int = (1, 16, 16),
                factor: int = 4, half_window: Sequence[int] | int = (1, 3, 3),
                search: Sequence[int] | int = (1, 4, 4)) -> FlowTable:
    """Sub-voxel flow for every frame pair of a table (lazy: one task per pair).

    With ``coarse=True`` (default) each row's vector is first re-estimated by
    :func:`coarse_vectors` (block-averaged images, search within ``reach`` voxels of
    no motion, so a wrong partner from the matching is replaced by what the
    intensities say), then refined to sub-voxel precision by :func:`refine_vectors`
    within ``search`` voxels. A row without contrast or whose best shift lies on a
    search border keeps its previous vector.

    Parameters
    ----------
    flow : FlowTable
    image : dask or numpy array, shape (T, Z, Y, X) or (T, Y, X)
        The preprocessed movie (``ds.preprocessed``); a task reads frames ``t`` and ``t + 1``.
    coarse : bool
        Run the coarse search first.
    reach : int or tuple of int
        Coarse search range per axis, full-resolution voxels (default about 1 um in Y/X
        at 0.0655 um, one slice in Z).
    factor : int
        Y/X block size of the coarse level.
    half_window, search : int or tuple of int
        Patch half size and search range of the fine step, voxels.

    Returns
    -------
    FlowTable
        Float displacements; ``attrs["refinement"]`` records the options.
    """
    if not isinstance(flow, FlowTable):
        raise InputError(f"flow must be a FlowTable, got {type(flow).__name__}")
    if getattr(image, "ndim", None) != flow.ndim + 1 or image.shape[0] != flow.n_frames:
        raise InputError(f"image must have shape (T={flow.n_frames}, ...) with {flow.ndim} spatial axes, "
                         f"got {getattr(image, 'shape', None)}")
    d = flow.ndim
    for name, v in (("reach", reach), ("half_window", half_window), ("search", search)):
        _axes(name, v, d)
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(f"factor must be an integer >= 1, got {factor!r}")
    f = dask.delayed(_pair, pure=True)
    pairs = [f(p, image[t], image[t + 1], half_window, search, bool(coarse), reach, int(factor))
             for t, p in enumerate(flow.pairs)]
    attrs = dict(flow.attrs)
    attrs["refinement"] = {"method": "normalised correlation, coarse-to-fine, parabola sub-voxel",
                           "coarse": bool(coarse), "reach": _jsonable(reach), "factor": int(factor),
                           "half_window": _jsonable(half_window), "search": _jsonable(search)}
    return FlowTable(pairs, flow.ndim, flow.n_frames, attrs)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v
