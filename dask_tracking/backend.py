"""Array backend chosen by the chunk type of the input, never by a global.

A dask array whose ``_meta`` is a CuPy array runs its per-chunk kernels with
CuPy; otherwise NumPy. CuPy is imported lazily, only when such an array is seen.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "array_module", "is_cupy", "to_host", "require_gpu_extra", "cupy_available",
    "nearest_neighbour", "ball_counts", "brute_nearest", "brute_ball_counts", "cuda_nearest",
    "cuda_ball_counts",
]


def is_cupy(x: Any) -> bool:
    """True if ``x`` (an array, or a dask array via its ``_meta``) is a CuPy array."""
    meta = getattr(x, "_meta", x)
    mod = type(meta).__module__
    return mod.startswith("cupy")


def array_module(x: Any) -> ModuleType:
    """``cupy`` if ``x`` (or its dask ``_meta``) is a CuPy array, else ``numpy``."""
    if is_cupy(x):
        return importlib.import_module("cupy")
    return np


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy of ``x`` (no copy if it already is NumPy)."""
    if is_cupy(x):
        return x.get()
    return np.asarray(x)


def require_gpu_extra(what: str = "GPU support") -> ModuleType:
    """Import CuPy or raise an ImportError that names the ``gpu`` extra."""
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise ImportError(
            f"{what} needs CuPy: install the gpu extra, pip install 'dask-tracking[gpu]' "
            f"(cupy and dask-cuda); import failed with: {exc}"
        ) from exc


def cupy_available() -> bool:
    """True if CuPy imports and sees at least one CUDA device."""
    try:
        cp = importlib.import_module("cupy")
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


# ---------------------------------------------------------------------------
# Shared neighbour-search primitives: one call for the stage code, cKDTree on
# the host for NumPy, chunked brute force with bounded memory for CuPy.
# ---------------------------------------------------------------------------

#: Bytes of pairwise distances one brute-force block may hold (rows x points x 8).
BRUTE_BLOCK_BYTES = 1 << 28

#: Up to this many neighbours the brute force selects by repeated argmin, beyond by a stable sort.
SELECT_K = 16


def _squared_distances(xp: ModuleType, queries: Any, points: Any) -> Any:
    """``(Q, P)`` squared Euclidean distances, summed over axes in order 0..d-1.

    The explicit per-axis accumulation (no fused multiply-add, one elementwise
    kernel per step) gives the same float64 numbers as cKDTree's ``p=2`` metric.
    """
    d2 = None
    for a in range(queries.shape[1]):
        diff = queries[:, a, None] - points[None, :, a]
        sq = diff * diff
        d2 = sq if d2 is None else d2 + sq
    return d2


def _brute_rows(n_points: int, block_bytes: int) -> int:
    return max(1, int(block_bytes) // max(8 * n_points, 1))


def brute_nearest(points: Any, queries: Any, k: int = 1, *, distance_upper_bound: float = np.inf,
                  block_bytes: int = BRUTE_BLOCK_BYTES) -> tuple[Any, Any]:
    """k nearest points of each query by brute force in blocks of queries (any array module).

    Parameters
    ----------
    points : array, shape (P, d), float64
        Reference points (any unit; the caller scales voxels to micrometres).
    queries : array, shape (Q, d), float64
        Query points, same module and unit as ``points``.
    k : int
        Number of neighbours (>= 1).
    distance_upper_bound : float
        Neighbours farther than this (``>``) are reported as missing.
    block_bytes : int
        Memory bound of one block of pairwise distances: ``rows * P * 8`` bytes.

    Returns
    -------
    dist : array, shape (Q, k), float64
        Distances in ascending order, ties by point index; ``inf`` where missing.
    idx : array, shape (Q, k), int64
        Point indices; ``P`` where missing (cKDTree's convention).
    """
    xp = array_module(queries)
    P, Q = int(points.shape[0]), int(queries.shape[0])
    dist = xp.full((Q, k), np.inf, dtype=np.float64)
    idx = xp.full((Q, k), P, dtype=np.int64)
    if P == 0 or Q == 0:
        return dist, idx
    kk = min(k, P)
    bound2 = float(distance_upper_bound) ** 2 if np.isfinite(distance_upper_bound) else np.inf
    step = _brute_rows(P, block_bytes)
    for i in range(0, Q, step):
        d2 = _squared_distances(xp, queries[i:i + step], points)
        if kk <= SELECT_K:
            # k passes of argmin (first minimum = lowest index), each taking its winner out:
            # the (distance, index) order of a stable sort at a fraction of its cost
            rows = xp.arange(d2.shape[0])
            order = xp.empty((d2.shape[0], kk), dtype=np.int64)
            nd2 = xp.empty((d2.shape[0], kk), dtype=np.float64)
            for j in range(kk):
                a = xp.argmin(d2, axis=1)
                order[:, j] = a
                nd2[:, j] = d2[rows, a]
                if j + 1 < kk:
                    d2[rows, a] = np.inf
        else:
            order = xp.argsort(d2, axis=1, kind="stable")[:, :kk]
            nd2 = xp.take_along_axis(d2, order, axis=1)
        miss = ~(nd2 <= bound2)
        dist[i:i + step, :kk] = xp.where(miss, np.inf, xp.sqrt(nd2))
        idx[i:i + step, :kk] = xp.where(miss, P, order)
    return dist, idx


def brute_ball_counts(points: Any, queries: Any, radius: float, *,
                      block_bytes: int = BRUTE_BLOCK_BYTES) -> Any:
    """Number of ``points`` within ``radius`` (``<=``, on squared distances) of each query.

    Same module, units and memory bound as :func:`brute_nearest`; queries whose
    coordinates are NaN count 0. Returns an int64 array of shape ``(Q,)``.
    """
    xp = array_module(queries)
    P, Q = int(points.shape[0]), int(queries.shape[0])
    out = xp.zeros(Q, dtype=np.int64)
    if P == 0 or Q == 0:
        return out
    r2 = float(radius) * float(radius)
    step = _brute_rows(P, block_bytes)
    for i in range(0, Q, step):
        d2 = _squared_distances(xp, queries[i:i + step], points)
        out[i:i + step] = (d2 <= r2).sum(axis=1)
    return out


#: CUDA source of the GPU search kernels: one thread per query, a sorted list of the k
#: best (squared distance, index) in registers, the points streamed through the cache.
#: ``__dmul_rn``/``__dadd_rn`` forbid fused multiply-adds, so the squared
#: distances are cKDTree's (and :func:`_squared_distances`') bit for bit; strict comparisons
#: keep the lower index first among equal distances.
_CUDA_SOURCE = r"""
__device__ __forceinline__ double sqdist(const double* q, const double* p, int D) {
    double diff = q[0] - p[0];
    double d2 = __dmul_rn(diff, diff);
    for (int a = 1; a < D; ++a) {
        diff = q[a] - p[a];
        d2 = __dadd_rn(d2, __dmul_rn(diff, diff));
    }
    return d2;
}

extern "C" __global__ void knn_select(const double* __restrict__ pts, const double* __restrict__ qs,
                                      long long P, long long Q, int D, int K, double bound2, double inf,
                                      double* __restrict__ out_d2, long long* __restrict__ out_i) {
    long long q = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    if (q >= Q) return;
    double qq[3];
    for (int a = 0; a < D; ++a) qq[a] = qs[q * D + a];
    double bd[16];
    long long bi[16];
    for (int j = 0; j < K; ++j) { bd[j] = inf; bi[j] = P; }
    for (long long p = 0; p < P; ++p) {
        double d2 = sqdist(qq, pts + p * D, D);
        if (d2 <= bound2 && d2 < bd[K - 1]) {
            int j = K - 1;
            while (j > 0 && bd[j - 1] > d2) { bd[j] = bd[j - 1]; bi[j] = bi[j - 1]; --j; }
            bd[j] = d2; bi[j] = p;
        }
    }
    for (int j = 0; j < K; ++j) { out_d2[q * K + j] = bd[j]; out_i[q * K + j] = bi[j]; }
}

extern "C" __global__ void ball_count(const double* __restrict__ pts, const double* __restrict__ qs,
                                      long long P, long long Q, int D, double r2,
                                      long long* __restrict__ out) {
    long long q = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    if (q >= Q) return;
    double qq[3];
    for (int a = 0; a < D; ++a) qq[a] = qs[q * D + a];
    long long n = 0;
    for (long long p = 0; p < P; ++p) n += (sqdist(qq, pts + p * D, D) <= r2);
    out[q] = n;
}
"""

#: Largest ``k`` and dimension the CUDA kernels take (beyond: the array-module brute force).
CUDA_MAX_K, CUDA_MAX_D = 16, 3
_THREADS = 128


@functools.lru_cache(maxsize=None)
def _cuda_module(device: int):
    cp = importlib.import_module("cupy")
    return cp.RawModule(code=_CUDA_SOURCE)


def _cuda_kernel(cp: ModuleType, name: str):
    return _cuda_module(int(cp.cuda.Device().id)).get_function(name)


def cuda_nearest(points: Any, queries: Any, k: int = 1, *, distance_upper_bound: float = np.inf) -> tuple[Any, Any]:
    """:func:`brute_nearest` for CuPy arrays as one CUDA kernel (memory O(Q k), no (Q, P) block).

    Same arguments, returns and tie order as :func:`brute_nearest`, bit for bit; needs
    ``k <= CUDA_MAX_K`` and ``d <= CUDA_MAX_D``.
    """
    cp = array_module(queries)
    P, Q, D = int(points.shape[0]), int(queries.shape[0]), int(queries.shape[1])
    if k > CUDA_MAX_K or D > CUDA_MAX_D:
        raise ValueError(f"cuda_nearest takes k <= {CUDA_MAX_K} and d <= {CUDA_MAX_D}, got k={k}, d={D}")
    d2 = cp.full((Q, k), np.inf, dtype=np.float64)
    idx = cp.full((Q, k), P, dtype=np.int64)
    if P and Q:
        pts = cp.ascontiguousarray(points, dtype=np.float64)
        qs = cp.ascontiguousarray(queries, dtype=np.float64)
        bound2 = float(distance_upper_bound) ** 2 if np.isfinite(distance_upper_bound) else np.inf
        _cuda_kernel(cp, "knn_select")(((Q + _THREADS - 1) // _THREADS,), (_THREADS,),
                                       (pts, qs, np.int64(P), np.int64(Q), np.int32(D), np.int32(k),
                                        np.float64(bound2), np.float64(np.inf), d2, idx))
    return cp.where(idx == P, np.inf, cp.sqrt(d2)), idx


def cuda_ball_counts(points: Any, queries: Any, radius: float) -> Any:
    """:func:`brute_ball_counts` for CuPy arrays as one CUDA kernel (``d <= CUDA_MAX_D``)."""
    cp = array_module(queries)
    P, Q, D = int(points.shape[0]), int(queries.shape[0]), int(queries.shape[1])
    if D > CUDA_MAX_D:
        raise ValueError(f"cuda_ball_counts takes d <= {CUDA_MAX_D}, got d={D}")
    out = cp.zeros(Q, dtype=np.int64)
    if P and Q:
        pts = cp.ascontiguousarray(points, dtype=np.float64)
        qs = cp.ascontiguousarray(queries, dtype=np.float64)
        _cuda_kernel(cp, "ball_count")(((Q + _THREADS - 1) // _THREADS,), (_THREADS,),
                                       (pts, qs, np.int64(P), np.int64(Q), np.int32(D),
                                        np.float64(float(radius) * float(radius)), out))
    return out


def _check_points(name: str, x: Any, d: int | None) -> None:
    from .dataset import InputError

    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2 or (d is not None and shape[1] != d):
        want = "(N, d)" if d is None else f"(N, {d})"
        raise InputError(f"{name} must be a {want} array of coordinates, got shape {shape}")


def nearest_neighbour(points: Any, queries: Any, k: int = 1, *,
                      distance_upper_bound: float = np.inf) -> tuple[Any, Any]:
    """The ``k`` nearest ``points`` of each query, on the module of ``queries``.

    NumPy queries use SciPy's ``cKDTree`` (host); CuPy queries use
    :func:`cuda_nearest` on the GPU (one CUDA thread per query, memory O(Q k);
    for ``k > CUDA_MAX_K`` or ``d > 3`` :func:`brute_nearest`, chunked brute
    force with memory bounded by :data:`BRUTE_BLOCK_BYTES`), and the results stay
    on the GPU.

    Parameters
    ----------
    points : array, shape (P, d)
        Reference points (moved to the module of ``queries``).
    queries : array, shape (Q, d)
        Query points, same unit as ``points`` (e.g. micrometres).
    k : int
        Number of neighbours.
    distance_upper_bound : float
        Neighbours farther than this are missing.

    Returns
    -------
    dist : array, shape (Q, k), float64
        Ascending; ``inf`` where missing.
    idx : array, shape (Q, k), int64
        ``P`` where missing.

    Notes
    -----
    The neighbour sets are the same on both paths; among points at exactly equal
    distances the GPU path orders by point index, cKDTree by its own tree order.
    """
    from .dataset import InputError

    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    _check_points("points", points, None)
    _check_points("queries", queries, points.shape[1])
    if is_cupy(queries):
        xp = array_module(queries)
        p, q = xp.asarray(points, dtype=np.float64), xp.asarray(queries, dtype=np.float64)
        if k <= CUDA_MAX_K and q.shape[1] <= CUDA_MAX_D:
            return cuda_nearest(p, q, int(k), distance_upper_bound=distance_upper_bound)
        return brute_nearest(p, q, int(k), distance_upper_bound=distance_upper_bound)
    from scipy.spatial import cKDTree

    p = np.asarray(to_host(points), dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    if len(p) == 0 or len(q) == 0:
        return brute_nearest(p, q, int(k))
    dist, idx = cKDTree(p).query(q, k=int(k), p=2, distance_upper_bound=distance_upper_bound)
    return (np.asarray(dist, dtype=np.float64).reshape(len(q), int(k)),
            np.asarray(idx, dtype=np.int64).reshape(len(q), int(k)))


def ball_counts(points: Any, queries: Any, radius: float) -> Any:
    """Number of ``points`` within ``radius`` (``<=``) of each query, on the module of ``queries``.

    NumPy: ``cKDTree.query_ball_point(..., return_length=True)``; CuPy:
    :func:`cuda_ball_counts` on the GPU (:func:`brute_ball_counts` for ``d > 3``). NaN queries count 0. Returns int64, shape (Q,).
    """
    _check_points("points", points, None)
    _check_points("queries", queries, points.shape[1])
    if is_cupy(queries):
        xp = array_module(queries)
        p, q = xp.asarray(points, dtype=np.float64), xp.asarray(queries, dtype=np.float64)
        if q.shape[1] <= CUDA_MAX_D:
            return cuda_ball_counts(p, q, float(radius))
        return brute_ball_counts(p, q, float(radius))
    from scipy.spatial import cKDTree

    p = np.asarray(to_host(points), dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    out = np.zeros(len(q), dtype=np.int64)
    good = ~np.isnan(q).any(axis=1) if len(q) else np.zeros(0, bool)
    if len(p) and good.any():
        out[good] = cKDTree(p).query_ball_point(q[good], float(radius), p=2, return_length=True)
    return out
