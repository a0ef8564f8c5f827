"""Flow interpolation kernel: displacement at arbitrary points from one frame's flow rows.

Pure array code over a small set of *anchors* (the flow rows of one frame) and a
block of query points (spec section 2.2). Everything is vectorised over the query
points: the only Python loops run over the neighbour slots (at most ``K``, the
largest neighbour count) or over the distinct neighbour counts.

Two modes:

``compat=None`` (default)
    Inverse-distance weights times a cost weight ``max(-cost, 0)`` (falls back to
    pure inverse distance when every neighbour has a cost >= 0); exact hits
    (distance 0) win alone. No ``-min + 1`` weight shift (spec B17), each point
    on its own (no Q-A / Q-B, spec B2 / B3). Neighbours are summed in (distance,
    anchor index) order, so the result of a point never depends on the other
    points of the batch or on the chunking.
``compat="nellie"``
    Bit-for-bit Nellie 1.0.4 ``FlowInterpolator.interpolate_coord`` on CPU:
    ``cKDTree`` on the anchors in flow-row order, the K-nearest query with the
    batch-global ``K``, weights ``w - (min(w) - 1)`` normalised with NumPy's
    summation order, and quirks Q-A (``K == 1``: only row 0 gets a vector) and
    Q-B (rows at or after index ``n_good`` get none). Pass the batch-global
    ``n_good`` and ``k_max`` (and the block's ``offset`` in the batch) so a
    chunk of the batch gives exactly the rows of the whole batch.

The neighbour search uses SciPy's ``cKDTree`` on the host. With CuPy query points the
default mode searches on the GPU (:func:`dask_tracking.backend.nearest_neighbour`,
chunked brute force: same neighbour sets and distances, so the same result) and
compat mode moves the points to the host (cKDTree's tie order is part of Nellie's
answer); the result is returned as CuPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..backend import array_module, ball_counts, is_cupy, nearest_neighbour, to_host
from ..config import resolve_compat
from ..dataset import InputError

__all__ = [
    "Anchors",
    "frame_anchors",
    "empty_anchors",
    "neighbour_counts",
    "interpolate_points",
]


@dataclass(frozen=True, eq=False)
class Anchors:
    """The flow rows of one frame, ready for interpolation (small: a few per marker).

    Parameters
    ----------
    points : ndarray, shape (A, d), float64
        Anchor positions in voxels: the start of each vector (forward) or its end
        (backward), i.e. positions at the frame being interpolated.
    vectors : ndarray, shape (A, d), float64
        Displacement ``t -> t+1`` of each row, in voxels.
    costs : ndarray, shape (A,), float64
        Match cost of each row (lower is better; unitless).
    """

    points: np.ndarray
    vectors: np.ndarray
    costs: np.ndarray
    _trees: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ndim(self) -> int:
        """Number of spatial axes, d."""
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def tree(self, spacing: Sequence[float]):
        """``cKDTree`` on ``points * spacing`` (micrometres), built once per spacing; None if empty."""
        from scipy.spatial import cKDTree

        key = tuple(float(s) for s in spacing)
        if key not in self._trees:
            self._trees[key] = (
                cKDTree(self.points * np.asarray(key, dtype=np.float64)) if len(self) else None
            )
        return self._trees[key]

    def __getstate__(self) -> dict:  # trees are rebuilt where they are used
        return {"points": self.points, "vectors": self.vectors, "costs": self.costs}

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_trees", {})


def empty_anchors(ndim: int) -> Anchors:
    """Anchors of a frame without flow rows."""
    return Anchors(np.zeros((0, ndim)), np.zeros((0, ndim)), np.zeros(0))


def frame_anchors(rows: Any, ndim: int, forward: bool) -> Anchors:
    """Anchors from the flow rows selected for one frame.

    Parameters
    ----------
    rows : ndarray, shape (n, 2d+2)
        Nellie-layout rows ``t, (z), y, x, (dz), dy, dx, cost``: for forward
        interpolation at frame t the rows of pair ``t``, for backward the rows of
        pair ``t-1``. Row order is kept (it sets Nellie's tie order).
    ndim : {2, 3}
        Number of spatial axes d.
    forward : bool
        Forward: anchors at the vector starts. Backward: at the vector ends
        (``start + vector``, positions at frame ``t``).

    Returns
    -------
    Anchors
    """
    if ndim not in (2, 3):
        raise InputError(f"ndim must be 2 or 3, got {ndim!r}")
    a = np.asarray(to_host(rows), dtype=np.float64)
    if a.size == 0:
        return empty_anchors(ndim)
    if a.ndim != 2 or a.shape[1] != 2 * ndim + 2:
        raise InputError(
            f"rows must be an (n, {2 * ndim + 2}) Nellie flow array for ndim={ndim}, got shape {a.shape}"
        )
    start = a[:, 1:1 + ndim]
    vec = a[:, 1 + ndim:1 + 2 * ndim]
    points = start if forward else start + vec
    return Anchors(np.ascontiguousarray(points), np.ascontiguousarray(vec), np.ascontiguousarray(a[:, -1]))


def _query_points(coords: Any, ndim: int) -> np.ndarray:
    c = np.asarray(to_host(coords))
    if c.ndim != 2 or c.shape[1] != ndim:
        raise InputError(f"coords must be an (N, {ndim}) array of voxel positions, got shape {c.shape}")
    return c.astype(np.float64, copy=False)


def _spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if s.shape != (ndim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing must be {ndim} positive voxel sizes in um, got {spacing!r}")
    return s


def neighbour_counts(anchors: Anchors, coords: Any, spacing: Sequence[float], radius_um: float) -> np.ndarray:
    """Number of anchors within ``radius_um`` of each point (``<=``, Nellie's ball query).

    Parameters
    ----------
    anchors : Anchors
    coords : array, shape (N, d)
        Query points in voxels; rows whose first coordinate is NaN count 0.
    spacing : sequence of float, length d
        Voxel size in um.
    radius_um : float
        Ball radius in um.

    Returns
    -------
    ndarray, shape (N,), int64
    """
    c = _query_points(coords, anchors.ndim)
    s = _spacing(spacing, anchors.ndim)
    out = np.zeros(len(c), dtype=np.int64)
    tree = anchors.tree(s)
    if tree is None or len(c) == 0:
        return out
    q = c * s
    good = ~np.isnan(q[:, 0])
    if good.any():
        out[good] = tree.query_ball_point(q[good], float(radius_um), p=2, return_length=True)
    return out


def _nellie_weights(dist: np.ndarray, cost: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Nellie's per-point weights on padded (n, K) neighbour arrays (first ``k_i`` valid).

    ``dist`` rows are sorted ascending (cKDTree's k-nearest order) and every ``k_i >= 1``.
    ``cost`` is overwritten (it becomes the weights). Padding slots are 0.
    """
    n, K = dist.shape
    invalid = np.arange(K)[None, :] >= k[:, None]
    exact = dist[:, 0] == 0  # the smallest distance of each row
    with np.errstate(divide="ignore", invalid="ignore"):
        dw = np.divide(1.0, dist)
    if exact.any():
        dw[exact] = (dist[exact] == 0) * 1.0
    w = np.negative(cost, out=cost)
    w *= dw
    w[invalid] = np.inf
    m = w.min(axis=1)
    m -= 1
    w -= m[:, None]
    w[invalid] = 0.0
    # NumPy's sum of a length-k row (pairwise order): sum rows of equal k together.
    s = np.empty(n)
    ks = np.unique(k)
    if len(ks) == 1:
        kk = int(ks[0])
        s[:] = (w if kk == K else np.ascontiguousarray(w[:, :kk])).sum(axis=1)
    else:
        for kk in ks:
            sel = np.flatnonzero(k == kk)
            s[sel] = np.ascontiguousarray(w[sel, :kk]).sum(axis=1)
    w /= s[:, None]
    return w


def _fixed_weights(dist: np.ndarray, cost: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Default weights (B17 fixed) on padded (n, K) arrays; rows sum to 1."""
    exact = valid & (dist == 0)
    has_exact = exact.any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dw = np.where(has_exact[:, None], exact * 1.0, np.where(valid, 1 / dist, 0.0))
    dw = np.where(valid, dw, 0.0)
    w = np.maximum(-cost, 0.0) * dw
    s = _sequential_sum(w)
    no_cost = s == 0
    if no_cost.any():
        w[no_cost] = dw[no_cost]
        s[no_cost] = _sequential_sum(dw[no_cost])
    return w / s[:, None]


def _sequential_sum(w: np.ndarray) -> np.ndarray:
    """Row sums added left to right (trailing zero padding does not change them)."""
    acc = w[:, 0].copy()
    for j in range(1, w.shape[1]):
        acc += w[:, j]
    return acc


def _weighted_vectors(w: np.ndarray, idx: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``sum_j w[:, j] * vectors[idx[:, j]]`` added left to right, (n, d)."""
    wt = np.ascontiguousarray(w.T)
    it = np.ascontiguousarray(idx.T)
    acc = vectors[it[0]]
    acc *= wt[0][:, None]
    term = np.empty_like(acc)
    for j in range(1, w.shape[1]):
        np.take(vectors, it[j], axis=0, out=term)
        term *= wt[j][:, None]
        acc += term
    return acc


def interpolate_points(
    anchors: Anchors,
    coords: Any,
    spacing: Sequence[float],
    radius_um: float,
    *,
    compat: Any = None,
    n_good: int | None = None,
    k_max: int | None = None,
    offset: int = 0,
    counts: np.ndarray | None = None,
) -> Any:
    """Interpolated displacement (voxels per frame) at each query point.

    Parameters
    ----------
    anchors : Anchors
        The frame's flow rows (see :func:`frame_anchors`).
    coords : array, shape (N, d)
        Query points in voxels (NaN rows allowed: they get NaN).
    spacing : sequence of float, length d
        Voxel size in um.
    radius_um : float
        Interpolation radius ``r`` in um (anchors with distance ``<= r`` count).
    compat : None or "nellie"
        See the module docstring.
    n_good : int, optional
        Compat only: number of non-NaN rows in the whole batch this block belongs
        to (default: this block's count). Rows whose batch index is ``>= n_good``
        get NaN (quirk Q-B).
    k_max : int, optional
        Compat only: the batch-global largest neighbour count ``K`` (default: this
        block's). ``K == 1`` leaves only batch row 0 with a vector (quirk Q-A); it
        is also the ``k`` of the K-nearest query, which sets tie order.
    offset : int
        Compat only: batch index of ``coords[0]``.
    counts : ndarray, shape (N,), int64, optional
        :func:`neighbour_counts` of these points (same anchors, spacing and radius),
        when the caller already has them: the ball query is then not repeated.

    Returns
    -------
    ndarray, shape (N, d), float64
        Displacement in voxels (``t -> t+1``; backward callers subtract it); NaN
        where a point has no anchor within ``r``. Where Nellie would return an
        empty (0, d) array (no good row in the batch, or ``K == 0``) this returns
        all NaN rows; the Nellie facade turns that into the empty array.
    """
    mode = resolve_compat(compat)
    d = anchors.ndim
    c = _query_points(coords, d)
    s = _spacing(spacing, d)
    N = len(c)
    out = np.full((N, d), np.nan)
    if N == 0 or len(anchors) == 0:
        return _like(out, coords)
    tree = anchors.tree(s)
    q = c * s
    good = ~np.isnan(q[:, 0])
    k = np.zeros(N, dtype=np.int64)
    gpu = _GpuSearch(anchors.points * s, coords) if (mode != "nellie" and is_cupy(coords)) else None
    if counts is not None:
        k[good] = np.asarray(counts, dtype=np.int64).reshape(N)[good]
    elif good.any():
        k[good] = (gpu.counts(q[good], float(radius_um)) if gpu is not None else
                   tree.query_ball_point(q[good], float(radius_um), p=2, return_length=True))

    if mode == "nellie":
        n_good_ = int(good.sum()) if n_good is None else int(n_good)
        K = int(k.max()) if k_max is None else int(k_max)
        if K <= 0 or n_good_ <= 0:
            return _like(out, coords)
        live = good & (k > 0) & (np.arange(offset, offset + N) < n_good_)  # Q-B
        if K == 1:  # Q-A: only batch row 0 can get a vector
            live &= np.arange(offset, offset + N) == 0
        for rows in _row_blocks(np.flatnonzero(live), K):
            out[rows] = _nellie_block(tree, anchors, q[rows], k[rows], K)
        return _like(out, coords)

    live = np.flatnonzero(good & (k > 0))
    if len(live):
        for rows in _row_blocks(live, int(k[live].max())):
            out[rows] = _fixed_block(gpu or tree, anchors, q[rows], k[rows], float(radius_um))
    return _like(out, coords)


#: Neighbour slots (rows x K) held at once by the kernel: bounds memory for any batch size.
MAX_SLOTS = 1 << 18


def _row_blocks(rows: np.ndarray, K: int):
    step = max(1, MAX_SLOTS // max(K, 1))
    for i in range(0, len(rows), step):
        yield rows[i:i + step]


def _nellie_block(tree, anchors: Anchors, q: np.ndarray, kr: np.ndarray, K: int) -> np.ndarray:
    dist, idx = tree.query(q, k=K, p=2)
    dist = np.asarray(dist, dtype=np.float64).reshape(len(q), K)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(q), K)
    invalid = np.arange(K)[None, :] >= kr[:, None]
    idx[invalid] = 0
    w = _nellie_weights(dist, anchors.costs[idx], kr)
    w[invalid] = 0.0
    return _weighted_vectors(w, idx, anchors.vectors)


def _fixed_block(tree, anchors: Anchors, q: np.ndarray, kr: np.ndarray, radius_um: float) -> np.ndarray:
    K = int(kr.max())
    # the bound prunes the search; the first k_i (all within r) are found either way
    dist, idx = tree.query(q, k=K, p=2, distance_upper_bound=radius_um * (1 + 1e-9) + 1e-12)
    dist = np.asarray(dist, dtype=np.float64).reshape(len(q), K)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(q), K)
    valid = np.arange(K)[None, :] < kr[:, None]
    # canonical neighbour order (distance, then anchor index): independent of K and of the batch
    dist = np.where(valid, dist, np.inf)
    idx = np.where(valid, idx, len(anchors))
    o = np.argsort(idx, axis=1, kind="stable")
    dist, idx = np.take_along_axis(dist, o, 1), np.take_along_axis(idx, o, 1)
    o = np.argsort(dist, axis=1, kind="stable")
    dist, idx = np.take_along_axis(dist, o, 1), np.take_along_axis(idx, o, 1)
    idx = np.where(valid, idx, 0)
    w = _fixed_weights(dist, anchors.costs[idx], valid)
    return _weighted_vectors(w, idx, anchors.vectors)


class _GpuSearch:
    """Default-mode neighbour search on the GPU (CuPy query points): the ball counts and the
    bounded k-nearest query of cKDTree, by :func:`dask_tracking.backend.nearest_neighbour`.
    The within-``r`` sets and the distances equal cKDTree's, so the result is the host's."""

    def __init__(self, points_um: np.ndarray, like: Any):
        self.xp = array_module(like)
        self.points = self.xp.asarray(points_um, dtype=np.float64)

    def counts(self, q: np.ndarray, radius_um: float) -> np.ndarray:
        return to_host(ball_counts(self.points, self.xp.asarray(q), radius_um))

    def query(self, q: np.ndarray, k: int, p: int = 2, distance_upper_bound: float = np.inf):
        dist, idx = nearest_neighbour(self.points, self.xp.asarray(q), int(k),
                                      distance_upper_bound=distance_upper_bound)
        return to_host(dist), to_host(idx)


def _like(out: np.ndarray, coords: Any) -> Any:
    if is_cupy(coords):
        return array_module(coords).asarray(out)
    return out
