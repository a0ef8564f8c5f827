"""Each stage on CuPy chunks (``dask_tracking.gpu.to_device``) against the NumPy path.

Compat mode must give identical flow rows, labels and tracks; the default mode too:
every GPU kernel here either runs the host's float64 arithmetic (the regions are
moved to the host where a stage needs host code) or, for the neighbour search,
computes the same squared distances in the same axis order (no fused multiply-add)
and the same neighbour sets, with ties ordered by index (cKDTree: by its tree; the
default mode sorts neighbours by (distance, index) so the order does not matter).
"""

from __future__ import annotations

import dask
import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.backend import ball_counts, brute_nearest, nearest_neighbour
from dask_tracking.datasets import synthetic
from dask_tracking.gpu import array_to_host, device_summary, to_device, to_host

CHUNKS = [None, (5, 50, 70)]


@pytest.fixture(scope="module")
def movie():
    return synthetic(3, 4, seed=3, n_objects=6)


def _cupy():
    import cupy

    return cupy


def _single(**kw):
    return dask.config.set(scheduler="threads", num_workers=2, **kw)


def test_to_device_keeps_shape_chunks_and_values(movie):
    cp = _cupy()
    ds = movie.rechunk((5, 50, 70))
    g = to_device(ds)
    for name, a in g.arrays().items():
        b = getattr(ds, name)
        assert isinstance(a._meta, cp.ndarray), name
        assert a.chunks == b.chunks and a.dtype == b.dtype
    block = g.labels.blocks[1, 0, 1, 1].compute()
    assert isinstance(block, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(block), ds.labels.blocks[1, 0, 1, 1].compute())
    back = to_host(g)
    assert isinstance(back.raw._meta, np.ndarray)
    np.testing.assert_array_equal(back.raw.compute(), ds.raw.compute())
    assert to_device(g).labels is g.labels
    assert array_to_host(g.distance).dtype == ds.distance.dtype
    info = device_summary()
    assert info["devices"] and info["devices"][0]["total_memory"] > 2**30


@pytest.mark.parametrize("k", [1, 6, 20])
def test_gpu_search_equals_host(k):
    cp = _cupy()
    rng = np.random.default_rng(k)
    p = rng.uniform(0, 10, (3000, 3))
    q = rng.uniform(0, 10, (20000, 3))
    d, i = nearest_neighbour(p, q, k, distance_upper_bound=0.6)
    gd, gi = nearest_neighbour(cp.asarray(p), cp.asarray(q), k, distance_upper_bound=0.6)
    assert isinstance(gd, cp.ndarray) and isinstance(gi, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(gd), d)
    np.testing.assert_array_equal(cp.asnumpy(gi), i)
    # small blocks (bounded memory) give the same answer
    bd, bi = brute_nearest(cp.asarray(p), cp.asarray(q), k, distance_upper_bound=0.6, block_bytes=8 * 3000 * 333)
    np.testing.assert_array_equal(cp.asnumpy(bi), i)
    q[::7] = np.nan
    np.testing.assert_array_equal(cp.asnumpy(ball_counts(p, cp.asarray(q), 0.4)), ball_counts(p, q, 0.4))


@pytest.mark.parametrize("k", [1, 4, 16])
def test_cuda_kernel_equals_array_brute_force_with_ties(k):
    cp = _cupy()
    from scipy.spatial import cKDTree

    from dask_tracking.backend import brute_ball_counts, cuda_ball_counts, cuda_nearest

    rng = np.random.default_rng(10 + k)
    sp = np.array([0.25, 0.0655, 0.0655])
    p = rng.integers(0, 12, (800, 3)) * sp  # a voxel grid: many equal distances and duplicates
    q = rng.integers(0, 12, (5000, 3)) * sp + rng.choice([0.0, 0.5], (5000, 1)) * sp
    gp, gq = cp.asarray(p), cp.asarray(q)
    kd, ki = cuda_nearest(gp, gq, k, distance_upper_bound=0.3)
    bd, bi = brute_nearest(gp, gq, k, distance_upper_bound=0.3)
    np.testing.assert_array_equal(cp.asnumpy(kd), cp.asnumpy(bd))
    np.testing.assert_array_equal(cp.asnumpy(ki), cp.asnumpy(bi))  # (distance, index) order
    wd, _ = cKDTree(p).query(q, k=k, distance_upper_bound=0.3)
    np.testing.assert_array_equal(cp.asnumpy(kd).reshape(wd.shape), wd)  # same distances as cKDTree
    np.testing.assert_array_equal(cp.asnumpy(cuda_ball_counts(gp, gq, 0.2)),
                                  cp.asnumpy(brute_ball_counts(gp, gq, 0.2)))


@pytest.mark.parametrize("compat", [None, "nellie"])
@pytest.mark.parametrize("chunks", CHUNKS)
def test_flow_equals_cpu(movie, compat, chunks):
    ds = movie if chunks is None else movie.rechunk(chunks)
    with _single():
        want = dt.estimate_flow(ds, compat=compat).to_numpy()
        got = dt.estimate_flow(to_device(ds), compat=compat).to_numpy()
    assert len(want) > 20
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_tracks_equal_cpu(movie, compat):
    with _single():
        flow = dt.estimate_flow(movie, compat=compat).persist()
        want = dt.label_tracks(movie, flow, compat=compat)
        got = dt.label_tracks(to_device(movie.rechunk((5, 50, 70))), flow, compat=compat)
    assert want.data.shape[0] > 100
    np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_reassign_equals_cpu(movie, compat):
    with _single():
        flow = dt.estimate_flow(movie, compat=compat).persist()
        want = dt.reassign_labels(movie, flow, compat=compat)
        got = dt.reassign_labels(to_device(movie.rechunk((5, 50, 70))), flow, compat=compat)
        a = dask.compute(want.labels, want.branches)
        b = dask.compute(array_to_host(got.labels), array_to_host(got.branches))
    assert (a[0] > 0).sum() > 100
    np.testing.assert_array_equal(b[0], a[0])
    np.testing.assert_array_equal(b[1], a[1])


def test_interpolate_lazy_cupy_default_mode_searches_on_gpu(movie):
    cp = _cupy()
    from dask_tracking.interpolate import interpolate_flow

    with _single():
        flow = dt.estimate_flow(movie).persist()
        rows = flow.to_numpy()
        lab = movie.labels[1].compute()
    q = np.argwhere(lab > 0).astype(np.float64)
    want = interpolate_flow(rows, q, 1, spacing=movie.spacing, dt=movie.dt, max_distance_um=0.5)
    got = interpolate_flow(rows, cp.asarray(q), 1, spacing=movie.spacing, dt=movie.dt, max_distance_um=0.5)
    assert isinstance(got, cp.ndarray)
    assert np.isfinite(want).any()
    np.testing.assert_array_equal(cp.asnumpy(got), want)


@pytest.mark.parametrize("how", ["to_device", "gpu=True"])
def test_pipeline_run_on_gpu_chunks(movie, tmp_path, how):
    import zarr

    with _single():
        cpu = dt.run(movie, tmp_path / "cpu.zarr", tracks=True)
        if how == "to_device":
            gpu = dt.run(to_device(movie), tmp_path / "gpu.zarr", tracks=True)
        else:
            gpu = dt.run(movie, tmp_path / "gpu.zarr", tracks=True, gpu=True)
    a, b = zarr.open_group(str(tmp_path / "cpu.zarr"), mode="r"), zarr.open_group(str(tmp_path / "gpu.zarr"), mode="r")
    names = [n for n, _ in a.arrays()]
    assert "labels_reassigned" in names or len(names) >= 2
    for n in names:
        np.testing.assert_array_equal(b[n][...], a[n][...], err_msg=n)
    assert cpu is not None and gpu is not None


def test_cluster_gpu_local_cuda_cluster():
    cp = _cupy()
    import dask.array as da

    session = dt.cluster(kind="gpu")
    try:
        client = session.client
        n = len(client.scheduler_info()["workers"])
        assert n == cp.cuda.runtime.getDeviceCount()
        x = da.from_array(np.arange(1_000_000, dtype=np.float64), chunks=100_000).map_blocks(
            cp.asarray, meta=cp.empty(0))
        assert float(client.compute(x.sum()).result()) == float(np.arange(1_000_000, dtype=np.float64).sum())
    finally:
        session.close()
