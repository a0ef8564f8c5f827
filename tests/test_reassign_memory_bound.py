"""The reassignment's memory does not grow with the number of frames.

A scheduler callback sums the bytes of every reassignment task result held at once
(dask's threaded scheduler keeps a result until its last dependent has run) while the
outputs are written to a zarr store. The same movie cut to 6 and to 12 frames must
peak at about the same size, and the candidates of at most two frame pairs may be
alive at once (the chain over t bounds how far they run ahead).
"""

from __future__ import annotations

import dataclasses

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask.callbacks import Callback

import dask_tracking as dt
from dask_tracking.datasets import synthetic
from dask_tracking.flow.table import FlowTable
from test_reassign import truth_flow


def _nbytes(obj, depth: int = 0) -> int:
    """Bytes of the arrays inside a task result (arrays, containers, dataclasses, KD-trees)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 4 or obj is None or isinstance(obj, (int, float, str, bool)):
        return 0
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(x, depth + 1) for x in obj.values())
    if dataclasses.is_dataclass(obj):
        return sum(_nbytes(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj))
    if hasattr(obj, "query") and hasattr(obj, "indices"):  # cKDTree: its data and permutation
        return obj.data.nbytes + obj.indices.nbytes
    return 0


class AliveResults(Callback):
    """Peak bytes of the reassignment's task results held at once, and the pairs of candidates alive."""

    def __init__(self):
        super().__init__()
        self.peak = 0
        self.max_pairs = 0
        self.max_frames = 0

    def _posttask(self, key, result, dsk, state, id):
        total, pairs, frames = 0, set(), set()
        for k, v in list(state["cache"].items()):
            name = k[0] if isinstance(k, tuple) else str(k)
            if "reassign" not in name:
                continue
            total += _nbytes(v)
            if name.startswith("reassign-cand-"):
                pairs.add(k[1])
            elif name.startswith("reassign-voxels-"):
                frames.add(k[1])
        self.peak = max(self.peak, total)
        self.max_pairs = max(self.max_pairs, len(pairs))
        self.max_frames = max(self.max_frames, len(frames))


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """A synthetic movie whose labels and branches are read from a zarr store (chunks 1 x 12 x 48 x 64)."""
    ds = synthetic(3, 12, shape=(12, 96, 128), seed=5, n_objects=8, chunks=(12, 48, 64))
    g = zarr.open_group(str(tmp_path_factory.mktemp("movie") / "in.zarr"), mode="w")
    stored = {}
    for name in ("labels", "branches"):
        a = getattr(ds, name)
        z = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=(1, 12, 48, 64))
        z[...] = a.compute(scheduler="sync")
        stored[name] = da.from_zarr(z)
    return dataclasses.replace(ds, **stored), truth_flow(ds)


def _peak(ds, flow, frames: int, compat, tmp_path) -> AliveResults:
    sub = ds.isel(t=slice(0, frames))
    sub_flow = FlowTable(list(flow.pairs[:frames - 1]), flow.ndim, frames)
    res = dt.reassign_labels(sub, sub_flow, compat=compat)
    g = zarr.open_group(str(tmp_path / f"out_{frames}_{compat}.zarr"), mode="w")
    targets = [g.create_array(n, shape=a.shape, dtype=a.dtype, chunks=tuple(c[0] for c in a.chunks))
               for n, a in (("labels", res.labels), ("branches", res.branches))]
    cb = AliveResults()
    with cb, dask.config.set(scheduler="threads", num_workers=4):
        da.store([res.labels, res.branches], targets, lock=False)
    assert int((g["labels"][frames - 1] > 0).sum()) > 1000  # the chain reached the last frame
    return cb


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_memory_held_does_not_grow_with_frames(movie, compat, tmp_path):
    ds, flow = movie
    # four threads: idle threads would run ahead of the chain if anything let them. The
    # peak of one run depends on the threads' order (compat: whether two or three frame
    # indexes meet), so each length takes its largest over a few runs
    short = max((_peak(ds, flow, 6, compat, tmp_path) for _ in range(3)), key=lambda r: r.peak)
    long = max((_peak(ds, flow, 12, compat, tmp_path) for _ in range(2)), key=lambda r: r.peak)
    assert short.peak > 0
    # twice the frames, about the same bytes held (growing with the frames would double it)
    assert long.peak <= 1.3 * short.peak, (short.peak, long.peak)
    assert long.max_pairs <= 2, long.max_pairs
    # the input is read as the chain reaches it, not all 12 frames at once: frame t's lists
    # start once frame t-1 is reassigned, t-2 with compat for its frame index (2-3 frames
    # seen, 5-7 with compat; 8 leaves room for the threads' order without hiding a
    # read-ahead of the movie)
    assert long.max_frames <= 8, long.max_frames




@pytest.mark.parametrize("compat", [None, "nellie"])
def test_candidates_of_a_pair_wait_for_the_previous_frame(movie, compat):
    """The look-ahead is one pair on a frame of many blocks: no candidate of pair t can start
    before every vote of frame t (two pairs, and frame t-1, on a frame of a few blocks)."""
    from dask_tracking.reassign.graph import ONE_PAIR_FROM_BLOCKS

    ds, flow = movie
    ds = ds.rechunk((12, 24, 32))  # 4 x 4 blocks
    assert 4 < ONE_PAIR_FROM_BLOCKS <= 16
    res = dt.reassign_labels(ds, flow, compat=compat)
    graph = dict(res.labels.__dask_graph__())
    deps = {key: dask.core.get_dependencies(graph, key) for key in graph}

    def upstream(key):
        seen, todo = set(), [key]
        while todo:
            for d in deps.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    def named(prefix, t):
        return [key for key in graph if isinstance(key, tuple) and str(key[0]).startswith(prefix)
                and key[1] == t]

    T = ds.shape[0]
    for t in range(1, T - 1):
        votes = set(named("reassign-obj-vote-", t)) | set(named("reassign-br-vote-", t))
        assert votes
        for cand in named("reassign-cand-", t):
            assert votes <= upstream(cand), (cand, sorted(votes - upstream(cand))[:3])
        # and not later than needed: no vote of frame t+1 is upstream of pair t's candidates
        later = set(named("reassign-obj-vote-", t + 1))
        assert not (later & upstream(named("reassign-cand-", t)[0]))
    # 2 x 2 blocks: two pairs in flight, the candidates of pair t wait for frame t-1 only
    small = dt.reassign_labels(movie[0], flow, compat=compat)
    graph = dict(small.labels.__dask_graph__())
    deps = {key: dask.core.get_dependencies(graph, key) for key in graph}
    for t in range(2, T - 1):
        cand = named("reassign-cand-", t)[0]
        assert set(named("reassign-obj-vote-", t - 1)) <= upstream(cand)
        assert not (set(named("reassign-obj-vote-", t)) & upstream(cand))


class AlivePredictions(Callback):
    """Most forward-prediction results (one per block) of one pair held at once."""

    def __init__(self):
        super().__init__()
        self.most = 0

    def _posttask(self, key, result, dsk, state, id):
        per_pair: dict = {}
        for k in list(state["cache"]):
            if isinstance(k, tuple) and str(k[0]).startswith("reassign-fwd-"):
                per_pair[k[1]] = per_pair.get(k[1], 0) + 1
        self.most = max([self.most, *per_pair.values()])


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_predictions_alive_are_a_band_of_blocks(movie, compat, tmp_path):
    """On a grid of 8 x 8 blocks the predictions of a frame are not all held at once: the
    predictions of a block wait for the candidates of blocks some rows back."""
    ds, flow = movie
    sub = ds.rechunk((12, 12, 16)).isel(t=slice(0, 4))
    res = dt.reassign_labels(sub, FlowTable(list(flow.pairs[:3]), flow.ndim, 4), compat=compat)
    cb = AlivePredictions()
    with cb, dask.config.set(scheduler="threads", num_workers=4):
        labels = res.labels.compute()
    assert int((labels[3] > 0).sum()) > 1000
    assert 0 < cb.most < 48, cb.most  # 64 blocks a frame; a band of about 35
