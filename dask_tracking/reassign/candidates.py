"""Candidate voxel matches of one frame pair inside one spatial block (spec 4.3).

A candidate is (source voxel at t, target voxel at t+1, prediction error in um).
Forward candidates predict where a source voxel goes with the flow interpolated at
frame t; backward candidates predict where a target voxel came from with the flow
interpolated at frame t+1. Both keep a pair only if the predicted position's
nearest labelled voxel lies within the radius. A block owns the candidates whose
*target* lies in its core, so blocks partition the candidates of a pair.

Coordinates are global voxel indices (int64), in raster order within each list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..blocks import in_box, rows_max, rows_min

__all__ = ["Candidates", "FrameIndex", "block_candidates", "forward_predictions", "frame_index", "frame_index_from_keys", "nearest_voxel",
           "scaled", "voxels_of"]


@dataclass(frozen=True)
class Candidates:
    """Candidates of one (pair, block): forward ones first, then backward ones.

    Attributes
    ----------
    source, target : (n, d) int64 (int32 after :meth:`compact`)
        Voxel at frame t and voxel at frame t+1.
    error : (n,) float64 (float32 after :meth:`compact`)
        Prediction error in um (a float32 value, as Nellie computes it).
    """

    source: np.ndarray
    target: np.ndarray
    error: np.ndarray

    def __len__(self) -> int:
        return int(len(self.error))

    def compact(self) -> "Candidates":
        """The same candidates in half the memory: int32 voxels (frames below 2**31 voxels per
        axis), float32 errors (the errors are float32 values, so nothing is lost)."""
        return Candidates(self.source.astype(np.int32), self.target.astype(np.int32),
                          self.error.astype(np.float32))

    @classmethod
    def empty(cls, ndim: int) -> "Candidates":
        z = np.zeros((0, ndim), dtype=np.int64)
        return cls(z, z.copy(), np.zeros(0, dtype=np.float64))


@dataclass(frozen=True)
class FrameIndex:
    """All labelled voxels of one frame and their KD-tree (``compat="nellie"`` only).

    Nellie's nearest-voxel search uses ``cKDTree(all voxels of the frame)``, whose
    choice between equidistant voxels depends on the whole point set; the
    interpolation quirk Q-A depends on the largest neighbour count over the whole
    frame. Both are reproduced from this per-frame index. It is kept small (about
    40 bytes per labelled voxel, most of it the tree): the voxels are stored as
    their raster index only, the counts in the smallest integer type that holds them.

    Attributes
    ----------
    tree : cKDTree or None
        On ``float32(coords) * spacing`` (um), voxels in raster order; None when empty.
    k_forward : int
        Largest number of forward anchors (rows of pair t) within the radius of a voxel.
    k_backward : int
        Same for the backward anchors (end points of the rows of pair t-1).
    keys : (N,) int32 or int64
        Raster index of each labelled voxel (objects or branches) in the frame, ascending.
    counts_forward, counts_backward : (N,) unsigned int, optional
        Per voxel, the neighbour counts behind ``k_forward`` / ``k_backward`` (reused by
        the blocks instead of a second ball query).
    shape : tuple of int
        The frame's spatial shape (of ``keys``).
    """

    tree: Any
    k_forward: int
    k_backward: int
    keys: np.ndarray
    counts_forward: np.ndarray | None
    counts_backward: np.ndarray | None
    shape: tuple

    def __len__(self) -> int:
        return int(len(self.keys))

    def voxels(self, j: Any) -> np.ndarray:
        """Frame coordinates of the voxels at tree indices ``j``, (n, d) int64."""
        f = np.asarray(self.keys[np.asarray(j, dtype=np.int64).reshape(-1)], dtype=np.int64)
        return np.stack(np.unravel_index(f, self.shape), axis=1).astype(np.int64) if len(f) \
            else np.zeros((0, len(self.shape)), dtype=np.int64)

    @property
    def coords(self) -> np.ndarray:
        """All labelled voxels, (N, d) int64 in raster order (made on demand)."""
        return self.voxels(np.arange(len(self)))

    @property
    def first(self) -> np.ndarray | None:
        """The frame's first labelled voxel in raster order (Q-A), (d,) int64; None if none."""
        return self.voxels([0])[0] if len(self) else None

    def counts_of(self, coords: np.ndarray, forward: bool) -> np.ndarray | None:
        """The stored neighbour counts of these voxels of the frame (None if not all are known)."""
        counts = self.counts_forward if forward else self.counts_backward
        if counts is None or len(coords) == 0 or len(self.keys) == 0:
            return None
        c = np.asarray(coords, dtype=np.int64).reshape(-1, len(self.shape))
        if np.any(c < 0) or np.any(c >= np.asarray(self.shape)):
            return None
        r = np.ravel_multi_index(tuple(c.T), self.shape)
        pos = np.minimum(np.searchsorted(self.keys, r), len(self.keys) - 1)
        if not np.array_equal(self.keys[pos], r):
            return None
        return counts[pos].astype(np.int64)


def voxels_of(mask: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """Global coordinates of the True voxels of a block, raster order, (n, d) int64."""
    v = np.argwhere(np.asarray(mask))
    if len(v):
        v += np.asarray(offset, dtype=np.int64)
    return v.astype(np.int64, copy=False)


def scaled(coords: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``float32(coords) * spacing`` in float64, as Nellie scales points for its trees."""
    return np.asarray(coords, dtype=np.float32) * np.asarray(spacing, dtype=np.float64)


#: Voxels per step when the frame index scales coordinates or counts neighbours (bounds its scratch memory).
INDEX_STEP = 1 << 16


def _small_uint(a: np.ndarray) -> np.ndarray:
    m = int(a.max()) if len(a) else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if m <= np.iinfo(dt).max:
            return a.astype(dt)
    return a.astype(np.int64)


def _unravel(keys: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    return np.stack(np.unravel_index(np.asarray(keys, dtype=np.int64), tuple(shape)), axis=1)


def _counts(anchors: Any, keys: np.ndarray, shape, spacing, radius_um: float) -> tuple[int, np.ndarray | None]:
    if anchors is None or len(keys) == 0:
        return 0, None
    from ..interpolate.kernel import neighbour_counts

    parts = [_small_uint(neighbour_counts(anchors, _unravel(keys[i:i + INDEX_STEP], shape).astype(np.float64),
                                          spacing, radius_um))
             for i in range(0, len(keys), INDEX_STEP)]
    c = np.concatenate(parts)
    return (int(np.max(c)) if len(c) else 0), _small_uint(c)


def frame_index_from_keys(keys: np.ndarray, spatial_shape: Sequence[int], spacing: Sequence[float],
                          radius_um: float, anchors_forward: Any, anchors_backward: Any) -> FrameIndex:
    """Build a :class:`FrameIndex` from the raster indexes of a frame's labelled voxels (any order)."""
    shape = tuple(int(n) for n in spatial_shape)
    nd = len(shape)
    keys = np.sort(np.asarray(keys, dtype=np.int64).reshape(-1))
    if int(np.prod(shape, dtype=np.int64)) < 2 ** 31:
        keys = keys.astype(np.int32)
    tree = None
    if len(keys):
        sp = np.asarray(spacing, dtype=np.float64)
        data = np.empty((len(keys), nd), dtype=np.float64)
        for i in range(0, len(keys), INDEX_STEP):  # float32(coords) * spacing, as :func:`scaled`
            data[i:i + INDEX_STEP] = _unravel(keys[i:i + INDEX_STEP], shape).astype(np.float32) * sp
        tree = cKDTree(data)
    k_fw, c_fw = _counts(anchors_forward, keys, shape, spacing, radius_um)
    k_bw, c_bw = _counts(anchors_backward, keys, shape, spacing, radius_um)
    return FrameIndex(tree, k_fw, k_bw, keys, c_fw, c_bw, shape)


def frame_index(pieces: Sequence[np.ndarray], spatial_shape: Sequence[int], spacing: Sequence[float],
                radius_um: float, anchors_forward: Any, anchors_backward: Any) -> FrameIndex:
    """Build a :class:`FrameIndex` from the voxel lists ((n, d) frame coordinates) of the blocks of one frame."""
    nd = len(spatial_shape)
    keys = [np.ravel_multi_index(tuple(np.asarray(p, dtype=np.int64).reshape(-1, nd).T), tuple(spatial_shape))
            for p in pieces]
    keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    return frame_index_from_keys(keys, spatial_shape, spacing, radius_um, anchors_forward, anchors_backward)


#: Unit roundoff of float64 (``2**-53``): the error bound of one correctly rounded operation.
_U64 = float(np.finfo(np.float64).eps) / 2


def _lattice_rows(q: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Queries whose nearest lattice point is nearer than any other by more than rounding can blur.

    The trees compare squared distances between ``scaled`` positions: per axis
    ``c_i = fl(q_i s_i) - fl(p_i s_i)``, summed as ``c_i**2`` in float64. With ``v = rint(q)``,
    ``f = q - v`` and a lattice point ``w = v + e`` (``e`` integer, not 0), the exact gap is
    ``sum_i s_i**2 (e_i**2 - 2 f_i e_i) >= min_i s_i**2 (1 - 2|f_i|) =: margin``, so ``v`` is
    the unique nearest lattice point when ``margin > 0``. Rounding: with ``L = max_i |q_i|``
    and ``u = 2**-53`` each ``c_i`` is off by at most ``2u (L + |e_i| + 1) s_i``, so the squared
    distance of ``v`` is off by less than ``d * 2u (L + 1) * max s**2`` and that of ``w`` by
    ``d * 6u (L + 2) * max s**2`` on its axes with ``|e_i| <= 1`` (an axis with ``|e_i| >= 2``
    adds ``s_i**2 |e_i| (|e_i| - 1)`` to the gap, far more than its own error while
    ``u L << 1``); the kd-tree's pruning bounds (rectangle distances updated along a path of
    at most ~64 levels, each term below the distance of ``v`` plus its rounding) add less than
    ``64 d u * max s**2`` more. So ``margin > 64 d u (L + 64) max s**2`` (four times the sum
    of these bounds) makes every float64 nearest search pick ``v`` over any other voxel, on
    any tie rule. In ``delta`` terms (``|f_i| <= 0.5 - delta``) that is
    ``delta > 32 d u (max s / min s)**2 (L + 64)``: for the yeast spacing (0.25, 0.0655,
    0.0655) um ``1.6e-13 (L + 64)``, 1.6e-7 at 2**20 voxels, some 10**5 times below the
    float32 resolution at ``L`` (``L * 2**-24`` or more), so in practice only exact half-way
    ties (``|f_i| = 0.5``) fail the test. Queries beyond 2**23 voxels are left to the tree
    (float32, in which the trees store the voxels, is no longer exact there).

    Parameters
    ----------
    q : (m, d) float64
        Queries as the trees see them: float32 values, voxels.
    spacing : sequence of float, length d
        Voxel size, um.

    Returns
    -------
    rows : (k,) int64
        The queries that pass the test (finite, with a decisive nearest lattice point).
    v : (k, d) int64
        Their nearest lattice points, voxels.
    """
    m, d = q.shape
    s2 = np.asarray(spacing, dtype=np.float64) ** 2
    with np.errstate(invalid="ignore", over="ignore"):
        v = np.rint(q)
        margin = rows_min(s2 * (1.0 - 2.0 * np.abs(q - v)))  # NaN for a non-finite query
        size = rows_max(np.abs(q))
        bound = (64.0 * d * _U64 * float(s2.max())) * (size + 64.0)
        # below 2**23 the voxels near v are exact in float32, as the trees store them
        rows = np.flatnonzero((margin > bound) & (size < 2.0 ** 23))
    return rows, v[rows].astype(np.int64)


def _find_keys(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``wanted`` in the ascending ``keys`` (the first of equal keys).

    Returns ``(hit, pos)``: the indexes into ``wanted`` that are present and their positions.
    """
    if len(keys) == 0 or len(wanted) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    wanted = wanted.astype(keys.dtype, copy=False)  # callers keep wanted within the dtype
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hit = np.flatnonzero(keys[pos] == wanted)
    return hit, pos[hit].astype(np.int64)


def _lattice_hits(q: np.ndarray, spacing: Sequence[float], keys: np.ndarray, origin: np.ndarray,
                  shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries whose nearest lattice point is decisively nearest and is one of the voxels.

    Parameters
    ----------
    q : (m, d) float64
        Queries (float32 values), voxels.
    keys : (N,) int
        Ascending raster indexes of the voxels, in the box ``[origin, origin + shape)``.
    origin : (d,) int64
    shape : tuple of int

    Returns
    -------
    rows : (k,) int64
        Queries answered here.
    pos : (k,) int64
        Position in ``keys`` of the nearest voxel of each (the first of equal keys).
    v : (k, d) int64
        That voxel, voxels.
    """
    rows, v = _lattice_rows(q, spacing)
    local = v - origin
    inside = np.flatnonzero(in_box(local, 0, np.asarray(shape, dtype=np.int64)))
    if len(inside) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, q.shape[1]), np.int64)
    r = np.ravel_multi_index(tuple(local[inside].T), tuple(int(n) for n in shape))
    hit, pos = _find_keys(keys, r)
    sel = inside[hit]
    return rows[sel], pos, v[sel]


def _tree_distance(q: np.ndarray, v: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``||scaled(q) - scaled(v)||`` in um, (m,) float64, summed axis by axis as cKDTree does."""
    c = scaled(q, spacing) - scaled(v, spacing)
    acc = c[:, 0] * c[:, 0]
    for i in range(1, c.shape[1]):
        acc = acc + c[:, i] * c[:, i]
    return np.sqrt(acc)


def _raster_keys(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple] | None:
    """Ascending raster keys of ``points`` in their bounding box, with the order that sorts them.

    Returns ``(keys, order, origin, shape)`` (``order`` None when ``points`` are already in
    raster order) or None when the box is too large for int64 keys.
    """
    origin = points.min(axis=0)
    shape = tuple(int(n) for n in points.max(axis=0) - origin + 1)
    if int(np.prod([float(n) for n in shape])) >= 2 ** 62:
        return None
    keys = np.ravel_multi_index(tuple((points - origin).T), shape)
    order = None
    if len(keys) > 1 and np.any(keys[1:] < keys[:-1]):
        order = np.argsort(keys, kind="stable")  # equal keys keep the lowest index first
        keys = keys[order]
    return keys, order, origin, shape


def nearest_voxel(points: np.ndarray, queries: np.ndarray, spacing: Sequence[float],
                  tree: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest of ``points`` to each query, the lowest index among equidistant ones.

    A query whose nearest lattice point is one of ``points`` and is nearer than any
    other lattice point by more than float64 rounding can blur (:func:`_lattice_rows`;
    in practice every query that is not half-way between voxels along some axis) is
    answered by a lookup of that point's raster key; only the other queries go to a
    cKDTree (built only then, unless given), with the same result bit for bit.

    Parameters
    ----------
    points : (n, d) int64
        Candidate voxels in raster order (the lowest index is the first in raster order).
    queries : (m, d) float64
        Predicted positions, voxels.
    tree : cKDTree, optional
        Prebuilt on ``scaled(points, spacing)``.

    Returns
    -------
    index : (m,) int64
        Into ``points``; ``-1`` where ``points`` is empty.
    distance : (m,) float64
        In um between the float32-scaled points (for the looked-up rows computed with the
        same float operations, in the same order, as cKDTree's; equal in the tests).
    """
    m = len(queries)
    if len(points) == 0 or m == 0:
        return np.full(m, -1, dtype=np.int64), np.full(m, np.inf)
    points = np.asarray(points, dtype=np.int64)
    q = np.asarray(queries, dtype=np.float32).astype(np.float64).reshape(m, len(spacing))
    index = np.full(m, -1, dtype=np.int64)
    dist = np.full(m, np.inf)
    rest = np.ones(m, dtype=bool)
    lookup = _raster_keys(points)
    if lookup is not None:
        keys, order, origin, shape = lookup
        rows, pos, v = _lattice_hits(q, spacing, keys, origin, shape)
        index[rows] = pos if order is None else order[pos]
        dist[rows] = _tree_distance(q[rows], v, spacing)
        rest[rows] = False
    rest = np.flatnonzero(rest)
    if len(rest) == 0:
        return index, dist
    if tree is None:
        # the answer does not depend on the tree's shape (ties are settled by index below):
        # the unbalanced, uncompacted build is about twice as fast
        tree = cKDTree(scaled(points, spacing), balanced_tree=False, compact_nodes=False)
    sq = scaled(q[rest], spacing)
    # the two nearest first: a query whose second is farther has no tie; only the others
    # (rare: equidistant voxels) need all 2**d voxels that can be equally near
    dk, ik = tree.query(sq, k=[1, 2]) if len(points) > 1 else tree.query(sq, k=[1])
    index[rest] = ik[:, 0]
    dist[rest] = dk[:, 0]
    k = min(2 ** points.shape[1], len(points))
    tied = np.flatnonzero(dk[:, -1] == dk[:, 0]) if k > 1 else np.zeros(0, np.int64)
    if len(tied):
        dk, ik = tree.query(sq[tied], k=list(range(1, k + 1)))
        ik = np.where(dk == dk[:, :1], ik, np.iinfo(np.int64).max)
        index[rest[tied]] = ik.min(axis=1)
    return index, dist


def _interpolate(anchors: Any, coords: np.ndarray, spacing, radius_um: float, compat: str | None,
                 k_global: int | None, first: np.ndarray | None, counts: np.ndarray | None = None) -> np.ndarray:
    """Interpolated displacement (n, d) at ``coords``, NaN where none (the kernel's rules).

    In ``compat="nellie"`` the quirk Q-A of the whole-frame batch is applied: with a
    global largest neighbour count of 1 only the frame's first voxel (``first``)
    gets a vector; with 0 no voxel does.
    """
    from ..interpolate.kernel import interpolate_points

    n, d = coords.shape
    out = np.full((n, d), np.nan)
    if anchors is None or n == 0:
        return out
    q = coords.astype(np.float64)
    if compat != "nellie":
        return np.asarray(interpolate_points(anchors, q, spacing, radius_um), dtype=np.float64)
    if not k_global:
        return out
    if k_global == 1:
        hit = np.flatnonzero((coords == first).all(axis=1)) if first is not None else []
        if len(hit):
            v = interpolate_points(anchors, q[hit[:1]], spacing, radius_um, compat="nellie",
                                   n_good=1, k_max=1)
            v = np.asarray(v, dtype=np.float64).reshape(-1, d)
            if len(v):
                out[hit[0]] = v[0]
        return out
    v = interpolate_points(anchors, q, spacing, radius_um, compat="nellie", n_good=n, k_max=k_global,
                           counts=counts)
    v = np.asarray(v, dtype=np.float64)
    return v.reshape(n, d) if v.size == n * d else out


def _error(pred: np.ndarray, match: np.ndarray, spacing) -> np.ndarray:
    """Prediction error in um: float32 of ``||float32(pred - match) * spacing||``."""
    diff = (pred - match).astype(np.float32) * np.asarray(spacing, dtype=np.float64)
    return np.linalg.norm(diff, axis=1).astype(np.float32)


def forward_predictions(sources: np.ndarray, anchors_forward: Any, spacing: Sequence[float],
                        radius_um: float, *, compat: str | None = None,
                        index_prev: FrameIndex | None = None,
                        index_next: FrameIndex | None = None) -> tuple[np.ndarray, ...]:
    """Where the flow moves the labelled voxels of one block of frame t.

    Parameters
    ----------
    sources : (n, d) int64
        Labelled voxels of frame t in one block's core, raster order.
    anchors_forward : Anchors or None
        Start points of the rows of pair (t, t+1).
    index_prev : FrameIndex, optional
        Whole-frame index of frame t (``compat="nellie"``: the batch's ``K``).
    index_next : FrameIndex, optional
        ``compat="nellie"``: whole-frame index of frame t+1. The nearest voxel of each
        prediction is then looked up here, once, instead of in every block whose core
        it lands near (:func:`block_candidates` takes either form).

    Returns
    -------
    source : (m, d) int64
        The voxels that received a vector, raster order.
    predicted : (m, d) float64
        ``source + vector``, voxels at frame t+1.
    match : (m, d) int64, with ``index_next`` only
        The labelled voxel of frame t+1 nearest to each prediction (Nellie's tie rule).
    error : (m,) float64, with ``index_next`` only
        ``||predicted - match||`` in um (a float32 value, as Nellie computes it).
    """
    nd = len(spacing)
    sources = np.asarray(sources, dtype=np.int64).reshape(-1, nd)
    nellie = compat == "nellie"
    if len(sources) == 0:
        return sources, np.zeros((0, nd))
    first = index_prev.first if nellie else None
    v = _interpolate(anchors_forward, sources, spacing, radius_um, compat,
                     index_prev.k_forward if nellie else None, first,
                     index_prev.counts_of(sources, True) if nellie else None)
    ok = ~np.isnan(v).any(axis=1)
    src, pred = sources[ok], sources[ok] + v[ok]
    if not nellie or index_next is None:
        return src, pred
    if len(pred) == 0 or index_next.tree is None:  # no voxel at t+1: no forward candidate anywhere
        return src[:0], pred[:0], np.zeros((0, nd), np.int64), np.zeros(0, np.float64)
    match = _nearest_match(pred, index_next, None, spacing)
    return src, pred, match, _error(pred, match, spacing).astype(np.float64)


def block_candidates(forward: Sequence[tuple[np.ndarray, np.ndarray]], prev_points: np.ndarray,
                     targets: np.ndarray, core: Sequence[slice], anchors_backward: Any,
                     spacing: Sequence[float], radius_um: float, *, compat: str | None = None,
                     index_prev: FrameIndex | None = None,
                     index_next: FrameIndex | None = None) -> Candidates:
    """Candidates of one frame pair whose target lies in ``core`` (spec 4.3).

    Parameters
    ----------
    forward : list of (source, predicted) or (source, predicted, match, error)
        :func:`forward_predictions` of the frame-t blocks that overlap the core
        plus the source halo (the only ones whose predictions can land in the core);
        with their matches (``compat="nellie"``) the nearest-voxel search is not redone.
    prev_points : (n, d) int64
        Labelled voxels of frame t in the core plus the source halo, raster order
        (the nearest-voxel candidates of backward predictions; unused with
        ``compat="nellie"``).
    targets : (m, d) int64
        Labelled voxels of frame t+1 in the core plus the target halo, raster order.
    core : tuple of slice
        The block's core in frame coordinates.
    anchors_backward : Anchors or None
        End points of the rows of pair (t, t+1).
    spacing : sequence of float
        Voxel size, um.
    radius_um : float
        Interpolation radius and error gate, um.
    compat : {None, "nellie"}
    index_prev, index_next : FrameIndex, optional
        Whole-frame indexes of t and t+1 (required with ``compat="nellie"``): the
        nearest voxel is searched in the whole frame with cKDTree's own tie rule.
        Without them, the nearest voxel among the halo's voxels is taken, the
        lowest raster index among equidistant ones (the same for any chunking).

    Returns
    -------
    Candidates
        Forward candidates in source raster order, then backward candidates in
        target raster order (Nellie's order restricted to this block's targets).
    """
    nd = len(spacing)
    lo = np.array([s.start for s in core], dtype=np.int64)
    hi = np.array([s.stop for s in core], dtype=np.int64)
    sp = np.asarray(spacing, dtype=np.float64)
    prev_points = np.asarray(prev_points, dtype=np.int64).reshape(-1, nd)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1, nd)
    core_targets = targets[in_box(targets, lo, hi)] if len(targets) else targets
    nellie = compat == "nellie"
    if nellie and (index_prev is None or index_next is None):
        raise ValueError("compat='nellie' needs the whole-frame indexes of both frames")
    parts = []

    # forward: predictions landing near the core -> nearest voxel of t+1
    if nellie and len(forward) and all(len(f) == 4 or len(f[0]) == 0 for f in forward):
        forward = [f for f in forward if len(f) == 4]  # blocks without a labelled voxel add nothing
    if len(core_targets) and len(forward) and nellie and all(len(f) == 4 for f in forward):
        src = np.concatenate([np.asarray(f[0], dtype=np.int64).reshape(-1, nd) for f in forward])
        match = np.concatenate([np.asarray(f[2], dtype=np.int64).reshape(-1, nd) for f in forward])
        err = np.concatenate([np.asarray(f[3], dtype=np.float64).reshape(-1) for f in forward])
        keep = (err < radius_um) & in_box(match, lo, hi)
        src, match, err = src[keep], match[keep], err[keep]
        if len(src):
            shape_hint = np.maximum(src.max(axis=0) + 1, 1)
            order = np.argsort(np.ravel_multi_index(tuple(src.T), tuple(shape_hint)), kind="stable")
            parts.append((src[order], match[order], err[order]))
    elif len(core_targets) and len(forward):
        margin = radius_um / sp + 1.0
        src = [np.asarray(f[0], dtype=np.int64).reshape(-1, nd) for f in forward]
        pred = [np.asarray(f[1], dtype=np.float64).reshape(-1, nd) for f in forward]
        near = [in_box(p, lo - margin, hi + margin) for p in pred]
        src = np.concatenate([s[m] for s, m in zip(src, near)])
        pred = np.concatenate([p[m] for p, m in zip(pred, near)])
        if len(src):
            shape_hint = np.maximum(src.max(axis=0) + 1, 1)
            order = np.argsort(np.ravel_multi_index(tuple(src.T), tuple(shape_hint)), kind="stable")
            src, pred = src[order], pred[order]
            match = _nearest_match(pred, index_next if nellie else None, targets, spacing)
            err = _error(pred, match, spacing)
            keep = (err < radius_um) & in_box(match, lo, hi)
            parts.append((src[keep], match[keep], err[keep]))

    # backward: core targets -> predicted origins -> nearest voxel of t
    pool = len(index_prev) if nellie else len(prev_points)
    if len(core_targets) and pool:
        first = index_next.first if nellie else None
        v = _interpolate(anchors_backward, core_targets, spacing, radius_um, compat,
                         index_next.k_backward if nellie else None, first,
                         index_next.counts_of(core_targets, False) if nellie else None)
        ok = ~np.isnan(v).any(axis=1)
        if ok.any():
            tgt = core_targets[ok]
            pred = tgt - v[ok]
            match = _nearest_match(pred, index_prev if nellie else None, prev_points, spacing)
            err = _error(pred, match, spacing)
            keep = err < radius_um
            parts.append((match[keep], tgt[keep], err[keep]))

    if not parts:
        return Candidates.empty(nd)
    return Candidates(np.concatenate([p[0] for p in parts]).astype(np.int64),
                      np.concatenate([p[1] for p in parts]).astype(np.int64),
                      np.concatenate([p[2] for p in parts]).astype(np.float64))


def _nearest_match(pred: np.ndarray, frame_index: Any, points: np.ndarray,
                   spacing: Sequence[float]) -> np.ndarray:
    """The labelled voxel nearest to each predicted position, (n, d) int64.

    Compat (``frame_index`` given): cKDTree over the frame's voxels, Nellie's tie rule;
    a prediction whose nearest lattice point is a labelled voxel and decisively nearest
    (:func:`_lattice_rows`) is answered by a key lookup, which every exact search agrees
    with, so the tree is queried for the others only (same voxels bit for bit).
    Default: ``nearest_voxel`` among ``points`` (lowest raster index on ties).
    """
    if frame_index is not None:
        n = len(pred)
        q = np.asarray(pred, dtype=np.float32).astype(np.float64).reshape(n, len(spacing))
        rows, _, v = _lattice_hits(q, spacing, frame_index.keys, np.zeros(q.shape[1], np.int64),
                                   frame_index.shape)
        out = np.empty((n, q.shape[1]), dtype=np.int64)
        out[rows] = v
        rest = np.ones(n, dtype=bool)
        rest[rows] = False
        if rest.any():
            _, j = frame_index.tree.query(scaled(q[rest], spacing), k=1)
            out[rest] = frame_index.voxels(j)
        return out
    j, _ = nearest_voxel(points, pred, spacing)
    return points[j]
