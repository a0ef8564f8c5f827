"""Flow interpolation kernel: displacement at arbitrary points from one frame's flow rows.

Pure array code over a small set of *anchors* (the flow rows of one frame) and a
block of query points (spec section 2.2). Everything is vectorised over the query
points: the only Python loops run over the neighbour slots (at most ``K``, the
largest neighbour count) or over the distinct neighbour counts. The points of a
block are ordered by neighbour count (largest first), so the valid slots ``j`` of
all points are a prefix of the block: no (n, K) masks, no work on padding slots.

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

The neighbour search uses SciPy's ``cKDTree`` on the host. In the default mode one
k-nearest search bounded by the radius gives each point's neighbours and their count
(the anchors with a squared distance ``<= r**2``, as the GPU kernels count them); compat
mode runs Nellie's ball query and then its unbounded ``k = K`` query. With CuPy query points the
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
from ..blocks import rows_min
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


def _desc_prefix(k: np.ndarray, K: int) -> np.ndarray:
    """``nj[j]`` = number of rows with ``k > j`` (``k`` sorted descending), for ``j < K``.

    With rows sorted by neighbour count, the valid slots of column ``j`` are the
    rows ``[:nj[j]]``: every per-slot loop works on prefixes, without masks.
    """
    return np.searchsorted(-k, -np.arange(K), side="left")


def _count_groups(k: np.ndarray):
    """``(start, stop, k)`` of the runs of equal ``k`` (rows sorted by ``k``)."""
    cut = np.flatnonzero(k[1:] != k[:-1]) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [len(k)]])
    return zip(starts.tolist(), stops.tolist(), k[starts].tolist())


def _nellie_weights(dist: np.ndarray, idx: np.ndarray, costs: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Nellie's per-point weights, transposed: (K, n), slot ``j`` of point ``i`` at ``[j, i]``.

    ``dist``, ``idx`` : (n, K) k-nearest arrays, rows sorted by ``k`` descending,
    each row ascending in distance (cKDTree's order), first ``k_i >= 1`` slots
    valid. Slots past ``k_i`` of the result are left uninitialised (callers read
    prefixes only). Each run of equal ``k`` is computed as one dense (rows, k)
    array, so a row sum is NumPy's own sum of a length-``k_i`` row (pairwise
    summation), as in Nellie.
    """
    n, K = dist.shape
    wt = np.empty((K, n))
    for a, b, kk in _count_groups(k):
        d = dist[a:b, :kk]
        with np.errstate(divide="ignore", invalid="ignore"):
            dw = np.divide(1.0, d)
        exact = d[:, 0] == 0  # the smallest distance of each row
        if exact.any():
            dw[exact] = d[exact] == 0
        w = np.take(costs, idx[a:b, :kk])
        np.negative(w, out=w)
        w *= dw
        m = rows_min(w)  # the row minimum, a column at a time (exact in any order)
        m -= 1
        w -= m[:, None]
        w /= w.sum(axis=1)[:, None]
        wt[:kk, a:b] = w.T
    return wt


def _fixed_weights(dist: np.ndarray, idx: np.ndarray, costs: np.ndarray, k: np.ndarray,
                   nj: np.ndarray) -> np.ndarray:
    """Default weights (B17 fixed) on (n, K) arrays (rows sorted by ``k`` descending).

    Returns the weights: over its first ``k_i`` slots each row sums to 1 (added left to
    right); later slots hold garbage. A row whose cost weights all vanish falls back to
    pure inverse distance. Only a row's own slots enter its sums, so a point's weights
    never depend on the other points of the block.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        dw = np.divide(1.0, dist)
    exact = dist[:, 0] == 0  # rows are distance-sorted: any exact hit is in slot 0
    if exact.any():
        dw[exact] = dist[exact] == 0
    w = np.take(costs, idx)
    np.negative(w, out=w)
    np.maximum(w, 0.0, out=w)
    w *= dw
    s = _sequential_sum(w, nj)
    no_cost = s == 0
    if no_cost.any():
        w[no_cost] = dw[no_cost]
        s[no_cost] = _sequential_sum(dw[no_cost], _desc_prefix(k[no_cost], dw.shape[1]))
    w /= s[:, None]
    return w


def _sequential_sum(w: np.ndarray, nj: np.ndarray) -> np.ndarray:
    """Row sums of the first ``k_i`` slots added left to right (rows sorted by ``k`` descending)."""
    acc = w[:, 0].copy()
    for j in range(1, w.shape[1]):
        m = nj[j]
        acc[:m] += w[:m, j]
    return acc


def _weighted_vectors(wt: np.ndarray, it: np.ndarray, vectors: np.ndarray, nj: np.ndarray) -> np.ndarray:
    """``sum_{j < k_i} wt[j, i] * vectors[it[j, i]]`` added left to right, (n, d).

    ``wt``, ``it`` : (K, n) transposed weights and anchor indices, points sorted
    by ``k`` descending (``nj`` from :func:`_desc_prefix`): the valid slots ``j``
    are the points ``[:nj[j]]``. One axis at a time, on contiguous rows (1-D
    gathers are NumPy's fast path).
    """
    K, n = wt.shape
    vt = np.ascontiguousarray(vectors.T)
    out = np.empty((vectors.shape[1], n))
    term = np.empty(n)
    for v, acc in zip(vt, out):
        np.take(v, it[0], out=acc)
        acc *= wt[0]
        for j in range(1, K):
            m = nj[j]
            t = term[:m]
            np.take(v, it[j, :m], out=t)
            t *= wt[j, :m]
            acc[:m] += t
    return out.T


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
    gpu = _GpuSearch(anchors.points * s, coords) if (mode != "nellie" and is_cupy(coords)) else None
    if mode != "nellie" and gpu is None and counts is None:
        # one bounded k-nearest search gives both the neighbours and their count
        for rows in _row_blocks(np.flatnonzero(good), FIRST_K):
            for sub, dist, idx, kr in _within_radius(tree, q[rows], float(radius_um)):
                o = np.argsort(-kr, kind="stable")
                o = o[kr[o] > 0]
                if len(o):
                    K = int(kr[o[0]])
                    out[rows[sub[o]]] = _fixed_vectors(anchors, dist[o, :K], idx[o, :K], kr[o])
        return _like(out, coords)
    k = np.zeros(N, dtype=np.int64)
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
        for rows in _row_blocks(_by_count(np.flatnonzero(live), k), K):
            out[rows] = _nellie_block(tree, anchors, q[rows], k[rows], K)
        return _like(out, coords)

    live = np.flatnonzero(good & (k > 0))
    if len(live):
        for rows in _row_blocks(live, int(k[live].max())):
            rows = _by_count(rows, k)  # the blocks of the plain row order (their K), rows by count
            out[rows] = _fixed_block(gpu or tree, anchors, q[rows], k[rows], float(radius_um))
    return _like(out, coords)


#: Neighbour slots (rows x K) held at once by the kernel: bounds memory for any batch size.
MAX_SLOTS = 1 << 18


def _row_blocks(rows: np.ndarray, K: int):
    step = max(1, MAX_SLOTS // max(K, 1))
    for i in range(0, len(rows), step):
        yield rows[i:i + step]


def _by_count(rows: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``rows`` reordered by neighbour count ``k[rows]``, largest first (stable)."""
    return rows[np.argsort(-k[rows], kind="stable")]


def _nellie_block(tree, anchors: Anchors, q: np.ndarray, kr: np.ndarray, K: int) -> np.ndarray:
    """Compat vectors of points ``q`` sorted by neighbour count ``kr`` (descending), (n, d)."""
    n = len(q)
    dist, idx = tree.query(q, k=K, p=2)
    dist = np.asarray(dist, dtype=np.float64).reshape(n, K)
    idx = np.asarray(idx, dtype=np.intp).reshape(n, K)
    wt = _nellie_weights(dist, idx, anchors.costs, kr)
    nj = _desc_prefix(kr, K)
    acc = _weighted_vectors(wt, np.ascontiguousarray(idx.T), anchors.vectors, nj)
    if nj[-1] < n:
        # rows with k_i < K were summed over K slots, the padding ones with weight
        # +0 on anchor 0: adding 0 * vectors[0] once has the same effect (zero signs)
        with np.errstate(invalid="ignore"):
            acc[nj[-1]:] += anchors.vectors[0] * 0.0
    return acc


def _fixed_block(tree, anchors: Anchors, q: np.ndarray, kr: np.ndarray, radius_um: float) -> np.ndarray:
    """Default-mode vectors of points ``q`` sorted by neighbour count ``kr`` (descending), (n, d)."""
    n = len(q)
    K = int(kr[0])
    # the bound prunes the search; the first k_i (all within r) are found either way
    dist, idx = tree.query(q, k=K, p=2, distance_upper_bound=radius_um * (1 + 1e-9) + 1e-12)
    dist = np.asarray(dist, dtype=np.float64).reshape(n, K)
    idx = np.asarray(idx, dtype=np.int64).reshape(n, K)
    return _fixed_vectors(anchors, dist, idx, kr)


#: Neighbours asked for first by the default mode's bounded search (rows with more ask again).
FIRST_K = 16


def _within_radius(tree, q: np.ndarray, radius_um: float):
    """The anchors within ``radius_um`` of each point, from bounded k-nearest searches.

    Yields ``(rows, dist, idx, k)`` for subsets ``rows`` of the points: ``dist``, ``idx``
    (len(rows), k_ask) in cKDTree's order (ascending squared distance; missing slots
    ``inf`` and ``len(anchors)``) and ``k`` the number of anchors with squared distance
    ``<= radius_um**2`` (float64, summed axis by axis as cKDTree and the GPU kernels
    compute it), always a prefix of the row. Every point is in exactly one subset: points
    whose ``FIRST_K`` nearest are all within the radius are asked again with twice the
    ``k`` (and so on). Ties at the radius are decided on the squared distance, so the count
    is exact without a ball query. At most :data:`MAX_SLOTS` neighbour slots are held at once.
    """
    n_anchors = tree.n
    bound = radius_um * (1 + 1e-9) + 1e-12
    r2 = radius_um * radius_um
    lo, hi = radius_um * (1 - 1e-9), radius_um * (1 + 1e-9)  # sqrt's rounding is far inside these
    todo = np.arange(len(q))
    k = min(FIRST_K, n_anchors)
    while len(todo):
        again = []
        step = max(1, MAX_SLOTS // k)  # at most MAX_SLOTS neighbour slots at a time
        for i in range(0, len(todo), step):
            rows = todo[i:i + step]
            qr = q[rows]
            dist, idx = tree.query(qr, k=k, p=2, distance_upper_bound=bound)
            dist = np.asarray(dist, dtype=np.float64).reshape(len(rows), k)
            idx = np.asarray(idx, dtype=np.int64).reshape(len(rows), k)
            within = dist <= lo
            edge = np.nonzero((dist > lo) & (dist <= hi))
            if len(edge[0]):  # decide on cKDTree's squared distance (sqrt may round across r)
                c = qr[edge[0]] - tree.data[idx[edge]]
                d2 = c[:, 0] * c[:, 0]
                for a in range(1, c.shape[1]):
                    d2 = d2 + c[:, a] * c[:, a]
                within[edge] = d2 <= r2
            kr = within.sum(axis=1)
            full = kr == k if k < n_anchors else np.zeros(len(rows), dtype=bool)
            done = ~full
            yield rows[done], dist[done], idx[done], kr[done]
            again.append(rows[full])
        todo = np.concatenate(again)
        k = min(2 * k, n_anchors)


def _fixed_vectors(anchors: Anchors, dist: np.ndarray, idx: np.ndarray, kr: np.ndarray) -> np.ndarray:
    """Default-mode vectors from each point's neighbours within the radius, (n, d).

    ``dist``, ``idx`` : (n, K) k-nearest arrays whose first ``kr[i]`` slots are the
    anchors within the radius, rows sorted by ``kr`` descending (``K = kr[0]``).
    """
    n, K = dist.shape
    nj = _desc_prefix(kr, K)
    dist, idx = _canonical_order(dist, idx, kr, nj, len(anchors))
    w = _fixed_weights(dist, idx, anchors.costs, kr, nj)
    return _weighted_vectors(np.ascontiguousarray(w.T), np.ascontiguousarray(idx.T), anchors.vectors, nj)


def _canonical_order(dist: np.ndarray, idx: np.ndarray, k: np.ndarray, nj: np.ndarray,
                     n_anchors: int):
    """Neighbours of each row in (distance, anchor index) order over the first ``k_i`` slots.

    The k-nearest query returns rows sorted by distance; only runs of equal
    distance need reordering (by anchor index): one integer sort of
    ``run * n_anchors + index`` per row does it. Padding slots get index 0.
    Falls back to a full (distance, index) sort if a row is not distance-sorted.
    """
    n, K = dist.shape
    if K == 1:
        return dist, idx
    if np.any(dist[:, 1:] < dist[:, :-1]):
        return _lexsorted(dist, idx, k, n_anchors)
    run = np.zeros((n, K), dtype=np.int64)
    np.cumsum(dist[:, 1:] != dist[:, :-1], axis=1, out=run[:, 1:])
    run *= n_anchors
    key = idx + run
    big = np.iinfo(np.int64).max
    for j in range(1, K):
        key[nj[j]:, j] = big
    key.sort(axis=1)
    key -= run
    for j in range(1, K):
        key[nj[j]:, j] = 0
    return dist, key


def _lexsorted(dist: np.ndarray, idx: np.ndarray, k: np.ndarray, n_anchors: int):
    """(distance, index) sort of the first ``k_i`` slots of each row; padding index 0."""
    valid = np.arange(dist.shape[1])[None, :] < k[:, None]
    d = np.where(valid, dist, np.inf)
    i = np.where(valid, idx, n_anchors)
    o = np.lexsort((i, d), axis=1)
    d, i = np.take_along_axis(d, o, 1), np.take_along_axis(i, o, 1)
    return d, np.where(valid, i, 0)


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
