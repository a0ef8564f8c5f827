"""The flow stage's memory is bounded by a block: nothing it holds grows with the frame.

``estimate_flow`` reads stored chunks inside the tasks that use them
(:mod:`dask_tracking.reads`), so the scheduler never keeps an input chunk between the
scan of a frame and its features; what it does keep per block (distance faces, ROI
rings, marker lists) is small. Measured with a dask callback that adds up the sizes of
the results the scheduler holds after every task.
"""

from __future__ import annotations

import numpy as np
import pytest
from dask._task_spec import DataNode
from dask.callbacks import Callback
from dask.sizeof import sizeof
from dask.utils import key_split

import dask_tracking as dt
from dask_tracking.dataset import TrackingDataset
from dask_tracking.datasets import synthetic
from dask_tracking.io.zarr_layout import write_tracking_zarr
from dask_tracking.reads import ChunkRead, ChunkReads, resolve

CHUNKS = (12, 32, 32)


class HeldBytes(Callback):
    """Peak bytes of task results held by the scheduler, per graph layer (name prefix)."""

    def __init__(self):
        super().__init__()
        self.size: dict = {}
        self.peak: dict[str, int] = {}

    def _posttask(self, key, result, dsk, state, worker_id):
        self.size[key] = sizeof(result)
        self.size = {k: v for k, v in self.size.items() if k in state["cache"]}
        now: dict[str, int] = {}
        for k, v in self.size.items():
            name = key_split(k)
            now[name] = now.get(name, 0) + v
        for name, v in now.items():
            self.peak[name] = max(self.peak.get(name, 0), v)


def _tiled(ds: TrackingDataset, reps: int) -> TrackingDataset:
    """The movie tiled ``reps`` times along X: a wider frame with the same content per block."""
    arrays = {n: np.tile(np.asarray(a), (1, 1, 1, reps)) for n, a in ds.arrays().items()}
    return TrackingDataset.from_arrays(arrays, ds.scale, spatial_chunks=CHUNKS)


@pytest.fixture(scope="module")
def movie():
    return synthetic(ndim=3, n_frames=3, shape=(12, 64, 96), seed=3)


@pytest.fixture(scope="module")
def stored(movie, tmp_path_factory):
    """The movie tiled 1x and 2x along X, written to zarr with (12, 32, 32) chunks."""
    out = {}
    for reps in (1, 2):
        path = tmp_path_factory.mktemp("flowmem") / f"tiles{reps}.zarr"
        write_tracking_zarr(_tiled(movie, reps), path)
        out[reps] = dt.open_dataset(path)
    return out


def _held(ds, **kw):
    cb = HeldBytes()
    with cb:
        rows = dt.estimate_flow(ds, **kw).to_numpy(scheduler="sync")
    return rows, cb.peak


def _chunk_bytes(ds) -> int:
    return sum(int(np.prod(CHUNKS)) * getattr(ds, n).dtype.itemsize
               for n in ("raw", "preprocessed", "distance", "markers"))


def test_stored_chunks_read_by_their_tasks(stored):
    ds = stored[1]
    reads = ChunkReads(ds.preprocessed)
    assert reads.inline
    node = reads.node((ds.preprocessed.name, 0, 0, 1, 2))
    graph = dict(ds.preprocessed.__dask_graph__())
    (dep,) = node.dependencies       # the stored array, not a chunk key
    stored_array = graph[dep]() if isinstance(graph[dep], DataNode) else graph[dep]
    read = node({dep: stored_array})  # what the consuming task gets: a read, done when asked
    assert isinstance(read, ChunkRead)
    chunk = resolve(read)
    np.testing.assert_array_equal(chunk, np.asarray(ds.preprocessed[0:1, 0:12, 32:64, 64:96]))
    # chunks computed upstream stay shared keys
    assert not ChunkReads(ds.preprocessed + 1).inline
    assert not ChunkReads(ds.preprocessed.rechunk((1, 12, 64, 64))).inline


def test_time_slices_of_stored_chunks_are_read_by_their_tasks(stored):
    """``ds.isel(t=...)`` (as run's windows of frames do) keeps the reads inside the tasks."""
    ds = stored[1]
    for sliced, t in ((ds.isel(t=slice(1, 3)), 1), (ds.isel(t=slice(1, 3)).isel(t=slice(1, 2)), 0)):
        reads = ChunkReads(sliced.preprocessed)
        assert reads.inline
        node = reads.node((sliced.preprocessed.name, t, 0, 1, 2))
        graph = dict(sliced.preprocessed.__dask_graph__())
        (dep,) = node.dependencies
        stored_array = graph[dep]() if isinstance(graph[dep], DataNode) else graph[dep]
        read = node({dep: stored_array})
        assert isinstance(read, ChunkRead)
        np.testing.assert_array_equal(resolve(read), np.asarray(ds.preprocessed[2:3, 0:12, 32:64, 64:96]))
    # a slice that is not whole chunks is computed: a shared key
    assert not ChunkReads(ds.preprocessed[:, :, 3:40]).inline


@pytest.mark.parametrize("compat", ["nellie", None])
def test_flow_graph_has_no_shared_input_chunks(stored, compat):
    ds = stored[2]
    table = dt.estimate_flow(ds, compat=compat)   # None: with the refinement's window reads
    graph = dict(table.pairs[0].__dask_graph__())
    chunk_layers = {getattr(ds, n).name for n in ("raw", "preprocessed", "distance", "markers")}
    used = set().union(*(getattr(v, "dependencies", ()) for v in graph.values()))
    assert not {k for k in used if isinstance(k, tuple) and k[0] in chunk_layers}
    assert any(str(k).startswith("original-") for k in used)   # the stored arrays, read in tasks


@pytest.mark.parametrize("kw", [{"compat": "nellie"}, {"refine": False, "one_to_one": False}, {}],
                         ids=["compat", "matching-only", "default-refined"])
def test_held_bytes_do_not_grow_with_the_frame(movie, stored, kw):
    rows1, peak1 = _held(stored[1], **kw)
    rows2, peak2 = _held(stored[2], **kw)
    # same rows as the whole-frame computation in memory (chunk reads, faces and rings
    # across seams give the same features)
    want = dt.estimate_flow(movie, **kw).to_numpy(scheduler="sync")
    np.testing.assert_array_equal(rows1, want)
    assert len(rows2) == 2 * len(rows1)
    # no stored chunk is ever held by the scheduler, whatever the frame size
    for peak in (peak1, peak2):
        assert {n: v for n, v in peak.items() if n.startswith("from-zarr") and v} == {}
    # what it holds per block (marker lists, the one-voxel distance faces of the core,
    # ROI rings) stays far below one block of input, and grows no faster than the
    # frame's content (here: twice the markers)
    per_block = ("flow-scan", "flow-radii", "flow-ring", "flow-features")
    total1 = sum(v for n, v in peak1.items() if n in per_block)
    total2 = sum(v for n, v in peak2.items() if n in per_block)
    assert 0 < total2 < _chunk_bytes(stored[2]) / 2
    assert total2 <= 2.2 * total1


def test_chunk_reads_on_a_distributed_cluster(movie, stored, local_cluster_client):
    """Stored chunks read inside the tasks of a 2-worker LocalCluster: the in-memory rows."""
    want = dt.estimate_flow(_tiled(movie, 2), compat="nellie").to_numpy(scheduler="sync")
    out = dt.estimate_flow(stored[2], compat="nellie").to_numpy()   # the client's scheduler
    np.testing.assert_array_equal(out, want)


# ------------------------------------------------- compat matching, no N x M matrix
def test_sparse_pairwise_sum_is_numpys_dense_sum():
    from scipy.spatial.distance import cdist

    from dask_tracking.flow.matching import _pairwise_sum_sparse

    rng = np.random.default_rng(4)
    for n, m, radius, block in [(700, 900, 1.0, 1 << 18), (333, 517, 2.5, 128), (3, 2, 9.0, 1 << 18),
                                (1500, 1400, 0.7, 4096)]:
        qa, qb = rng.random((n, 3)) * 10, rng.random((m, 3)) * 10
        dist = cdist(qa, qb)
        mask = dist < radius
        dense = (dist * mask)[..., None]                      # Nellie's masked (N, M, 1) matrix
        i, j = np.nonzero(mask)
        got = _pairwise_sum_sparse(i * m + j, dist[i, j], n * m, block=block)
        assert np.float64(got).tobytes() == np.sum(dense, axis=(0, 1))[0].tobytes()


@pytest.mark.parametrize("compat, bound", [(True, 3000 * 3000 * 8 // 4), (False, 8 << 20)],
                         ids=["compat", "fixed"])
def test_matching_memory_does_not_grow_with_markers_squared(compat, bound, traced_peak):
    """Dense path, 3,000 markers a frame: compat holds the gated pairs only (an N x M float64
    matrix would be 72 MB); the fixed method's pair search holds one block of at most 2**17
    pairs (its (N, M, 3) differences would be 216 MB)."""
    from dask_tracking.flow.features import FrameFeatures
    from dask_tracking.flow.matching import match_frames

    rng = np.random.default_rng(6)
    n = 3000

    def frame():
        return FrameFeatures(rng.integers(0, 400, (n, 3)).astype(np.int64),
                             rng.random((n, 4)).astype(np.float32), rng.standard_normal((n, 18)))

    post, pre = frame(), frame()
    (i, j, c), peak = traced_peak(match_frames, post, pre, spacing=(0.25, 0.1, 0.1), radius_um=1.0,
                                  compat=compat, mode="dense", max_dense_pairs=n * n)
    assert len(i) > 0
    assert peak < bound


# ------------------------------------------- fixed-method matching: the brute-force pair search
@pytest.mark.parametrize("block", [1 << 17, 1000, 7, 1])
def test_dense_pair_search_is_the_ball_query_in_any_block(block):
    from scipy.spatial import cKDTree

    from dask_tracking.flow.matching import _pairs_within

    rng = np.random.default_rng(9)
    for n, m, d in [(900, 700, 3), (50, 80, 2), (1, 1, 3), (40, 0, 3)]:
        qa, qb = rng.random((n, d)) * 12, rng.random((m, d)) * 12
        k = min(n, m, 5)
        qb[:k] = qa[:k] + np.eye(d)[0]                        # pairs exactly at the radius
        i, j = _pairs_within(qa, qb, 1.0, block_pairs=block)
        lists = cKDTree(qb).query_ball_point(qa, 1.0 * (1 + 1e-9)) if m else [[] for _ in qa]
        want_i = np.repeat(np.arange(n), [len(x) for x in lists])
        want_j = np.array([v for x in lists for v in sorted(x)], np.int64)
        assert i.dtype == j.dtype == np.int64
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_array_equal(j, want_j)
        assert all(np.any((i == a) & (j == a)) for a in range(k))
