"""Matching the markers of frame t+1 ("post", rows i) to frame t ("pre", columns j).

Two families:

* Nellie 1.0.4 (``compat=True``, spec 1.4): the dense path builds the float16
  cost matrix (z-scores over all pairs with distance ``< D``, each term rounded to
  float16) and emits the row minima then the column minima with cost <= 1, so a
  mutual-best pair comes twice; the sparse path (cKDTree, ball ``<= D``, one-pass
  variance, float64 costs, float32 running minima) follows Nellie's loop order.
* Fixed (``compat=False``): candidate pairs within ``<= D`` (brute force or
  cKDTree: the same pairs and the same numbers), z-scores with a two-pass float64
  variance, float64 costs without quantisation, and each selected pair once.

Every function returns ``(i, j, cost)`` arrays: post index, pre index, cost.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from .features import FrameFeatures

__all__ = ["match_frames", "flow_rows", "COST_CUTOFF"]

#: Matches with a cost above this are dropped (a relative threshold: a sum of z-scores).
COST_CUTOFF = 1.0

_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def match_frames(post: FrameFeatures, pre: FrameFeatures, *, spacing: tuple[float, ...],
                 radius_um: float, compat: bool, mode: str, max_dense_pairs: int):
    """Match two frames' markers.

    Parameters
    ----------
    post, pre : FrameFeatures
        Frame t+1 and frame t.
    spacing : tuple of float
        Voxel size in um per spatial axis.
    radius_um : float
        Gate radius ``D`` in um.
    compat : bool
        Nellie 1.0.4's numerics and selection (True) or the fixed method (False).
    mode : {"auto", "dense", "sparse"}
        ``"auto"`` is dense iff ``post.n * pre.n <= max_dense_pairs``.

    Returns
    -------
    i, j : ndarray of int64
    cost : ndarray of float32 (compat) or float64 (fixed)
    """
    if post.n == 0 or pre.n == 0:
        return _EMPTY
    dense = mode == "dense" or (mode == "auto" and post.n * pre.n <= max_dense_pairs)
    qa = post.coords * np.asarray(spacing, dtype=float)
    qb = pre.coords * np.asarray(spacing, dtype=float)
    if compat:
        if dense:
            if _gate_exact(post, pre):
                return _gated_dense_compat(qa, qb, post, pre, radius_um)
            return _select_dense_compat(_cost_dense_compat(qa, qb, post, pre, radius_um))
        return _sparse_compat(qa, qb, post, pre, radius_um)
    if dense:
        i, j = _pairs_within(qa, qb, radius_um)
    else:
        tree = cKDTree(qb)
        lists = tree.query_ball_point(qa, radius_um * (1 + 1e-9))
        counts = np.fromiter((len(x) for x in lists), np.int64, len(lists))
        i = np.repeat(np.arange(post.n, dtype=np.int64), counts)
        j = np.fromiter((v for x in lists for v in sorted(x)), np.int64, int(counts.sum()))
    return _match_fixed(qa, qb, post, pre, i.astype(np.int64), j.astype(np.int64), radius_um)


# ----------------------------------------------------------------- Nellie dense
def _zscore_compat(m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mexp = mask[..., None]
    total = np.sum(mexp)
    if float(total) == 0.0:
        return np.full_like(m, np.inf)
    mean = np.sum(m * mexp, axis=(0, 1)) / total
    var = np.sum((m - mean) ** 2 * mexp, axis=(0, 1)) / total
    z = (m - mean) / (np.sqrt(var) + 1e-8)
    return np.where(mexp, z, np.inf)


def _absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a[:, None, :].astype(np.float64) - b[None, :, :].astype(np.float64))


#: Above this many (pair x channel) elements, Nellie's dense cost is built in row blocks.
_DENSE_BLOCK_ELEMENTS = 4_000_000


def _cost_dense_compat(qa, qb, post, pre, radius_um, block_elements=_DENSE_BLOCK_ELEMENTS) -> np.ndarray:
    """Nellie's float16 dense cost matrix (N_post, N_pre) as float32.

    Small problems use Nellie's whole-array expressions. Large ones are built in
    blocks of post rows, so that the (N_post, N_pre, 18) float64 temporaries (GBs
    at 1e7 pairs) are never whole: NumPy sums such (N, M, F > 1) arrays over
    axes (0, 1) strictly in order, which a running ``add.accumulate`` reproduces
    bit for bit; the distance channel (F = 1, a pairwise sum) stays whole.
    """
    dist = cdist(qa, qb)
    mask = dist < radius_um
    dist = dist / radius_um
    zd = _zscore_compat(dist[..., None], mask).astype(np.float16)
    n_hu = post.hu.shape[1]
    if dist.size * max(n_hu, 4) <= block_elements:
        ds = _absdiff(post.stats, pre.stats)
        zs = (_zscore_compat(ds, mask) / ds.shape[2]).astype(np.float16)
        dh = _absdiff(post.hu, pre.hu)
        zh = (_zscore_compat(dh, mask) / dh.shape[2]).astype(np.float16)
        terms = np.concatenate((zd, zs, zh), axis=2).astype(np.float16)
        return np.nansum(terms, axis=2).astype(np.float16).astype(np.float32)
    total = np.sum(mask[..., None])
    if float(total) == 0.0:
        return np.full(dist.shape, np.inf, np.float32)
    step = max(1, block_elements // (dist.shape[1] * max(n_hu, 4)))
    rows = [slice(a, min(a + step, dist.shape[0])) for a in range(0, dist.shape[0], step)]
    feats = ((post.stats, pre.stats), (post.hu, pre.hu))

    def blocks(k):
        a, b = feats[k]
        for r in rows:
            yield r, _absdiff(a[r], b), mask[r][..., None]

    means = [_ordered_sum(m * mx for _, m, mx in blocks(k)) / total for k in (0, 1)]
    sds = [np.sqrt(_ordered_sum((m - means[k]) ** 2 * mx for _, m, mx in blocks(k)) / total) + 1e-8
           for k in (0, 1)]
    cost = np.empty(dist.shape, np.float32)
    for (r, ms, mx), (_, mh, _) in zip(blocks(0), blocks(1)):
        zs = (np.where(mx, (ms - means[0]) / sds[0], np.inf) / ms.shape[2]).astype(np.float16)
        zh = (np.where(mx, (mh - means[1]) / sds[1], np.inf) / mh.shape[2]).astype(np.float16)
        terms = np.concatenate((zd[r], zs, zh), axis=2).astype(np.float16)
        cost[r] = np.nansum(terms, axis=2).astype(np.float16).astype(np.float32)
    return cost


def _ordered_sum(blocks) -> np.ndarray:
    """Sum of (n, m, F) blocks over their first two axes, element after element in C order."""
    acc = None
    for b in blocks:  # each block is a fresh temporary: its first row may be overwritten
        flat = b.reshape(-1, b.shape[-1])
        if acc is not None and len(flat):
            flat[0] = acc + flat[0]
        elif acc is not None:
            continue
        # a reduction over the outer axis of a C-ordered (n, F) array adds row after row
        acc = np.add.reduce(flat, axis=0)
    return acc


#: Features up to this magnitude keep every square of a difference finite (see _gate_exact).
_GATE_FEATURE_LIMIT = 1e150


def _gate_exact(post: FrameFeatures, pre: FrameFeatures) -> bool:
    """Whether :func:`_gated_dense_compat` gives Nellie's dense result bit for bit here.

    Nellie's sums over the (N_post, N_pre) matrix add ``x * 0 = +0.0`` for every pair
    outside the gate, which leaves a running sum of non-negative terms unchanged; that
    holds while every ``x`` (an absolute difference or its square) is finite.
    """
    for a in (post.stats, pre.stats, post.hu, pre.hu):
        if a.size and not (np.all(np.isfinite(a)) and float(np.max(np.abs(a))) < _GATE_FEATURE_LIMIT):
            return False
    return True


def _gated_dense_compat(qa, qb, post, pre, radius_um):
    """Nellie's dense matching (cost matrix and selection) from the pairs within the gate.

    The same numbers as :func:`_select_dense_compat` of :func:`_cost_dense_compat`,
    with the 4 + n_H feature channels computed for the ``V`` gated pairs only, not for
    all ``N_post x N_pre`` (V is a small part of them on large frames):

    * the distance channel (one value per pair) is z-scored on the whole matrix, as
      Nellie does (NumPy sums it pairwise, so its zeros outside the gate matter);
    * the feature channels' sums over the matrix are sums in C order (NumPy adds the
      (N, M, F) matrix row after row), where a pair outside the gate adds ``+0.0``:
      the same sums over the gated pairs in C order (``np.nonzero`` order) give the
      same bits (:func:`_gate_exact` checks the features keep this exact);
    * each gated pair's float16 terms and their float16 sum are Nellie's element
      operations; a pair outside the gate costs ``+inf``, so the row (column) argmin
      over the matrix is the first smallest gated cost of the row (column), and rows
      or columns without a gated pair emit nothing.
    """
    i, j, dist = _gated_distances(qa, qb, radius_um)
    if len(i) == 0:
        return _EMPTY
    dist = dist / radius_um
    total = len(i)
    size, pos = len(qa) * len(qb), i * len(qb) + j      # flat positions in the matrix
    mean_d = np.array([_pairwise_sum_sparse(pos, dist, size)]) / total
    var_d = np.array([_pairwise_sum_sparse(pos, (dist - mean_d) ** 2, size)]) / total
    zd = ((dist[:, None] - mean_d) / (np.sqrt(var_d) + 1e-8)).astype(np.float16)
    terms = [zd]
    for a, b in ((post.stats, pre.stats), (post.hu, pre.hu)):
        x = np.abs(a[i].astype(np.float64) - b[j].astype(np.float64))     # (V, F), C order of (i, j)
        mean = _ordered_sum([x * 1.0]) / total
        var = _ordered_sum([(x - mean) ** 2]) / total
        terms.append((((x - mean) / (np.sqrt(var) + 1e-8)) / x.shape[1]).astype(np.float16))
    t16 = np.concatenate(terms, axis=1).astype(np.float16)
    cost = np.nansum(t16, axis=1).astype(np.float16).astype(np.float32)
    if not np.all(np.isfinite(cost)):  # an overflowing term: let the whole matrix decide
        return _select_dense_compat(_cost_dense_compat(qa, qb, post, pre, radius_um))
    return _select_pairs(i.astype(np.int64), j.astype(np.int64), cost)


def _gated_distances(qa, qb, radius_um, block_elements: int = 1 << 18, inclusive: bool = False):
    """``(i, j, cdist(qa, qb)[i, j])`` of the pairs with distance ``< radius_um`` (``<=`` with
    ``inclusive``), in C order, computed in blocks of at most ``block_elements`` pairs
    (cdist's values; no (N_post, N_pre) matrix)."""
    step = max(1, block_elements // max(len(qb), 1))
    ii, jj, dd = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float64)]
    for s in range(0, len(qa), step):
        d = cdist(qa[s:s + step], qb)
        a, b = np.nonzero(d <= radius_um if inclusive else d < radius_um)
        ii.append(a.astype(np.int64) + s)
        jj.append(b.astype(np.int64))
        dd.append(d[a, b])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(dd)


def _pairwise_sum_sparse(pos: np.ndarray, values: np.ndarray, size: int, block: int = 1 << 18) -> float:
    """NumPy's sum of a float64 vector of ``size`` elements, zero except ``values`` at the
    sorted flat positions ``pos``, in NumPy's pairwise order (same bits as the dense sum).

    NumPy sums a contiguous vector by halving it (the first half a multiple of 8 long)
    down to blocks of at most 128 elements; a part without values sums to +0.0, which
    leaves a non-negative sum unchanged. Parts of up to ``block`` elements are summed
    densely by NumPy itself (``initial=-0.0`` adds nothing: the same pairwise sum).
    """
    def part(lo: int, n: int, a: int, b: int) -> float:
        if a == b:
            return 0.0
        if n <= block:
            dense = np.zeros(n, np.float64)
            dense[pos[a:b] - lo] = values[a:b]
            return float(np.add.reduce(dense, initial=-0.0))
        half = n // 2
        half -= half % 8
        mid = a + int(np.searchsorted(pos[a:b], lo + half, side="left"))
        return part(lo, half, a, mid) + part(lo + half, n - half, mid, b)

    return part(0, int(size), 0, len(pos))


def _select_pairs(i: np.ndarray, j: np.ndarray, cost: np.ndarray):
    """:func:`_select_dense_compat` on a cost matrix given by its finite entries (the rest +inf)."""
    o = np.lexsort((j, cost, i))                      # per row: smallest cost, then first column
    first = o[np.r_[True, i[o][1:] != i[o][:-1]]]
    rk = first[~(cost[first] > COST_CUTOFF)]           # rows ascending (first is sorted by i)
    o = np.lexsort((i, cost, j))                      # per column: smallest cost, then first row
    firstc = o[np.r_[True, j[o][1:] != j[o][:-1]]]
    ck = firstc[~(cost[firstc] > COST_CUTOFF)]
    return (np.concatenate((i[rk], i[ck])).astype(np.int64), np.concatenate((j[rk], j[ck])).astype(np.int64),
            np.concatenate((cost[rk], cost[ck])).astype(np.float32))


def _select_dense_compat(cost: np.ndarray):
    ri = np.argmin(cost, axis=1)
    rv = cost[np.arange(cost.shape[0]), ri]
    ci = np.argmin(cost, axis=0)
    cv = cost[ci, np.arange(cost.shape[1])]
    rk = np.nonzero(~(rv > COST_CUTOFF))[0]
    ck = np.nonzero(~(cv > COST_CUTOFF))[0]
    i = np.concatenate((rk, ci[ck])).astype(np.int64)
    j = np.concatenate((ri[rk], ck)).astype(np.int64)
    c = np.concatenate((rv[rk], cv[ck])).astype(np.float32)
    return i, j, c


# ---------------------------------------------------------------- Nellie sparse
def _sparse_compat(qa, qb, post, pre, radius_um):
    sa, sb = post.stats.astype(np.float32), pre.stats.astype(np.float32)
    ha, hb = post.hu.astype(np.float32), pre.hu.astype(np.float32)
    lists = cKDTree(qb).query_ball_point(qa, radius_um)
    n = 0
    s_d = ss_d = 0.0
    s_s = np.zeros(sa.shape[1]); ss_s = np.zeros(sa.shape[1])
    s_h = np.zeros(ha.shape[1]); ss_h = np.zeros(ha.shape[1])
    rows = []
    for i, lst in enumerate(lists):
        if not lst:
            rows.append(None)
            continue
        jj = np.asarray(lst, dtype=np.int64)
        g = np.linalg.norm(qa[i] - qb[jj], axis=1) / radius_um
        dsv = np.abs(sa[i][None, :] - sb[jj])
        dhv = np.abs(ha[i][None, :] - hb[jj])
        rows.append((jj, g, dsv, dhv))
        s_d += float(np.sum(g)); ss_d += float(np.sum(g * g))
        s_s += np.sum(dsv, axis=0, dtype=np.float64); ss_s += np.sum(dsv * dsv, axis=0, dtype=np.float64)
        s_h += np.sum(dhv, axis=0, dtype=np.float64); ss_h += np.sum(dhv * dhv, axis=0, dtype=np.float64)
        n += int(g.size)
    if n == 0:
        return _EMPTY
    m_d = s_d / n
    sd_d = np.sqrt(max(0.0, ss_d / n - m_d ** 2)) + 1e-8
    m_s = s_s / n
    sd_s = np.sqrt(np.maximum(ss_s / n - m_s ** 2, 0.0)) + 1e-8
    m_h = s_h / n
    sd_h = np.sqrt(np.maximum(ss_h / n - m_h ** 2, 0.0)) + 1e-8
    rv = np.full(post.n, np.inf, np.float32); ri = np.full(post.n, -1, np.int64)
    cv = np.full(pre.n, np.inf, np.float32); ci = np.full(pre.n, -1, np.int64)
    for i, row in enumerate(rows):
        if row is None:
            continue
        jj, g, dsv, dhv = row
        cost = ((g - m_d) / sd_d + np.mean((dsv - m_s) / sd_s, axis=1)
                + np.mean((dhv - m_h) / sd_h, axis=1))
        keep = cost <= COST_CUTOFF
        if not np.any(keep):
            continue
        ck, jk = cost[keep], jj[keep]
        b = int(np.argmin(ck))
        if float(ck[b]) < rv[i]:
            rv[i] = float(ck[b]); ri[i] = int(jk[b])
        for jv, c in zip(jk.tolist(), ck.tolist()):
            if c < cv[jv]:
                cv[jv] = c; ci[jv] = i
    rk = np.nonzero((ri >= 0) & (rv <= COST_CUTOFF))[0]
    ck_ = np.nonzero((ci >= 0) & (cv <= COST_CUTOFF))[0]
    i = np.concatenate((rk, ci[ck_])).astype(np.int64)
    j = np.concatenate((ri[rk], ck_)).astype(np.int64)
    c = np.concatenate((rv[rk], cv[ck_])).astype(np.float32)
    return i, j, c


# ------------------------------------------------------------------- fixed
def _pairs_within(qa, qb, radius_um, block_pairs: int = 1 << 17):
    """All (i, j) with ``|qa_i - qb_j| <= radius_um`` by brute force (sorted), in blocks of at
    most ``block_pairs`` pairs (1 MB of distances), whatever the number of markers."""
    i, j, _ = _gated_distances(qa, qb, radius_um * (1 + 1e-9), block_pairs, inclusive=True)
    return i, j


def _zscore_pairs(x: np.ndarray) -> np.ndarray:
    """Two-pass population z-scores per column over the candidate pairs (float64)."""
    mean = x.mean(axis=0)
    dev = x - mean
    sd = np.sqrt((dev * dev).mean(axis=0)) + 1e-8
    return dev / sd


def _match_fixed(qa, qb, post, pre, i, j, radius_um):
    diff = qa[i] - qb[j]
    dist = np.sqrt(np.sum(diff * diff, axis=1))
    keep = dist <= radius_um
    i, j, dist = i[keep], j[keep], dist[keep]
    if i.size == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    zd = _zscore_pairs((dist / radius_um)[:, None])[:, 0]
    zs = _zscore_pairs(np.abs(post.stats[i].astype(np.float64) - pre.stats[j].astype(np.float64)))
    zh = _zscore_pairs(np.abs(post.hu[i].astype(np.float64) - pre.hu[j].astype(np.float64)))
    cost = zd + zs.mean(axis=1) + zh.mean(axis=1)
    # best pre for each post (ties: lowest j) and best post for each pre (ties: lowest i)
    o_row = np.lexsort((j, cost, i))
    first_row = o_row[np.r_[True, i[o_row][1:] != i[o_row][:-1]]]
    o_col = np.lexsort((i, cost, j))
    first_col = o_col[np.r_[True, j[o_col][1:] != j[o_col][:-1]]]
    sel = np.union1d(first_row, first_col)
    sel = sel[cost[sel] <= COST_CUTOFF]
    order = np.lexsort((i[sel], j[sel]))
    sel = sel[order]
    return i[sel], j[sel], cost[sel]


# --------------------------------------------------------------------- rows
def flow_rows(t: int, post: FrameFeatures, pre: FrameFeatures, i, j, cost) -> np.ndarray:
    """Nellie-layout rows ``[t, pre coords, post - pre, cost]`` (float64, (m, 2d+2))."""
    d = pre.coords.shape[1]
    if len(i) == 0:
        return np.zeros((0, 2 * d + 2), np.float64)
    a = pre.coords[j].astype(np.int64)
    b = post.coords[i].astype(np.int64)
    return np.column_stack([np.full(len(i), t, np.int64), a, b - a, np.asarray(cost)]).astype(np.float64)
