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
partner from the marker matching does not survive.

:func:`refine_flow` runs both on a :class:`FlowTable` as a Dask graph bounded per
block: one task per (frame pair ``t``, spatial block of the image's chunk grid)
refines the rows whose start voxel lies in the block's core and reads only the
windows of frames ``t`` and ``t + 1`` those rows need (the core plus a halo set
by the search ranges and the bound ``max_vector`` on the row vectors); one small
task per pair puts the rows back in their order. The windows are aligned to the
coarse grid and are clipped only at the frame edge, so every chunking gives the
bits of :func:`coarse_vectors` and :func:`refine_vectors` on whole frames.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import dask.array as da
import numpy as np
from dask._task_spec import Task, TaskRef
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..backend import to_host
from ..blocks import iter_blocks
from ..dataset import InputError
from ..reads import ChunkReads
from .regions import ChunkGrid, read_region
from .subvoxel import affine_reach, affine_vectors
from .table import FlowTable

__all__ = ["coarse_vectors", "refine_vectors", "refine_flow", "RefinePlan"]


# ------------------------------------------------------------- validation
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


def _numbers(name: str, v: Any, d: int, what: str) -> tuple[float, ...]:
    """``d`` finite numbers >= 0 (a scalar is used on every axis)."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        v = (v,) * d
    try:
        out = tuple(float(x) for x in v)
        ok = len(out) == d and all(math.isfinite(x) and x >= 0 for x in out) and \
            not any(isinstance(x, bool) for x in v)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be a number >= 0 or {d} of them ({what}), got {v!r}")
    return out


def _check_factor(factor: Any) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(f"factor must be an integer >= 1, got {factor!r}")
    return int(factor)


# ---------------------------------------------------------------- kernels
#: Rows per batch of the correlation search (its memory is about 20 kB per row).
_BATCH = 4096


def _boxes(img: np.ndarray, origin: Sequence[int], frame_shape: Sequence[int], centers: np.ndarray,
           half: np.ndarray) -> np.ndarray:
    """(n, 2*half+1 ...) float64 boxes around integer centres, edge-padded at the frame edge.

    ``img`` is the window of the frame that starts at ``origin`` (frame voxels);
    it must hold every clipped box voxel.
    """
    d = len(frame_shape)
    idx = []
    for a, n in enumerate(frame_shape):
        h = int(half[a])
        i = np.clip(centers[:, a, None] + np.arange(-h, h + 1)[None, :], 0, n - 1) - int(origin[a])
        if i.size and (i.min() < 0 or i.max() >= img.shape[a]):
            raise RuntimeError(f"refinement window too small on axis {a}: needs frame voxels "
                               f"{i.min() + origin[a]}..{i.max() + origin[a]}, has "
                               f"{origin[a]}..{origin[a] + img.shape[a] - 1}")
        shape = [len(centers)] + [1] * d
        shape[a + 1] = 2 * h + 1
        idx.append(i.reshape(shape))
    return np.asarray(img[tuple(idx)], dtype=np.float64)


def _patches(img: np.ndarray, origin: Sequence[int], frame_shape: Sequence[int], centers: np.ndarray,
             half: np.ndarray) -> np.ndarray:
    """(n, prod(2*half+1)) float64 patches (C order of the offsets) around integer centres."""
    return _boxes(img, origin, frame_shape, centers, half).reshape(len(centers), -1)


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    """Block mean over ``f`` x ``f`` in Y/X (Z kept), edge blocks padded by reflection.

    The ``f * f`` values of a block are added in one fixed order, so a window that
    starts on a multiple of ``f`` gives the same bits as the whole frame. Each of the
    ``f * f`` strided views is gathered (reflected indices past the edge, as ``np.pad``'s
    ``"reflect"``) and widened to float64 on its own: the task holds the output and one
    view, not a float64 copy of the whole window.
    """
    if f == 1:
        return np.array(img, dtype=np.float64)
    ny, nx = img.shape[-2:]
    out = None
    for i in range(f):
        iy = _reflected(np.arange(i, ny + (-ny) % f, f), ny)
        for j in range(f):
            ix = _reflected(np.arange(j, nx + (-nx) % f, f), nx)
            s = np.asarray(img[..., iy[:, None], ix[None, :]], dtype=np.float64)
            out = s if out is None else np.add(out, s, out=out)
    return out / float(f * f)


def _reflected(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices into an axis of ``n`` voxels, those past its end reflected (``np.pad``'s "reflect")."""
    if n == 1:
        return np.zeros_like(idx)
    m = idx % (2 * (n - 1))
    return np.where(m >= n, 2 * (n - 1) - m, m)


def _refine_core(rows: np.ndarray, a: np.ndarray, origin_a: Sequence[int], b: np.ndarray,
                 origin_b: Sequence[int], frame_shape: Sequence[int], half: np.ndarray, srch: np.ndarray,
                 subvoxel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The correlation search of each row (row by row: the result of a row does not depend on the others).

    Rows are processed in batches of :data:`_BATCH` (bounded memory, same bits).
    """
    rows = np.array(rows, dtype=np.float64, copy=True)
    d = len(frame_shape)
    # an axis of one voxel (a single slice) cannot show motion: no search along it
    srch = np.where(np.asarray(frame_shape) > 1, np.asarray(srch), 0)
    if len(rows) == 0:
        return rows, np.zeros(0, bool)
    if len(rows) > _BATCH:
        parts = [_refine_core(rows[i:i + _BATCH], a, origin_a, b, origin_b, frame_shape, half, srch, subvoxel)
                 for i in range(0, len(rows), _BATCH)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    start = np.rint(rows[:, 1:1 + d]).astype(np.int64)
    vec = rows[:, 1 + d:1 + 2 * d]
    end = np.rint(start + vec).astype(np.int64)
    ref = _patches(a, origin_a, frame_shape, start, half)
    ref = ref - ref.mean(axis=1, keepdims=True)
    norm_ref = np.sqrt((ref ** 2).sum(axis=1))
    shifts = np.stack(np.meshgrid(*[np.arange(-s, s + 1) for s in srch], indexing="ij"), -1).reshape(-1, d)
    ssd = np.empty((len(rows), len(shifts)))
    box = _boxes(b, origin_b, frame_shape, end, half + srch)     # every shifted patch is a slice of it
    for j, sh in enumerate(shifts):
        sl = tuple(slice(int(s + k), int(s + k + 2 * h + 1)) for k, s, h in zip(sh, srch, half))
        q = box[(slice(None),) + sl].reshape(len(rows), -1)
        q = q - q.mean(axis=1, keepdims=True)
        nq = np.sqrt((q ** 2).sum(axis=1))
        # 1 - normalised correlation: insensitive to brightness (bleaching)
        ssd[:, j] = 1.0 - (ref * q).sum(axis=1) / np.maximum(norm_ref * nq, 1e-12)
    best = ssd.argmin(axis=1)
    bshift = shifts[best]
    grid = tuple(int(2 * s + 1) for s in srch)
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


def _coarse_core(rows: np.ndarray, ca: np.ndarray, origin_ca: Sequence[int], cb: np.ndarray,
                 origin_cb: Sequence[int], coarse_shape: Sequence[int], f: np.ndarray, half: np.ndarray,
                 srch: np.ndarray) -> np.ndarray:
    """Coarse whole-voxel vectors of ``rows`` from block-averaged windows ``ca``, ``cb``."""
    rows = np.array(rows, dtype=np.float64, copy=True)
    d = len(coarse_shape)
    if len(rows) == 0:
        return rows
    coarse = rows.copy()
    coarse[:, 1:1 + d] = np.floor(np.rint(rows[:, 1:1 + d]) / f)
    coarse[:, 1 + d:1 + 2 * d] = 0.0
    out, usable = _refine_core(coarse, ca, origin_ca, cb, origin_cb, coarse_shape, half, srch, subvoxel=False)
    found = np.rint(out[:, 1 + d:1 + 2 * d]) * f
    rows[usable, 1 + d:1 + 2 * d] = found[usable]      # otherwise keep the row's own vector
    return rows


def _factors(d: int, factor: int) -> np.ndarray:
    f = np.ones(d, np.int64)
    f[-2:] = factor
    return f


def _coarse_shape(frame_shape: Sequence[int], f: np.ndarray) -> tuple[int, ...]:
    return tuple(-(-int(n) // int(k)) for n, k in zip(frame_shape, f))


def _check_pair(rows: Any, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    rows = np.array(rows, dtype=np.float64, copy=True)
    d = a.ndim
    if d not in (2, 3) or a.shape != b.shape:
        raise InputError(f"image_t and image_t1 must be 2D or 3D of one shape, got {a.shape} and {b.shape}")
    if rows.ndim != 2 or rows.shape[1] != 2 * d + 2:
        raise InputError(f"rows must have shape (n, {2 * d + 2}) for {d}D images, got {rows.shape}")
    return rows, d


# ------------------------------------------------------------ public (whole frames)
def coarse_vectors(rows: Any, image_t: Any, image_t1: Any, *, reach: Sequence[int] | int = (1, 16, 16),
                   factor: int = 4, half_window: Sequence[int] | int = (1, 3, 3)) -> np.ndarray:
    """Whole-voxel flow of each row's start voxel by a coarse correlation search.

    The images are block-averaged by ``factor`` in Y/X and each start voxel's patch
    is searched within ``reach`` voxels (full resolution) of zero motion; the
    result (a multiple of ``factor`` in Y/X) seeds :func:`refine_vectors`.

    Parameters
    ----------
    rows : (n, 2d+2) array_like
        Flow rows ``t, (z), y, x, (dz), dy, dx, cost`` (voxels).
    image_t, image_t1 : ndarray, shape (Z, Y, X) or (Y, X)
        Preprocessed intensities of frames ``t`` and ``t + 1`` (whole frames).
    reach : int or tuple of int
        Search range per axis, full-resolution voxels.
    factor : int
        Y/X block size of the coarse level.
    half_window : int or tuple of int
        Patch half size per axis, coarse voxels.

    Returns
    -------
    (n, 2d+2) float64
        The rows with the coarse displacements (a row without contrast or whose best
        shift lies on the search border keeps its vector).
    """
    a, b = np.asarray(image_t), np.asarray(image_t1)
    rows, d = _check_pair(rows, a, b)
    factor = _check_factor(factor)
    r = np.asarray(_axes("reach", reach, d))
    half = np.asarray(_axes("half_window", half_window, d))
    f = _factors(d, factor)
    srch = np.asarray([int(np.ceil(x / fx)) for x, fx in zip(r, f)])
    zero = (0,) * d
    return _coarse_core(rows, _downsample(a, factor), zero, _downsample(b, factor), zero,
                        _coarse_shape(a.shape, f), f, half, srch)


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
    a, b = np.asarray(image_t), np.asarray(image_t1)
    rows, d = _check_pair(rows, a, b)
    half = np.asarray(_axes("half_window", half_window, d))
    srch = np.asarray(_axes("search", search, d))
    zero = (0,) * d
    return _refine_core(rows, a, zero, b, zero, a.shape, half, srch)[0]


# ------------------------------------------------------------------ plan
@dataclass(frozen=True)
class RefinePlan:
    """Validated options of :func:`refine_flow` for one frame shape (all lengths in voxels).

    ``max_vector`` bounds ``|vector|`` of every input row per axis; it sets the
    halo of frame ``t + 1``. ``max_length_um`` (with ``spacing``, um per axis): a
    refined vector longer than it keeps the row's input vector.
    """

    frame_shape: tuple[int, ...]
    coarse: bool
    factor: int
    reach: tuple[int, ...]
    half_window: tuple[int, ...]
    search: tuple[int, ...]
    coarse_half_window: tuple[int, ...]
    max_vector: tuple[float, ...]
    spacing: tuple[float, ...] | None = None
    max_length_um: float | None = None
    affine: bool = False

    @property
    def ndim(self) -> int:
        return len(self.frame_shape)

    @property
    def factors(self) -> np.ndarray:
        return _factors(self.ndim, self.factor if self.coarse else 1)

    @property
    def coarse_search(self) -> tuple[int, ...]:
        return tuple(int(np.ceil(x / fx)) for x, fx in zip(self.reach, self.factors))

    def windows(self, lo: Sequence[int], hi: Sequence[int]) -> tuple[tuple, tuple]:
        """Frame boxes ``(lo, hi)`` of frames ``t`` and ``t + 1`` for rows starting in ``[lo, hi]``.

        ``lo``/``hi`` are the smallest and largest start voxel (inclusive). Each box
        holds every voxel the rows' patches read (clipped at the frame edge only)
        and, with ``coarse``, starts on a multiple of ``factor`` in Y/X and ends on
        one or at the frame end with the voxels its reflection padding reads.
        """
        f = self.factors
        vec = [int(math.ceil(v - 1e-9)) for v in self.max_vector]
        if self.coarse:
            vec = [max(v, s * int(k)) for v, s, k in zip(vec, self.coarse_search, f)]
        ra, rb = affine_reach(self.ndim) if self.affine else (np.zeros(self.ndim, np.int64),) * 2
        out = []
        for frame in (0, 1):
            blo, bhi = [], []
            for a, n in enumerate(self.frame_shape):
                k, h, s = int(f[a]), self.half_window[a], self.search[a]
                reach = h if frame == 0 else vec[a] + s + h
                if self.affine:     # the polish reads around the start (t) and the rounded end (t+1)
                    reach = max(reach, int(ra[a]) if frame == 0 else vec[a] + s + 1 + int(rb[a]))
                w0, w1 = int(lo[a]) - reach, int(hi[a]) + reach + 1
                if self.coarse:
                    hc = self.coarse_half_window[a] + (0 if frame == 0 else self.coarse_search[a])
                    w0 = min(w0, (int(lo[a]) // k - hc) * k)
                    w1 = max(w1, (int(hi[a]) // k + hc + 1) * k)
                w0, w1 = max(w0, 0), min(w1, n)
                if self.coarse and k > 1:
                    w0 = (w0 // k) * k
                    w1 = min(-(-w1 // k) * k, n)
                    p = (-n) % k
                    if w1 == n and p:                  # reflection reads voxels n-1-p .. n-2
                        w0 = min(w0, max(0, ((n - 1 - p) // k) * k))
                blo.append(w0)
                bhi.append(w1)
            out.append((tuple(blo), tuple(bhi)))
        return out[0], out[1]

    def apply(self, rows: np.ndarray, a: np.ndarray, origin_a: Sequence[int], b: np.ndarray,
              origin_b: Sequence[int]) -> np.ndarray:
        """Refine ``rows`` from windows ``a`` (frame t) and ``b`` (frame t+1) starting at the origins."""
        rows = np.asarray(rows, dtype=np.float64)
        d = self.ndim
        out = rows
        if self.coarse:
            f = self.factors
            oa = tuple(int(o) // int(k) for o, k in zip(origin_a, f))
            ob = tuple(int(o) // int(k) for o, k in zip(origin_b, f))
            out = _coarse_core(out, _downsample(a, self.factor), oa, _downsample(b, self.factor), ob,
                               _coarse_shape(self.frame_shape, f), f, np.asarray(self.coarse_half_window),
                               np.asarray(self.coarse_search))
        out = _refine_core(out, a, origin_a, b, origin_b, self.frame_shape, np.asarray(self.half_window),
                           np.asarray(self.search))[0]
        if self.affine:
            out = affine_vectors(out, a, b, offset_t=origin_a, offset_t1=origin_b, frame_shape=self.frame_shape)
        if self.max_length_um is not None and len(out):
            length = np.sqrt(((out[:, 1 + d:1 + 2 * d] * np.asarray(self.spacing)) ** 2).sum(axis=1))
            back = length > self.max_length_um
            out[back, 1 + d:1 + 2 * d] = rows[back, 1 + d:1 + 2 * d]
        return out

    def reference(self, rows: Any, image_t: Any, image_t1: Any) -> np.ndarray:
        """The same refinement on whole frames (the result every chunking must give)."""
        a, b = np.asarray(image_t), np.asarray(image_t1)
        return self.apply(np.asarray(rows, dtype=np.float64), a, (0,) * a.ndim, b, (0,) * b.ndim)


# -------------------------------------------------------------- graph tasks
def _split_rows(rows: Any, t: int, plan: RefinePlan, bounds: list, numblocks: tuple) -> list:
    """Rows of one frame pair by block of their start voxel: a list of ``(row indices, rows)``.

    Raises
    ------
    InputError
        For a row starting outside the frame or whose vector exceeds ``max_vector``.
    """
    rows = np.asarray(rows, dtype=np.float64)
    d = plan.ndim
    rows = rows.reshape(-1, 2 * d + 2)
    start = rows[:, 1:1 + d]
    vec = rows[:, 1 + d:1 + 2 * d]
    bound = np.asarray(plan.max_vector)
    bad = ~np.all(np.isfinite(vec) & (np.abs(vec) <= bound + 1e-9), axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"row {i} of frame pair t={t} has the vector {tuple(float(v) for v in vec[i])} voxels, beyond "
            f"max_vector={tuple(plan.max_vector)} voxels per axis; pass a larger max_vector "
            "(a bound on |vector| per axis of every flow row, voxels)")
    s = np.rint(start)
    out_of_frame = ~np.all(np.isfinite(s) & (s >= 0) & (s < np.asarray(plan.frame_shape)), axis=1)
    if out_of_frame.any():
        i = int(np.argmax(out_of_frame))
        raise InputError(f"row {i} of frame pair t={t} starts at {tuple(float(v) for v in start[i])}, "
                         f"outside the frame of shape {plan.frame_shape}")
    s = s.astype(np.int64)
    bidx = [np.searchsorted(bounds[a], s[:, a], side="right") - 1 for a in range(d)]
    flat = np.ravel_multi_index(tuple(bidx), numblocks) if len(rows) else np.zeros(0, np.int64)
    order = np.argsort(flat, kind="stable")
    cuts = np.searchsorted(flat[order], np.arange(int(np.prod(numblocks)) + 1))
    return [(order[cuts[k]:cuts[k + 1]], rows[order[cuts[k]:cuts[k + 1]]]) for k in range(len(cuts) - 1)]


def _pack(idx: np.ndarray, rows: np.ndarray) -> tuple:
    return idx, rows


def _refine_block(part: tuple, rega, keys_a, regb, keys_b, plan: RefinePlan) -> tuple:
    """Refine one block's rows from the windows of frames t and t+1 that they need."""
    idx, rows = part
    if len(rows) == 0:
        return idx, rows
    d = plan.ndim
    s = np.rint(rows[:, 1:1 + d]).astype(np.int64)
    (la, ha), (lb, hb) = plan.windows(s.min(axis=0), s.max(axis=0))
    wa, wb = rega.window(la, ha), regb.window(lb, hb)
    if wa.start != tuple(la) or wa.shape != tuple(h - lo for lo, h in zip(la, ha)) or \
            wb.start != tuple(lb) or wb.shape != tuple(h - lo for lo, h in zip(lb, hb)):
        raise RuntimeError("refinement window outside the block's read region")
    a = to_host(read_region(wa, keys_a))
    b = to_host(read_region(wb, keys_b))
    return idx, plan.apply(rows, a, wa.start, b, wb.start)


def _gather(parts: list, ncols: int) -> np.ndarray:
    """The rows of one frame pair back in their input order."""
    n = sum(len(p[0]) for p in parts)
    out = np.empty((n, ncols), dtype=np.float64)
    for idx, rows in parts:
        out[idx] = rows
    return out


# ------------------------------------------------------------------ public
def refine_flow(flow: FlowTable, image: Any, *, coarse: bool = True, reach: Sequence[int] | int = (1, 16, 16),
                factor: int = 4, half_window: Sequence[int] | int = (1, 3, 3),
                search: Sequence[int] | int = (1, 4, 4), max_vector: Sequence[float] | float | None = None,
                spacing: Sequence[float] | None = None, max_length_um: float | None = None,
                affine: bool = True) -> FlowTable:
    """Sub-voxel flow for every frame pair of a table, lazily and bounded per block.

    With ``coarse=True`` (default) each row's vector is first re-estimated by
    :func:`coarse_vectors` (block-averaged images, search within ``reach`` voxels of
    no motion, so a wrong partner from the matching is replaced by what the
    intensities say), then refined to sub-voxel precision by :func:`refine_vectors`
    within ``search`` voxels. A row without contrast or whose best shift lies on a
    search border keeps its previous vector. With ``affine=True`` (default) each
    vector is then polished by an affine Lucas-Kanade fit
    (:func:`dask_tracking.flow.subvoxel.affine_vectors`: rotation, shear and bending
    of the window no longer bias the translation; a fit that does not improve the
    correlation keeps the vector).

    Graph: per frame pair ``t`` and spatial block of ``image``'s chunk grid, one
    task refines the rows whose start voxel lies in the block core from the
    windows of frames ``t`` and ``t + 1`` they need (core plus a halo of
    ``half_window`` at ``t``; of ``max_vector + search + half_window`` and the coarse
    reach at ``t + 1``; clipped to the frame), reading only the chunks those
    windows touch; one task per pair restores the row order. The result equals
    the whole-frame computation bit for bit for every chunking. For a computed
    table only blocks that hold rows get a task.

    Parameters
    ----------
    flow : FlowTable
    image : dask or numpy array, shape (T, Z, Y, X) or (T, Y, X)
        The preprocessed movie (``ds.preprocessed``); its spatial chunks are the blocks
        (a numpy array is one block per frame).
    coarse : bool
        Run the coarse search first.
    reach : int or tuple of int
        Coarse search range per axis, full-resolution voxels (default about 1 um in Y/X
        at 0.0655 um, one slice in Z).
    factor : int
        Y/X block size of the coarse level.
    half_window, search : int or tuple of int
        Patch half size and search range of the fine step, voxels.
    max_vector : float or tuple of float, optional
        Bound on ``|vector|`` per axis of every input row, voxels (sets the halo of
        frame ``t + 1``). Default: for a computed table its own largest vector per
        axis; otherwise ``ceil(gate_radius_um / spacing)`` from ``flow.attrs``
        (``estimate_flow`` records the gate; no vector is longer) with ``spacing``
        given here or recorded in ``flow.attrs["spacing_um"]``. A row whose vector
        is longer raises :class:`InputError` when its pair is computed.
    spacing : tuple of float, optional
        Voxel size per spatial axis, um (for the default ``max_vector`` and for
        ``max_length_um``).
    max_length_um : float, optional
        A refined vector longer than this (um) keeps the row's input vector, so
        that the matching gate still bounds every vector.
    affine : bool
        Polish each vector by the affine fit (halo of frame ``t + 1`` grows by
        :func:`dask_tracking.flow.subvoxel.affine_reach`).

    Returns
    -------
    FlowTable
        Float displacements; ``attrs["refinement"]`` records the options.

    Raises
    ------
    InputError
        Before any work for a bad argument or a lazy table without a vector bound;
        when a pair is computed for a row beyond ``max_vector`` or outside the frame.
    """
    if not isinstance(flow, FlowTable):
        raise InputError(f"flow must be a FlowTable, got {type(flow).__name__}")
    if getattr(image, "ndim", None) != flow.ndim + 1 or image.shape[0] != flow.n_frames:
        raise InputError(f"image must have shape (T={flow.n_frames}, ...) with {flow.ndim} spatial axes, "
                         f"got {getattr(image, 'shape', None)}")
    d = flow.ndim
    reach_v, half_v, search_v = (_axes(n, v, d) for n, v in
                                 (("reach", reach), ("half_window", half_window), ("search", search)))
    factor = _check_factor(factor)
    if spacing is None and flow.attrs.get("spacing_um") is not None:
        spacing = flow.attrs["spacing_um"]
    if spacing is not None:
        sp = _numbers("spacing", spacing, d, "um per spatial axis")
        if not all(s > 0 for s in sp):
            raise InputError(f"spacing must be {d} positive numbers (um per spatial axis), got {spacing!r}")
    else:
        sp = None
    if max_length_um is not None:
        try:
            ml = float(max_length_um)
        except (TypeError, ValueError):
            ml = float("nan")
        if not (math.isfinite(ml) and ml > 0):
            raise InputError(f"max_length_um must be a positive number (um), got {max_length_um!r}")
        if sp is None:
            raise InputError("max_length_um needs the voxel size: pass spacing (um per spatial axis)")
        max_length_um = ml
    bound = _vector_bound(flow, max_vector, sp)
    if not isinstance(image, da.Array):
        arr = np.asarray(image)
        image = da.from_array(arr, chunks=(1,) + arr.shape[1:])
    plan = RefinePlan(frame_shape=tuple(int(n) for n in image.shape[1:]), coarse=bool(coarse), factor=factor,
                      reach=reach_v, half_window=half_v, search=search_v,
                      coarse_half_window=_axes("half_window", (1, 3, 3), d), max_vector=bound,
                      spacing=sp, max_length_um=max_length_um, affine=bool(affine))
    pairs = _refine_graph(flow, image, plan)
    attrs = dict(flow.attrs)
    attrs["refinement"] = {"method": "normalised correlation, coarse-to-fine, parabola sub-voxel",
                           "coarse": bool(coarse), "reach": list(reach_v), "factor": factor,
                           "half_window": list(half_v), "search": list(search_v),
                           "max_vector": list(bound), "max_length_um": max_length_um,
                           "affine": bool(affine)}
    return FlowTable(pairs, flow.ndim, flow.n_frames, attrs)


def _vector_bound(flow: FlowTable, max_vector: Any, sp: tuple[float, ...] | None) -> tuple[float, ...]:
    d = flow.ndim
    if max_vector is not None:
        return _numbers("max_vector", max_vector, d, "voxels per spatial axis")
    if not flow.is_lazy:
        rows = [np.asarray(p, dtype=np.float64).reshape(-1, 2 * d + 2) for p in flow.pairs]
        vec = [np.abs(r[:, 1 + d:1 + 2 * d]).max(axis=0) for r in rows if len(r)]
        big = np.max(vec, axis=0) if vec else np.zeros(d)
        if not np.all(np.isfinite(big)):
            raise InputError("flow has a row with a non-finite vector")
        return tuple(float(np.ceil(v)) for v in big)
    gate = flow.attrs.get("gate_radius_um")
    if gate is None or sp is None:
        raise InputError(
            "refine_flow needs a bound on the flow vectors of a lazy table (it sets the halo of frame t+1): "
            "pass max_vector (voxels per spatial axis, e.g. (4, 10, 10)), or spacing (um per spatial axis) "
            "for a table that records its matching gate in attrs['gate_radius_um'] (as estimate_flow does)")
    return tuple(float(math.ceil(float(gate) / s - 1e-9)) for s in sp)


def _refine_graph(flow: FlowTable, image: da.Array, plan: RefinePlan) -> list[Any]:
    """The lazy refined rows of every frame pair (see :func:`refine_flow`)."""
    grid = ChunkGrid(image)
    reads = ChunkReads(image)
    spatial = image.chunks[1:]
    blocks = list(iter_blocks(spatial, depth=0))
    numblocks = tuple(len(c) for c in spatial)
    bounds = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in spatial]
    d = flow.ndim
    lazy = [p for p in flow.pairs if isinstance(p, Delayed)]
    tok = tokenize(image.name, [p.key if isinstance(p, Delayed) else tokenize(np.asarray(p)) for p in flow.pairs],
                   plan)
    split_n, part_n = f"refine-split-{tok}", f"refine-part-{tok}"
    block_n, pair_n = f"refine-block-{tok}", f"refine-pair-{tok}"
    dsk: dict = {}
    windows: dict = {}                   # the same block windows for every frame pair
    regions = _Regions(grid)
    for t, p in enumerate(flow.pairs):
        if isinstance(p, Delayed):
            dsk[(split_n, t)] = (_split_rows, p.key, t, plan, bounds, numblocks)
            parts = [((part_n, t, bi), (operator.getitem, (split_n, t), bi)) for bi in range(len(blocks))]
            cores = [(tuple(s.start for s in b.core), tuple(s.stop - 1 for s in b.core)) for b in blocks]
        else:
            split = _split_rows(p, t, plan, bounds, numblocks)
            parts, cores = [], []
            for bi, (idx, rows) in enumerate(split):
                if len(idx):
                    s = np.rint(rows[:, 1:1 + d]).astype(np.int64)
                    parts.append(((part_n, t, bi), (_pack, idx, rows)))
                    cores.append((tuple(s.min(axis=0)), tuple(s.max(axis=0))))
        keys = []
        for (pkey, ptask), (lo, hi) in zip(parts, cores):
            bi = pkey[2]
            dsk[pkey] = ptask
            wins = windows.get((lo, hi))
            if wins is None:
                wins = windows[(lo, hi)] = plan.windows(lo, hi)
            (la, ha), (lb, hb) = wins
            rega, keys_a = regions.get(t, tuple(slice(a, b) for a, b in zip(la, ha)))
            regb, keys_b = regions.get(t + 1, tuple(slice(a, b) for a, b in zip(lb, hb)))
            # stored chunks are read inside the task (dask_tracking.reads): frame t+1's chunks
            # are not held from pair t's blocks until pair t+1's
            dsk[(block_n, t, bi)] = Task((block_n, t, bi), _refine_block, TaskRef(pkey), rega,
                                         reads.nodes(keys_a), regb, reads.nodes(keys_b), plan)
            keys.append((block_n, t, bi))
        dsk[(pair_n, t)] = (_gather, keys, 2 * d + 2)
    graph = HighLevelGraph.from_collections(pair_n, dsk, dependencies=[image, *lazy])
    return [Delayed((pair_n, t), graph, layer=pair_n) for t in range(len(flow.pairs))]


class _Regions:
    """``ChunkGrid.region`` with one computation per (window, frame position in its T chunk).

    A window's region is the same for every frame at the same position in its T
    chunk; only the T index of the chunk keys changes.
    """

    def __init__(self, grid: ChunkGrid):
        self.grid = grid
        self.cache: dict = {}

    def get(self, t: int, window: tuple[slice, ...]) -> tuple[Any, list]:
        b0 = self.grid.bounds[0]
        tc = int(np.searchsorted(b0, t, side="right") - 1)
        key = ((int(t - b0[tc]), int(b0[tc + 1] - b0[tc])), tuple((w.start, w.stop) for w in window))
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = self.grid.region(t, window)
            return hit
        reg, keys = hit
        return reg, [(k[0], tc) + tuple(k[2:]) for k in keys]
