"""One partner per marker: an optimal one-to-one assignment of a frame pair's flow rows.

Nellie's matching keeps, for every marker of frame ``t``, each candidate that is
mutually best in either direction, so a marker can get several partners and a
marker of ``t + 1`` can be claimed by several sources (spec section 9). Here the
rows of one frame pair are treated as the edges of a bipartite graph (sources at
``t``, end points at ``t + 1``, edge weight = the row's cost) and a
minimum-cost one-to-one matching is kept (``scipy.optimize.linear_sum_assignment``).
With ``keep_splits=True`` a row left out is kept again when its end point was
claimed by no other source and its cost is within ``split_margin`` of its
source's matched row: a marker of ``t + 1`` that only one source can explain is a
real split (or, read backwards, a merge), not a duplicate.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..dataset import InputError
from .table import FlowTable

__all__ = ["assign_one_to_one", "one_to_one_flow"]


def _check(ndim: Any, split_margin: Any) -> None:
    if ndim not in (2, 3) or isinstance(ndim, bool):
        raise InputError(f"ndim must be 2 or 3, got {ndim!r}")
    if isinstance(split_margin, bool) or not isinstance(split_margin, (int, float)) or \
            not np.isfinite(split_margin) or split_margin < 0:
        raise InputError(f"split_margin must be a finite number >= 0, got {split_margin!r}")


def assign_one_to_one(rows: Any, ndim: int, *, keep_splits: bool = True,
                      split_margin: float = 0.5) -> np.ndarray:
    """Keep an optimal one-to-one subset of one frame pair's flow rows.

    Parameters
    ----------
    rows : (n, 2d+2) array_like
        Flow rows ``t, (z), y, x, (dz), dy, dx, cost`` of one frame pair (voxels;
        lower cost is better).
    ndim : {2, 3}
        Spatial axes d.
    keep_splits : bool
        Keep a row whose end point no other source claims, when its cost is at most
        ``split_margin`` above its source's matched row (a real split or merge).
    split_margin : float
        See ``keep_splits`` (cost units).

    Returns
    -------
    (m, 2d+2) float64
        The kept rows (exact duplicates removed), in their input order; ``m <= n``.
    """
    _check(ndim, split_margin)
    rows = np.asarray(rows, dtype=np.float64)
    d = int(ndim)
    if rows.ndim != 2 or rows.shape[1] != 2 * d + 2:
        raise InputError(f"rows must have shape (n, {2 * d + 2}) for ndim={d}, got {rows.shape}")
    if len(rows) == 0:
        return rows.copy()
    _, first = np.unique(rows, axis=0, return_index=True)
    rows = rows[np.sort(first)]
    src = rows[:, 1:1 + d]
    dst = np.rint(src + rows[:, 1 + d:1 + 2 * d])
    s_ids, s_of = np.unique(src, axis=0, return_inverse=True)
    t_ids, t_of = np.unique(dst, axis=0, return_inverse=True)
    s_of, t_of = s_of.ravel(), t_of.ravel()
    cost = rows[:, -1]
    matched, best_cost = _match_components(s_of, t_of, cost, len(s_ids), len(t_ids))
    # one row per matched (source, target): the cheapest
    keep = np.zeros(len(rows), bool)
    is_match = matched[s_of] == t_of
    order = np.lexsort((cost, t_of, s_of))
    seen: set[tuple[int, int]] = set()
    for i in order:
        if is_match[i] and (s_of[i], t_of[i]) not in seen:
            keep[i] = True
            seen.add((int(s_of[i]), int(t_of[i])))
    if keep_splits:
        st = np.unique(np.stack([s_of, t_of], axis=1), axis=0)
        n_src = np.bincount(st[:, 1], minlength=len(t_ids))
        taken = np.zeros(len(t_ids), bool)
        taken[matched[matched >= 0]] = True
        for i in order:
            tgt = t_of[i]
            if keep[i] or taken[tgt] or n_src[tgt] != 1:
                continue
            if cost[i] <= best_cost[s_of[i]] + split_margin:
                keep[i] = True
                taken[tgt] = True
    return rows[keep]


def _match_components(s_of, t_of, cost, n_s: int, n_t: int):
    """Minimum-cost one-to-one matching of a bipartite graph, one connected part at a time.

    The edges ``(s_of[k], t_of[k])`` with weight ``cost[k]`` join sources and targets that lie
    within the gate radius of each other, so the graph falls apart into small connected parts.
    Each part is solved with ``linear_sum_assignment`` on its own dense (sources x targets)
    matrix, non-edges weighted ``big``: the same objective as one matrix over the whole pair
    (a matching's cost is a sum over the parts, and non-edges are never kept), with memory and
    time that grow with the largest part, not with the square of the frame's markers.

    Returns
    -------
    matched : (n_s,) int64
        The target of each source, -1 where none.
    best_cost : (n_s,) float64
        The cost of that edge, inf where none.
    """
    big = np.abs(cost).max() * 4.0 + 1e6
    matched = np.full(n_s, -1, np.int64)
    best_cost = np.full(n_s, np.inf)
    graph = coo_matrix((np.ones(len(s_of)), (s_of, n_s + t_of)), shape=(n_s + n_t,) * 2)
    _, part = connected_components(graph, directed=False)
    pe = part[s_of]                                             # the part of each edge
    n_src = np.bincount(part[:n_s], minlength=len(part))
    n_tgt = np.bincount(part[n_s:], minlength=len(part))
    simple = (n_src[pe] == 1) | (n_tgt[pe] == 1)
    # a part with one source or one target: its cheapest edge (ties: lowest source, target)
    e = np.flatnonzero(simple)
    e = e[np.lexsort((t_of[e], s_of[e], cost[e], pe[e]))]
    e = e[np.r_[True, pe[e][1:] != pe[e][:-1]]] if len(e) else e
    matched[s_of[e]] = t_of[e]
    best_cost[s_of[e]] = cost[e]
    # the other parts: linear_sum_assignment on each part's own matrix
    e = np.flatnonzero(~simple)
    e = e[np.argsort(pe[e], kind="stable")]
    starts = np.flatnonzero(np.r_[True, pe[e][1:] != pe[e][:-1]]) if len(e) else e
    for lo, hi in zip(starts, np.r_[starts[1:], len(e)]):
        k = e[lo:hi]
        ss, s_local = np.unique(s_of[k], return_inverse=True)
        tt, t_local = np.unique(t_of[k], return_inverse=True)
        mat = np.full((len(ss), len(tt)), big)
        np.minimum.at(mat, (s_local.ravel(), t_local.ravel()), cost[k])
        r, c = linear_sum_assignment(mat)
        ok = mat[r, c] < big
        matched[ss[r[ok]]] = tt[c[ok]]
        best_cost[ss[r[ok]]] = mat[r[ok], c[ok]]
    return matched, best_cost


def one_to_one_flow(flow: FlowTable, *, keep_splits: bool = True, split_margin: float = 0.5) -> FlowTable:
    """:func:`assign_one_to_one` on every frame pair of a table (lazy: one task per pair).

    Returns
    -------
    FlowTable
        Same frames and axes; ``attrs["assignment"]`` records the options.
    """
    if not isinstance(flow, FlowTable):
        raise InputError(f"flow must be a FlowTable, got {type(flow).__name__}")
    _check(flow.ndim, split_margin)
    f = dask.delayed(assign_one_to_one, pure=True)
    pairs = [f(p, flow.ndim, keep_splits=bool(keep_splits), split_margin=float(split_margin))
             for p in flow.pairs]
    attrs = dict(flow.attrs)
    attrs["assignment"] = {"method": "one_to_one", "keep_splits": bool(keep_splits),
                           "split_margin": float(split_margin)}
    return FlowTable(pairs, flow.ndim, flow.n_frames, attrs)
