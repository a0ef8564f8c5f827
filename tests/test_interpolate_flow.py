"""interpolate_flow: lazy, chunked over query points, Nellie parity, bounded memory."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable


@pytest.fixture(scope="module")
def ref(yeast_reference):
    r = yeast_reference
    return {k: r[k][...] for k in ("flow_vector_array", "interp_coords_t10",
                                   "interp_forward_t10", "interp_backward_t10")}


@pytest.fixture(scope="module")
def table(ref):
    return FlowTable.from_numpy(ref["flow_vector_array"], n_frames=30)


def _as(coords, chunks):
    return coords if chunks is None else da.from_array(coords, chunks=(chunks, 3))


@pytest.mark.parametrize("chunks", [None, -1, 1000, 777])
@pytest.mark.parametrize("forward", [True, False])
def test_compat_matches_nellie_for_any_chunking(ref, table, yeast, chunks, forward):
    got = dt.interpolate_flow(table, _as(ref["interp_coords_t10"], chunks), 10, forward=forward,
                              compat="nellie", scale=yeast)
    if chunks is not None:
        assert isinstance(got, da.Array)
        got = got.compute()
    want = ref["interp_forward_t10" if forward else "interp_backward_t10"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_query_chunking_never_changes_result(ref, yeast, compat):
    coords = ref["interp_coords_t10"].copy()
    coords[5::11] = np.nan
    coords[3::13] += 0.37  # off-grid points too
    flow = ref["flow_vector_array"]  # a plain Nellie array, with spacing and dt given
    kw = dict(compat=compat, spacing=yeast.spacing, dt=yeast.dt)
    whole = dt.interpolate_flow(flow, coords, 10, **kw)
    assert np.isnan(whole[5::11]).all()
    for chunks in (-1, 1, 17, 640, (100, 2000, 3000, 1617)):
        c = da.from_array(coords, chunks=(chunks, 3)) if chunks != 1 else da.from_array(coords[:300], chunks=(1, 3))
        got = dt.interpolate_flow(flow, c, 10, **kw).compute()
        w = whole if chunks != 1 else dt.interpolate_flow(flow, coords[:300], 10, **kw)
        np.testing.assert_array_equal(got, w)
    small = dt.interpolate_flow(flow, coords, 10, chunk_size=500, **kw)  # NumPy path in blocks
    np.testing.assert_array_equal(small, whole)


def test_uniform_flow_is_reproduced_2d():
    # every anchor carries the same vector: any weighted mean is that vector
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 50, size=(40, 2)).round()
    rows = np.column_stack([np.zeros(40), pts, np.full(40, 1.5), np.full(40, -2.0), rng.uniform(-3, 0.5, 40)])
    q = rng.uniform(0, 50, size=(500, 2))
    for compat in (None, "nellie"):
        v = dt.interpolate_flow(rows, q, 0, spacing=(0.2, 0.2), dt=1.0, max_distance_um=2.0, compat=compat)
        ok = ~np.isnan(v[:, 0])
        assert ok.sum() > 400
        np.testing.assert_allclose(v[ok], np.broadcast_to([1.5, -2.0], v[ok].shape), atol=1e-12)
    # no anchors at frame 1 (the last frame): all NaN, shape kept
    v = dt.interpolate_flow(rows, q, 1, spacing=(0.2, 0.2), dt=1.0)
    assert v.shape == (500, 2) and np.isnan(v).all()


def test_errors_name_the_argument(ref):
    flow, c = ref["flow_vector_array"], ref["interp_coords_t10"][:10]
    with pytest.raises(InputError, match="spacing is required"):
        dt.interpolate_flow(flow, c, 3)
    with pytest.raises(InputError, match=r"t must be a frame index in \[0, 29\], got 30"):
        dt.interpolate_flow(flow, c, 30, spacing=(0.25, 0.0655, 0.0655), dt=1.0)
    with pytest.raises(InputError, match=r"coords must be an \(N, 3\)"):
        dt.interpolate_flow(flow, c[:, :2], 3, spacing=(0.25, 0.0655, 0.0655), dt=1.0)
    with pytest.raises(InputError, match="max_distance_um must be a positive number"):
        dt.interpolate_flow(flow, c, 3, spacing=(0.25, 0.0655, 0.0655), dt=1.0, max_distance_um=-1)
    with pytest.raises(InputError, match="chunk_size must be a positive integer"):
        dt.interpolate_flow(flow, c, 3, spacing=(0.25, 0.0655, 0.0655), dt=1.0, chunk_size=0)
    with pytest.raises(InputError, match="flow must be an \\(M, 8\\)"):
        dt.interpolate_flow(np.zeros((4, 5)), c, 3, spacing=(0.25, 0.0655, 0.0655), dt=1.0)


def _boom(block):
    raise AssertionError("a query block was computed while building the graph")


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_graph_on_huge_lazy_input_is_fast_and_lazy(table, yeast, compat):
    huge = da.zeros((10**10, 3), chunks=(10**7, 3)).map_blocks(_boom, dtype=float)
    t0 = time.perf_counter()
    out = dt.interpolate_flow(table, huge, 10, compat=compat, scale=yeast)
    assert time.perf_counter() - t0 < 2.0
    assert out.shape == (10**10, 3) and out.chunks[0] == huge.chunks[0]


def test_big_run_on_memory_limited_cluster(table, yeast):
    from distributed import Client, LocalCluster

    n = 2_000_000  # 48 MB of query points in 8 chunks; workers limited to 700 MiB
    rng = da.random.default_rng(3)
    coords = rng.uniform(0, 1, size=(n, 3), chunks=(n // 8, 3)) * np.array(yeast.spatial_shape)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="700MiB") as cluster, Client(cluster):
        v = dt.interpolate_flow(table, coords, 10, compat="nellie", scale=yeast)
        n_ok, mean = da.compute((~da.isnan(v[:, 0])).sum(), da.nanmean(v, axis=0))
    assert 0.05 * n < n_ok < n
    assert np.all(np.abs(mean) < 2.0)
