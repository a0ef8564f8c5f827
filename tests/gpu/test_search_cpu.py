"""CPU side of the GPU support: brute-force neighbour search (NumPy) against cKDTree,
argument checks, and the ImportError naming the ``gpu`` extra where CuPy is missing."""

from __future__ import annotations

import importlib.util

import dask.array as da
import numpy as np
import pytest
from scipy.spatial import cKDTree

from dask_tracking.datasets import synthetic
from dask_tracking.backend import (ball_counts, brute_ball_counts, brute_nearest, nearest_neighbour,
                                   require_gpu_extra)
from dask_tracking.dataset import InputError
from dask_tracking.gpu import array_to_host, to_device, to_host

NEEDS_CUDA = False  # runs on every machine (see conftest.py)
HAS_CUPY = importlib.util.find_spec("cupy") is not None


def _points(seed=0, n_p=300, n_q=2000, d=3):
    rng = np.random.default_rng(seed)
    # continuous random positions in micrometres: no two distances tie
    p = rng.uniform(0, 40, (n_p, d)) * np.array([0.25, 0.0655, 0.0655])[:d]
    q = rng.uniform(0, 40, (n_q, d)) * np.array([0.25, 0.0655, 0.0655])[:d]
    return p.astype(np.float64), q


@pytest.mark.parametrize("block_bytes", [8 * 300, 8 * 300 * 7, 1 << 28])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_brute_nearest_equals_ckdtree(k, block_bytes):
    p, q = _points()
    dist, idx = brute_nearest(p, q, k, block_bytes=block_bytes)
    want_d, want_i = cKDTree(p).query(q, k=k)
    np.testing.assert_array_equal(dist, np.asarray(want_d).reshape(len(q), k))  # bit for bit
    np.testing.assert_array_equal(idx, np.asarray(want_i).reshape(len(q), k))


def test_brute_nearest_bound_and_missing():
    p, q = _points(1)
    bound = 0.2
    dist, idx = brute_nearest(p, q, 8, distance_upper_bound=bound, block_bytes=4096)
    want_d, want_i = cKDTree(p).query(q, k=8, distance_upper_bound=bound)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(idx, want_i)
    assert np.isinf(dist).any() and (idx == len(p)).any()  # the bound did cut
    # more neighbours than points: the rest are missing, as with cKDTree
    d2, i2 = brute_nearest(p[:3], q[:10], 5)
    assert np.isinf(d2[:, 3:]).all() and (i2[:, 3:] == 3).all()
    d3, i3 = brute_nearest(p[:0], q[:4], 2)
    assert d3.shape == (4, 2) and np.isinf(d3).all() and (i3 == 0).all()


def test_ball_counts_equal_ckdtree_and_nan_rows():
    p, q = _points(2)
    q[::13] = np.nan
    r = 0.35
    got = brute_ball_counts(p, q, r, block_bytes=8 * 300 * 11)
    good = ~np.isnan(q[:, 0])
    want = np.zeros(len(q), np.int64)
    want[good] = cKDTree(p).query_ball_point(q[good], r, return_length=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ball_counts(p, q, r), want)
    assert want.max() > 1 and (got[~good] == 0).all()


def test_nearest_neighbour_host_path_and_ties_by_index():
    p, q = _points(3)
    d, i = nearest_neighbour(p, q, 3)
    bd, bi = brute_nearest(p, q, 3)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(i, bi)
    # two points at the same place: the brute force orders the tie by index
    twin = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    _, ti = brute_nearest(twin, np.array([[0.1, 0.0, 0.0]]), 2)
    assert ti.tolist() == [[0, 2]]


def test_bad_arguments():
    p, q = _points(4, 10, 10)
    with pytest.raises(InputError, match=r"k must be a positive integer, got 0"):
        nearest_neighbour(p, q, 0)
    with pytest.raises(InputError, match=r"queries must be a \(N, 3\) array of coordinates, got shape \(10, 2\)"):
        nearest_neighbour(p, q[:, :2])
    with pytest.raises(InputError, match=r"points must be a \(N, d\) array of coordinates, got shape \(10,\)"):
        ball_counts(p[:, 0], q, 1.0)
    with pytest.raises(InputError, match=r"dataset must be a TrackingDataset, got ndarray"):
        to_device(p)
    with pytest.raises(InputError, match=r"a must be a dask array, got ndarray"):
        array_to_host(p)


def test_to_host_keeps_numpy_dataset():
    ds = synthetic(2, 2, seed=1)
    back = to_host(ds)
    for name in ("raw", "labels"):
        assert getattr(back, name) is getattr(ds, name)
    a = da.ones((4, 4), chunks=2)
    assert array_to_host(a) is a


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here: the missing-extra message cannot be seen")
def test_missing_cupy_names_the_gpu_extra():
    with pytest.raises(ImportError, match=r"needs CuPy: install the gpu extra, pip install 'dask-tracking\[gpu\]'"
                                          r" \(cupy and dask-cuda\); import failed with: No module named 'cupy'"):
        require_gpu_extra("the test")
    with pytest.raises(ImportError, match=r"dask_tracking\.gpu\.to_device needs CuPy: install the gpu extra"):
        to_device(synthetic(2, 2, seed=1))


@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is not None,
                    reason="dask-cuda is installed here: the missing-extra message cannot be seen")
def test_gpu_cluster_without_dask_cuda_names_the_gpu_extra():
    import dask_tracking as dt

    with pytest.raises(ImportError, match=r"kind='gpu' \(--gpu\) needs dask-cuda and cupy: install the gpu extra, "
                                          r"pip install 'dask-tracking\[gpu\]'; import failed with: No module named"):
        dt.cluster(kind="gpu")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here: the missing-extra message cannot be seen")
def test_run_gpu_without_cupy_names_the_gpu_extra_before_any_work(tmp_path):
    import dask_tracking as dt

    out = tmp_path / "out.zarr"
    with pytest.raises(ImportError, match=r"dask_tracking\.gpu\.to_device needs CuPy: install the gpu extra"):
        dt.run(synthetic(2, 2, seed=1), out, gpu=True)
    assert not out.exists()
