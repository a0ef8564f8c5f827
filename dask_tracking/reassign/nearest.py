"""Nearest point with a tie rule that does not depend on which points are searched.

A k-d tree answers "the nearest point" but picks among equidistant points by its
own build order, so two searches over different (overlapping) subsets of the
points can disagree on a tie. Block tasks search subsets, so every nearest-point
decision of the object vote goes through :func:`nearest_index`: the distance is
recomputed from the coordinate differences (the same float operations for a given
pair of points, whatever the subset) and equal distances are decided by a key
(e.g. the flow row's index in its table, or an identity).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["nearest_index"]

_BATCH = 1 << 16


def nearest_index(points: Any, queries: Any, spacing: Sequence[float], keys: Any, *,
                  radius: float | None = None) -> np.ndarray:
    """Index of the nearest point of each query, ties to the smallest key.

    Parameters
    ----------
    points : (n, d) array_like of float
        Candidate positions, voxels (frame coordinates).
    queries : (m, d) array_like of float
        Query positions, voxels (frame coordinates).
    spacing : sequence of float, length d
        Voxel size, um: distances are Euclidean in um.
    keys : (n,) array_like of int
        Tie rule: among points at the same (recomputed) distance the smallest key wins.
    radius : float, optional
        Only points within ``radius`` um (inclusive) count; None: no limit.

    Returns
    -------
    ndarray, int64, shape (m,)
        Index into ``points``, or -1 where no point is within ``radius`` (or ``n == 0``).
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    qry = np.asarray(queries, dtype=np.float64)
    s = np.asarray(spacing, dtype=np.float64)
    keys = np.asarray(keys, dtype=np.int64)
    m, n = len(qry), len(pts)
    out = np.full(m, -1, dtype=np.int64)
    if m == 0 or n == 0:
        return out
    pts = pts.reshape(n, -1)
    qry = qry.reshape(m, -1)
    tree = cKDTree(pts * s)
    r2 = np.inf if radius is None else float(radius) ** 2
    upper = np.inf if radius is None else float(radius) * (1 + 1e-9) + 1e-12
    for start in range(0, m, _BATCH):
        sel = np.arange(start, min(start + _BATCH, m))
        k = min(4, n)
        while sel.size:
            q = qry[sel]
            dist, idx = tree.query(q * s, k=k, distance_upper_bound=upper)
            dist = np.asarray(dist, dtype=np.float64).reshape(len(sel), k)
            idx = np.asarray(idx, dtype=np.int64).reshape(len(sel), k)
            found = idx < n
            safe = np.where(found, idx, 0)
            d2 = (((q[:, None, :] - pts[safe]) * s) ** 2).sum(axis=-1)
            d2[~found | (d2 > r2)] = np.inf
            # every point as near as the tree's nearest is listed when the last slot is farther
            last = ~found[:, -1] | (dist[:, -1] > dist[:, 0] * (1 + 1e-9) + 1e-12)
            done = last | (k >= n)
            dmin = d2.min(axis=1)
            ok = done & np.isfinite(dmin)
            if ok.any():
                tie = (d2[ok] == dmin[ok, None])
                kk = np.where(tie, keys[safe[ok]], np.iinfo(np.int64).max)
                out[sel[ok]] = safe[ok][np.arange(int(ok.sum())), np.argmin(kk, axis=1)]
            sel = sel[~done]
            k = min(2 * k, n)
    return out
