"""The object vote bounded per block: same answer for every chunking, the whole-frame rules, graph shape."""

from __future__ import annotations

import time

import dask
import dask.array as da
import numpy as np
import pytest

from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.reassign.nearest import nearest_index
from dask_tracking.reassign.object_vote import (_landed, object_vote, object_vote_chain, propagate_votes,
                                                respect_objects)

SPACING = (0.3, 0.1, 0.1)
CHUNKINGS = [None, (5, 17, 17), (3, 25, 35), ((4, 6), (20, 7, 33), (1, 30, 39))]


def moving_blobs(seed: int, T: int = 5, shape=(10, 60, 70)):
    """Ellipsoids moving 1-3 voxels per frame across the chunk seams; flow rows near each.

    Objects 1 and 2 approach and the segmentation of the last frame merges them into
    one object (a real merge: both identities kept); object 3 is missed at frame 2 (a
    frame of poor segmentation); object 7 appears at frame 3; object ids are shuffled per frame.
    """
    rng = np.random.default_rng(seed)
    n = 9
    centre = rng.uniform([3, 10, 10], [shape[0] - 3, shape[1] - 10, shape[2] - 10], size=(n, 3))
    vel = rng.uniform(-2.5, 2.5, size=(n, 3)) * [0.3, 1, 1]
    centre[1] = [5, 30, 20]
    centre[2] = [5, 30, 50]
    vel[1] = [0, 0, 3.5]
    vel[2] = [0, 0, -3.5]
    radius = rng.uniform(2.5, 4.5, size=n)
    radius[1] = radius[2] = 4.0
    zz, yy, xx = np.indices(shape)
    labels = np.zeros((T,) + shape, np.int32)
    rows = []
    for t in range(T):
        ids = rng.permutation(n) + 1 + 3 * t
        for i in range(n):
            p = centre[i] + vel[i] * t
            m = (((zz - p[0]) * 3) ** 2 + (yy - p[1]) ** 2 + ((xx - p[2]) / 1.4) ** 2) < radius[i] ** 2
            if (i == 3 and t == 2) or (i == 7 and t < 3):
                continue
            labels[t][m] = ids[1] if (i == 2 and t == T - 1) else ids[i]
            if t < T - 1 and i != 8:                     # object 8 has no flow rows: nearest rows are far
                for _ in range(4):
                    q = np.clip(np.rint(p + rng.normal(0, 1, 3) * [0.5, 1.5, 1.5]), 0, np.array(shape) - 1)
                    rows.append([t, *q, *np.rint(vel[i] + rng.normal(0, 0.4, 3)), 0.0])
    rows = np.array(rows)
    return labels, FlowTable([rows[rows[:, 0] == t] for t in range(T - 1)], 3, T)


def chunked(labels, chunks):
    if chunks is None:
        return da.from_array(labels, chunks=(1,) + labels.shape[1:])
    if isinstance(chunks[0], tuple):
        return da.from_array(labels, chunks=((1,) * labels.shape[0],) + chunks)
    return da.from_array(labels, chunks=(1,) + chunks)


def whole_frame_chain(labels, flow, spacing, *, split_share=0.3, near_radius_um=2.0, memory=True):
    """The chain written frame by frame with the whole-frame NumPy functions (the reference)."""
    out = np.zeros(labels.shape, np.int32)
    out[0] = labels[0]
    next_id = int(labels[0].max()) + 1
    ghost = None
    for t in range(labels.shape[0] - 1):
        src = out[t].copy()
        if ghost is not None:
            src[src == 0] = ghost[src == 0]
        rows = flow.pairs[t]
        votes = propagate_votes(src, rows, labels.shape[1:], spacing)
        landed = _landed(src, rows, labels.shape[1:], spacing)
        res = object_vote(votes, labels[t + 1], split_share=split_share, landed=landed, spacing=spacing,
                          near_radius_um=near_radius_um)
        orphans = np.unique(labels[t + 1][(labels[t + 1] > 0) & (res == 0)])
        for i, o in enumerate(orphans):
            res[labels[t + 1] == o] = next_id + i
        next_id += len(orphans)
        out[t + 1] = res
        lost = np.setdiff1d(np.unique(out[t][out[t] > 0]), np.unique(res))
        ghost = np.where(np.isin(votes, lost), votes, 0) if memory else None
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_chain_is_the_same_for_every_chunking_and_equals_the_whole_frame_rules(seed):
    labels, flow = moving_blobs(seed)
    ref = whole_frame_chain(labels, flow, SPACING)
    outs = [object_vote_chain(chunked(labels, c), flow, SPACING).compute(scheduler="sync") for c in CHUNKINGS]
    for out in outs:
        np.testing.assert_array_equal(out, ref)
    # the scenario exercises what it should: a kept merge, a fresh identity, the memory
    last = ref[-1][labels[-1] == labels[-1][5, 30, 35]]
    assert len(np.unique(last)) == 2                       # the merged object keeps both identities
    assert ref.max() > labels[0].max()                     # new identities were given
    forgetful = object_vote_chain(chunked(labels, (3, 25, 35)), flow, SPACING, memory=False).compute()
    np.testing.assert_array_equal(forgetful, whole_frame_chain(labels, flow, SPACING, memory=False))
    assert not np.array_equal(forgetful, ref)              # the memory changes the answer here
    assert np.all((ref > 0) == (labels > 0))               # coverage follows the segmentation


def test_start_frame_split_share_and_small_radius_are_chunk_invariant():
    labels, flow = moving_blobs(2)
    kw = dict(start_frame=1, split_share=0.2, near_radius_um=0.35)
    outs = [object_vote_chain(chunked(labels, c), flow, SPACING, **kw).compute(scheduler="sync")
            for c in CHUNKINGS]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    assert not outs[0][0].any() and np.array_equal(outs[0][1], labels[1])


def test_lazy_flow_on_a_local_cluster(local_cluster_client, tmp_path):
    labels, flow = moving_blobs(0, T=4)
    flow.to_zarr(tmp_path / "flow.zarr")
    lazy = FlowTable.from_zarr(tmp_path / "flow.zarr")
    assert lazy.is_lazy
    out = object_vote_chain(chunked(labels, (5, 25, 40)), lazy, SPACING, max_displacement_um=0.5)
    got = local_cluster_client.compute(out).result()
    np.testing.assert_array_equal(got, whole_frame_chain(labels, flow, SPACING))
    assert out.chunks[1:] == ((5, 5), (25, 25, 10), (40, 30))


def test_flow_beyond_the_bound_raises_at_compute_time():
    labels, flow = moving_blobs(0, T=3)
    # a lazy table recording a gate its vectors (2-3 voxels * 0.1 um) exceed; building is fine
    tight = FlowTable([dask.delayed(np.asarray)(p) for p in flow.pairs], 3, 3, {"gate_radius_um": 0.15})
    out = object_vote_chain(chunked(labels, (5, 17, 17)), tight, SPACING)
    with pytest.raises(InputError, match=r"beyond the object vote's bound of 0\.5 voxels on that axis "
                                         r"\(bound per axis \(0\.5, 1\.5, 1\.5\) voxels.*max_displacement_um"):
        out.compute(scheduler="sync")
    out = object_vote_chain(chunked(labels, (5, 17, 17)), flow, SPACING, max_displacement_um=0.15)
    with pytest.raises(InputError, match=r"flow row \d+ of pair 0 moves [\d.]+ voxels along spatial axis"):
        out.compute(scheduler="sync")


def test_graph_on_a_huge_lazy_input_is_fast_and_local():
    T = 4
    labels = da.zeros((T, 64, 4096, 4096), chunks=(1, 32, 256, 256), dtype=np.int32)
    rows = [dask.delayed(np.zeros)((0, 8)) for _ in range(T - 1)]
    flow = FlowTable(rows, 3, T, {"gate_radius_um": 0.5})
    t0 = time.perf_counter()
    out = object_vote_chain(labels, flow, (0.25, 0.0655, 0.0655))
    graph = out.__dask_graph__()
    built = time.perf_counter() - t0
    assert built < 20, built
    assert out.shape == labels.shape and out.chunks == labels.chunks and out.dtype == np.int32
    layer = graph.layers[out.name]
    names = {labels.name}
    known = set(layer.keys())

    def deps(task):
        found = []
        stack = [task]
        while stack:
            x = stack.pop()
            if isinstance(x, tuple) and x and isinstance(x[0], str) and (x in known or x[0] in names):
                found.append(x)
            elif isinstance(x, (tuple, list)):
                stack.extend(x)
        return found

    n_block = 0
    for key, task in layer.items():
        kind = key[0].split("-")[1] if key[0].startswith("objvote-") else "out"
        if kind not in ("vote", "ident"):
            continue
        if len(key) != 5:                                     # (name, t, z, y, x)
            continue
        t, b = key[1], np.array(key[2:])
        for d in deps(task):
            if d[0].startswith("objvote-decide") or d[0].startswith("objvote-pick"):
                continue
            assert d[1] in (t - 1, t), (key, d)               # this frame or the one before
            assert np.abs(np.array(d[2:]) - b).max() <= 1, (key, d)   # neighbouring blocks only
        n_block += 1
    assert n_block == 2 * (T - 1) * 2 * 16 * 16 + 2 * 16 * 16
    # the per-frame decisions read tables, never arrays
    for key, task in layer.items():
        if key[0].startswith("objvote-decide"):
            assert all(d[0].startswith(("objvote-table", "objvote-next", "objvote-decide")) for d in deps(task))


def test_row_ties_go_to_the_row_listed_first_and_voxel_ties_to_the_smaller_identity():
    ident = np.zeros((1, 9), np.int32)
    ident[0, 4] = 7
    a = [0, 0, 3, 0, 2, 0.0]                                 # start x=3: moves +2
    b = [0, 0, 5, 0, -3, 0.0]                                # start x=5 (same distance): moves -3
    assert propagate_votes(ident, np.array([a, b]), (1, 9), (1, 1))[0, 6] == 7
    assert propagate_votes(ident, np.array([b, a]), (1, 9), (1, 1))[0, 1] == 7
    got = nearest_index(np.array([[0, 2], [0, 6]]), np.array([[0, 4]]), (1, 1), np.array([9, 3]))
    assert got.tolist() == [1]


def test_object_vote_keeps_merges_without_leaks_from_neighbours_and_bounds_the_radius():
    objects = np.zeros((1, 6, 40), np.int32)
    objects[0, 1:5, 1:30] = 1                                # a long object ...
    objects[0, 1:5, 31:39] = 2                               # ... beside a neighbour
    votes = np.zeros_like(objects)
    votes[0, 1:5, 1:4] = 10                                  # a kept second identity at one end
    votes[0, 1:5, 20:30] = 20                                # the majority at the other end
    votes[0, 1:5, 31:39] = 30
    out = object_vote(votes, objects, split_share=0.2)
    assert out[0, 2, 5] == 10 and out[0, 2, 18] == 20      # nearest voted voxel of the same object
    assert out[0, 2, 29] == 20                              # not 30: the neighbour's votes do not count
    near = object_vote(votes, objects, split_share=0.2, near_radius_um=3)
    assert near[0, 2, 6] == 10 and near[0, 2, 10] == 20     # beyond 3 voxels: the majority
    lazy = respect_objects(da.from_array(np.stack([votes, votes])[:, 0], chunks=(1, 3, 7)),
                           da.from_array(np.stack([objects, objects])[:, 0], chunks=(1, 3, 7)),
                           split_share=0.2, near_radius_um=3)
    assert lazy.chunks == ((1, 1), (3, 3), (7,) * 5 + (5,))
    np.testing.assert_array_equal(lazy.compute()[1], near[0])


def test_errors_name_argument_value_and_what_is_allowed():
    labels, flow = moving_blobs(0, T=3)
    with pytest.raises(InputError, match=r"near_radius_um must be a finite number > 0 \(um\), got -1"):
        object_vote_chain(labels, flow, SPACING, near_radius_um=-1)
    with pytest.raises(InputError, match=r"max_displacement_um must be a finite number >= 0 \(um\), got 'x'"):
        object_vote_chain(labels, flow, SPACING, max_displacement_um="x")
    with pytest.raises(InputError, match=r"spacing must be 3 finite numbers > 0 \(um per voxel\), got \(0.1, 0.1\)"):
        object_vote_chain(labels, flow, (0.1, 0.1))
    with pytest.raises(InputError, match="labels must have an integer dtype, got float64"):
        object_vote_chain(labels.astype(float), flow, SPACING)
    with pytest.raises(InputError, match=r"start_frame must be an integer in \[0, 2\], got 3"):
        object_vote_chain(labels, flow, SPACING, start_frame=3)
    with pytest.raises(InputError, match="flow must be a FlowTable, got ndarray"):
        object_vote_chain(labels, np.zeros((0, 8)), SPACING)
    with pytest.raises(InputError, match=r"near_radius_um must be a finite number > 0 \(um\) or None"):
        object_vote(labels[0], labels[0], near_radius_um=0)
    with pytest.raises(InputError, match="reassigned and labels must have one shape"):
        respect_objects(labels[:2], labels)


def test_2d_bars_crossing_seams_are_chunk_invariant():
    # two bars 2 voxels apart move right by 3 voxels per frame; one row points into the other bar
    # and carries half of the top bar there: a split object across the seams
    T, shape = 5, (12, 40)
    labels = np.zeros((T,) + shape, np.int32)
    rows = []
    for t in range(T):
        labels[t, 2:5, 3 + 3 * t:13 + 3 * t] = 1 if t % 2 == 0 else 2
        labels[t, 7:10, 3 + 3 * t:13 + 3 * t] = 2 if t % 2 == 0 else 1
        if t < T - 1:
            for y, x in [(3, 4 + 3 * t), (3, 10 + 3 * t), (8, 4 + 3 * t), (8, 12 + 3 * t)]:
                rows.append([t, y, x, 0, 3, 0.0])
    rows = np.array(rows, float)
    rows[1, 3] = 5
    flow = FlowTable([rows[rows[:, 0] == t] for t in range(T - 1)], 2, T)
    ref = whole_frame_chain(labels, flow, (0.1, 0.1), split_share=0.1)
    for chunks in [(5, 7), ((4, 8), (13, 27)), (1, 40)]:
        lab = da.from_array(labels, chunks=((1,) * T,) + (chunks if isinstance(chunks[0], tuple) else
                                                          tuple((c,) * (n // c) + ((n % c,) if n % c else ())
                                                                for c, n in zip(chunks, shape))))
        np.testing.assert_array_equal(object_vote_chain(lab, flow, (0.1, 0.1), split_share=0.1).compute(), ref)
    assert set(np.unique(ref[:, 2:5])) == {0, 1}           # the top bar keeps its identity
    assert set(np.unique(ref[1, 7:10])) == {0, 1, 2}       # the wrong row's half is a kept second identity


def test_respect_objects_is_the_same_for_every_chunking():
    labels, flow = moving_blobs(1, T=3)
    votes = np.roll(labels, 3, axis=3)                      # a voxel vote that leaks into neighbours
    ref = np.stack([object_vote(votes[t], labels[t], split_share=0.1, spacing=SPACING, near_radius_um=0.5)
                    for t in range(3)])
    assert any(len(np.unique(ref[t][labels[t] == o])) > 1 for t in range(3) for o in np.unique(labels[t])[1:])
    for c in CHUNKINGS:
        got = respect_objects(chunked(votes, c), chunked(labels, c), split_share=0.1, spacing=SPACING,
                              near_radius_um=0.5).compute(scheduler="sync")
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("reader", ["chunk files", "dask from_zarr"])
def test_stored_labels_are_read_inside_the_chain_tasks(tmp_path, reader):
    """Labels stored on disk: no task of the chain waits on a labels chunk task (each task
    reads the chunks it uses, so a frame's chunks are not held from its votes to its
    decision), and the chain equals the one on the same labels in memory."""
    import zarr

    from dask_tracking.io.chunk_files import from_zarr

    labels, flow = moving_blobs(0)
    z = zarr.open_group(str(tmp_path / "l.zarr"), mode="w").create_array(
        "labels", shape=labels.shape, chunks=(1, 10, 25, 35), dtype=labels.dtype)
    z[...] = labels
    stored = from_zarr(z) if reader == "chunk files" else da.from_zarr(z)
    out = object_vote_chain(stored, flow, SPACING)
    graph = dict(out.__dask_graph__())
    keys = set(dask.core.flatten(out.__dask_keys__()))
    needed, todo = set(), list(keys)
    while todo:
        key = todo.pop()
        if key in needed:
            continue
        needed.add(key)
        todo.extend(dask.core.get_dependencies(graph, key))
    chunk_keys = [k for k in needed if isinstance(k, tuple) and k[0] == stored.name]
    assert not chunk_keys
    np.testing.assert_array_equal(out.compute(scheduler="threads"),
                                  object_vote_chain(chunked(labels, (10, 25, 35)), flow, SPACING).compute())
