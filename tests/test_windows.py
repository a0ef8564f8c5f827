"""Windows of frames: the label chains computed one bounded graph at a time give the bits of one graph.

``run(window_frames=...)`` on the real yeast sample (both modes, Nellie's break across a window
end, resume from a window end), the chains' own window entry points (``reassign_labels`` with
``initial`` + ``id_base``, ``object_vote_window`` with the carried votes), the window rule and
the error texts.
"""

from __future__ import annotations

import shutil

import dask
import numpy as np
import pytest
import zarr

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.reassign.object_vote import object_vote_chain, object_vote_window
from dask_tracking.windows import MIN_WINDOW_FRAMES, WINDOW_BLOCK_FRAMES, ChainState, window_frames

from test_object_vote import CHUNKINGS, SPACING, chunked, moving_blobs

N = 10


def stores_equal(a, b) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for name in ("flow", "labels_reassigned", "branches_reassigned", "frames_done"):
        np.testing.assert_array_equal(ga[name][...], gb[name][...], err_msg=name)
    ka, kb = sorted(ga["voxel_matches"].array_keys()), sorted(gb["voxel_matches"].array_keys())
    assert ka == kb
    for k in ka:
        za, zb = ga[f"voxel_matches/{k}"], gb[f"voxel_matches/{k}"]
        np.testing.assert_array_equal(za[...], zb[...], err_msg=f"voxel_matches/{k}")
        assert za.attrs["stopped"] == zb.attrs["stopped"]
    assert ga.attrs["labelled_voxels"] == gb.attrs["labelled_voxels"]


def run(ds, out, **kw):
    with dask.config.set(scheduler="threads", num_workers=2):
        return dt.run(ds, out, overwrite=True, **kw)


# ------------------------------------------------------------------------------ the rule
def test_window_rule():
    assert window_frames(1000, 54) == -(-WINDOW_BLOCK_FRAMES // 54)        # about 2,048 frame-blocks
    assert window_frames(1000, 10_000) == MIN_WINDOW_FRAMES               # huge frames: still a few
    assert window_frames(30, 2) == 30                                     # a short movie: one window
    assert window_frames(30, 2, 7) == 7 and window_frames(5, 2, 7) == 5
    for bad in (1, 0, -3, 2.5, "4", True):
        with pytest.raises(InputError, match=rf"window_frames must be an integer >= 2 \(frames per window\) "
                                             rf"or None, got {bad!r}"):
            window_frames(30, 2, bad)


# ------------------------------------------------------------------- the whole run, windows
@pytest.fixture(scope="module")
def one_graph(tmp_path_factory, yeast):
    """Uninterrupted runs of the first N frames in one window, both modes."""
    base = tmp_path_factory.mktemp("windows")
    out = {}
    for compat in (None, "nellie"):
        p = base / f"one_{compat}.zarr"
        res = run(yeast.isel(t=slice(0, N)), p, compat=compat, window_frames=N)
        assert res.frames_computed == tuple(range(N))
        assert "chain_state" not in zarr.open_group(str(p), mode="r").attrs     # one window: no state
        out[compat] = p
    return out


@pytest.mark.parametrize("compat,window", [(None, 3), (None, 4), ("nellie", 3), ("nellie", 6)])
def test_windows_give_the_output_of_one_graph(tmp_path, yeast, one_graph, compat, window):
    out = tmp_path / "win.zarr"
    res = run(yeast.isel(t=slice(0, N)), out, compat=compat, window_frames=window)
    assert res.frames_computed == tuple(range(N))
    stores_equal(out, one_graph[compat])
    state = ChainState.load(zarr.open_group(str(out), mode="r"))
    # the last window ends at frame N-1; the state is that of the end of the one before
    ends = list(range(window - 1, N - 1, window - 1))
    assert state is not None and state.frame == ends[-1]
    if compat is None:      # default mode: new-id bases and the object vote's state are carried
        assert state.id_base is not None and state.next_id is not None and state.ghosts is not None
        g = zarr.open_group(str(out), mode="r")
        assert sorted(g["chain_state"].array_keys()) == [f"ghosts_{state.frame}"]   # older ones dropped
    else:
        assert state.id_base is None and state.next_id is None and not state.stopped


def test_windows_on_a_local_cluster(tmp_path, yeast, one_graph, local_cluster_client):
    """The windows' state (new-id bases, next identity, carried votes written by the workers)
    crosses processes: a 2-worker LocalCluster gives the one-graph output."""
    out = tmp_path / "cluster.zarr"
    res = dt.run(yeast.isel(t=slice(0, N)), out, window_frames=4, client=local_cluster_client)
    assert res.frames_computed == tuple(range(N))
    stores_equal(out, one_graph[None])
    assert ChainState.load(zarr.open_group(str(out), mode="r")).frame == 6


def test_nellie_break_across_a_window_end(tmp_path, yeast):
    """A frame without labelled voxels stops Nellie's loop; later windows are not computed."""
    n = 8
    arrays = {k: np.asarray(getattr(yeast, k)[:n]) for k in ("raw", "preprocessed", "distance", "markers",
                                                             "labels", "branches")}
    arrays["labels"][5] = 0
    arrays["branches"][5] = 0
    ds = dt.TrackingDataset.from_arrays(arrays, yeast.scale.as_dict(), axes="TZYX")
    flow = dt.estimate_flow(ds, compat="nellie").persist(scheduler="threads")
    one = run(ds, tmp_path / "one.zarr", compat="nellie", flow=flow, window_frames=n)
    win = run(ds, tmp_path / "win.zarr", compat="nellie", flow=flow, window_frames=3)
    stores_equal(tmp_path / "win.zarr", tmp_path / "one.zarr")
    g = zarr.open_group(str(tmp_path / "win.zarr"), mode="r")
    labels = g["labels_reassigned"][...]
    assert labels[:5].any(axis=(1, 2, 3)).all() and not labels[5:].any()       # stopped at pair 4
    assert [bool(g[f"voxel_matches/{t}"].attrs["stopped"]) for t in range(n - 1)] == [False] * 4 + [True] * 3
    assert ChainState.load(g).stopped                                          # frame 7 was not computed
    assert one.labelled_voxels == win.labelled_voxels and win.labelled_voxels[5:] == (0, 0, 0)


def test_resume_starts_at_the_last_window_end(tmp_path, yeast, one_graph):
    full = tmp_path / "full.zarr"
    run(yeast.isel(t=slice(0, N)), full, window_frames=3)
    out = tmp_path / "partial.zarr"
    shutil.copytree(full, out)
    g = zarr.open_group(str(out), mode="r+")
    state = ChainState.load(g)
    assert state.frame == N - 2
    g["frames_done"][N - 1:] = 0                  # as if stopped in the last window
    g["labels_reassigned"][N - 1:] = -1
    g.attrs["status"] = "running"
    with dask.config.set(scheduler="threads", num_workers=2):
        res = dt.run(yeast.isel(t=slice(0, N)), out, resume=True, window_frames=3)
    assert res.resumed and res.frames_computed == (N - 1,)
    stores_equal(out, one_graph[None])


# --------------------------------------------------------------------- the chains' windows
def test_reassign_windows_with_id_base_equal_one_chain(yeast):
    n = 8
    arrays = {k: np.asarray(getattr(yeast, k)[:n]) for k in ("raw", "preprocessed", "distance", "markers",
                                                             "labels", "branches")}
    # an object appears at frame 5 where no flow row is: its voxels get new ids (base_t + own id)
    flow = dt.estimate_flow(yeast.isel(t=slice(0, n))).persist(scheduler="threads")
    arrays["labels"][5:, 2:6, 2:12, 2:12] = 999
    arrays["branches"][5:, 2:6, 2:12, 2:12] = 7
    ds = dt.TrackingDataset.from_arrays(arrays, yeast.scale.as_dict(), axes="TZYX")
    with dask.config.set(scheduler="threads", num_workers=2):
        full = dt.reassign_labels(ds, flow)
        labels, branches = dask.compute(full.labels, full.branches)
        base_full = full.next_id_base.compute()
        out_l, out_b = labels.copy() * 0, branches.copy() * 0
        init, base = None, None
        for a, b in ((0, 3), (3, 4), (4, n - 1)):
            r = dt.reassign_labels(ds.isel(t=slice(a, b + 1)), flow.window(a, b + 1), initial=init,
                                   id_base=base)
            lab, br = dask.compute(r.labels, r.branches)
            base = r.next_id_base.compute()
            out_l[a:b + 1], out_b[a:b + 1] = lab, br
            init = (0, lab[-1], br[-1])
    np.testing.assert_array_equal(out_l, labels)
    np.testing.assert_array_equal(out_b, branches)
    assert base == base_full and base_full[1] > 0
    # new ids were given (after frame 5: the base of frame 5 plus the object's own id)
    base5 = [int(sum(arrays[k][t].max() for t in range(5))) for k in ("labels", "branches")]
    assert labels[5, 3, 5, 5] == base5[0] + 999 and branches[5, 3, 5, 5] == base5[1] + 7
    # without the objects' chain: the same branches, no labels
    r = dt.reassign_labels(ds, flow, objects=False)
    assert r.labels is None
    np.testing.assert_array_equal(r.branches.compute(scheduler="threads"), branches)


@pytest.mark.parametrize("chunks", CHUNKINGS[:3])
@pytest.mark.parametrize("split", [1, 2, 3])
def test_object_vote_windows_carry_the_votes(chunks, split):
    labels, flow = moving_blobs(0)
    T = labels.shape[0]
    ref = object_vote_chain(chunked(labels, chunks), flow, SPACING).compute(scheduler="sync")
    first = object_vote_window(chunked(labels[:split + 1], chunks), flow.window(0, split + 1), SPACING)
    ident, ghosts = dask.compute(first.identities, first.ghosts, scheduler="sync")
    next_id = first.next_id.compute(scheduler="sync")
    if split == 2:      # object 3 is missed at frame 2: its identity's votes are carried past it
        assert ghosts.any()
    second = object_vote_window(chunked(labels[split:], chunks), flow.window(split, T), SPACING,
                                initial=(ident[-1], next_id, ghosts))
    got = np.concatenate([ident, second.identities.compute(scheduler="sync")[1:]])
    np.testing.assert_array_equal(got, ref)
    if split == 2:      # without the carried votes the answer differs: the test can fail
        lost = object_vote_window(chunked(labels[split:], chunks), flow.window(split, T), SPACING,
                                  initial=(ident[-1], next_id, None))
        assert not np.array_equal(lost.identities.compute(scheduler="sync")[1:], ref[split + 1:])


# ---------------------------------------------------------------------------- bad input
def test_window_errors_name_the_argument(tmp_path, yeast):
    labels, flow = moving_blobs(0)
    lab = chunked(labels, None)
    with pytest.raises(InputError, match=r"initial must be a tuple \(identities, next_id, ghosts\)"):
        object_vote_window(lab, flow, SPACING, initial=(labels[0], 3))
    with pytest.raises(InputError, match=r"initial next_id must be an integer >= 1 or None, got 0"):
        object_vote_window(lab, flow, SPACING, initial=(labels[0], 0, None))
    with pytest.raises(InputError, match=r"initial ghosts has shape \(3, 3\); allowed: the spatial shape"):
        object_vote_window(lab, flow, SPACING, initial=(labels[0], 5, np.zeros((3, 3), np.int32)))
    with pytest.raises(InputError, match=r"window must satisfy 0 <= start < stop <= 5 \(frames\), "
                                         r"got start=3, stop=3"):
        flow.window(3, 3)
    ds = yeast.isel(t=slice(0, 3))
    f3 = FlowTable([np.zeros((0, 8))] * 2, 3, 3)
    with pytest.raises(InputError, match="id_base needs initial"):
        dt.reassign_labels(ds, f3, id_base=(1, 2))
    with pytest.raises(InputError, match=r"id_base must be two integers >= 0 \(objects, branches\), got \(1, -2\)"):
        dt.reassign_labels(ds, f3, initial=(0, ds.labels[0], ds.branches[0]), id_base=(1, -2))
    with pytest.raises(InputError, match="objects must be True or False, got 'no'"):
        dt.reassign_labels(ds, f3, objects="no")
    out = tmp_path / "never.zarr"
    with pytest.raises(InputError, match=r"window_frames must be an integer >= 2 .* got 1"):
        dt.run(ds, out, window_frames=1)
    assert not out.exists()                                   # refused before anything is written
