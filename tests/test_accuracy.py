"""Accuracy options: hard scenario, one-to-one assignment, sub-voxel refinement, object vote."""

from __future__ import annotations

import numpy as np
import pytest

from dask_tracking.dataset import InputError
from dask_tracking.datasets import synthetic_hard
from dask_tracking.datasets.hard import _surface_gap
from dask_tracking.evaluate import evaluate
from dask_tracking.flow.assignment import assign_one_to_one, one_to_one_flow
from dask_tracking.flow.refine import refine_flow, refine_vectors
from dask_tracking.flow.table import FlowTable
from dask_tracking.reassign.object_vote import object_vote, object_vote_chain, respect_objects

SMALL = dict(n_frames=3, n_pairs=1, shape=(8, 64, 96), seed=5)


# ------------------------------------------------------------------ hard scenario
def test_hard_scenario_is_hard():
    ds = synthetic_hard(n_frames=4, n_pairs=2, shape=(8, 96, 160), seed=2)
    tr = ds.truth
    g = tr.geometry
    assert tr.n_objects == 4 and ds.scale.x == 0.0655 and ds.scale.z == 0.25
    for p in range(2):                                      # pairs 0.25 um apart
        assert _surface_gap(g, 2 * p, 2 * p + 1) == pytest.approx(0.25, abs=0.03)
    steps = np.linalg.norm((tr.centers(1) - tr.centers(0)) * np.asarray(tr.spacing), axis=1)
    assert steps.max() > 0.5 and steps.max() <= 1.0 + 1e-9   # um per frame
    assert np.abs(tr.rotation_per_frame_deg()).min() >= 3.5
    pre = ds.preprocessed[[0, 3]].compute()
    obj = tr.objects[[0, 3]].compute()
    ratio = pre[1][obj[1] > 0].max() / pre[0][obj[0] > 0].max()
    assert ratio == pytest.approx(0.99 ** 3, rel=0.01)      # 1% bleaching per frame
    lab = ds.labels[0].compute()
    assert lab.max() >= 4                                   # the close pairs are still separate objects
    # the same seed gives the same movie; truth follows the objects
    again = synthetic_hard(n_frames=4, n_pairs=2, shape=(8, 96, 160), seed=2)
    np.testing.assert_array_equal(again.raw[1].compute(), ds.raw[1].compute())


def test_hard_scenario_errors():
    with pytest.raises(InputError, match="bleach must be in"):
        synthetic_hard(bleach=1.0)
    with pytest.raises(InputError, match="too small for n_pairs=9"):
        synthetic_hard(n_pairs=9, shape=(8, 64, 64))
    with pytest.raises(InputError, match="gap_um must be a finite number"):
        synthetic_hard(gap_um=0)


# --------------------------------------------------------------------- assignment
def _row(t, src, vec, cost):
    return [t, *src, *vec, cost]


def test_one_to_one_removes_duplicates_and_extra_partners():
    rows = np.array([
        _row(0, (1, 10, 10), (0, 2, 0), 0.1),    # a -> A (best)
        _row(0, (1, 10, 10), (0, 2, 0), 0.1),    # duplicate
        _row(0, (1, 10, 10), (0, 0, 3), 0.9),    # a -> B (B wanted by b too)
        _row(0, (1, 20, 10), (0, -7, 3), 0.2),   # b -> B
        _row(0, (1, 20, 10), (0, -8, 0), 0.3),   # b -> A (A taken by a)
    ])
    out = assign_one_to_one(rows, 3)
    assert len(out) == 2
    got = {tuple(r[1:4]): tuple(r[4:7]) for r in out}
    assert got == {(1, 10, 10): (0, 2, 0), (1, 20, 10): (0, -7, 3)}


def test_one_to_one_keeps_a_real_split():
    rows = np.array([
        _row(0, (1, 10, 10), (0, 2, 0), 0.1),    # a -> A
        _row(0, (1, 10, 10), (0, -2, 0), 0.3),   # a -> C, nobody else can explain C: a split
        _row(0, (1, 30, 10), (0, 0, 1), 0.1),    # c -> D
    ])
    assert len(assign_one_to_one(rows, 3)) == 3
    assert len(assign_one_to_one(rows, 3, keep_splits=False)) == 2
    assert len(assign_one_to_one(rows, 3, split_margin=0.1)) == 2
    with pytest.raises(InputError, match="rows must have shape"):
        assign_one_to_one(rows[:, :6], 3)
    with pytest.raises(InputError, match="split_margin must be"):
        assign_one_to_one(rows, 3, split_margin=-1)
    table = one_to_one_flow(FlowTable([rows, rows[:0]], 3, 3))
    assert [len(p) for p in table.compute_pairs()] == [3, 0]
    assert table.attrs["assignment"]["keep_splits"] is True


def test_one_to_one_per_part_is_the_whole_pair_optimum():
    """Matching each connected part alone gives the matching of one dense matrix over the pair."""
    from scipy.optimize import linear_sum_assignment

    from dask_tracking.flow.assignment import _match_components

    rng = np.random.default_rng(11)
    for n_s, n_t, n_e in [(60, 50, 90), (200, 220, 600), (5, 1, 5), (1, 7, 7), (40, 40, 40), (300, 280, 2000)]:
        s_of = rng.integers(0, n_s, n_e)
        t_of = rng.integers(0, n_t, n_e)
        cost = rng.standard_normal(n_e)                     # no ties
        matched, best = _match_components(s_of, t_of, cost, n_s, n_t)
        big = np.abs(cost).max() * 4.0 + 1e6
        mat = np.full((n_s, n_t), big)
        np.minimum.at(mat, (s_of, t_of), cost)
        r, c = linear_sum_assignment(mat)
        ok = mat[r, c] < big
        want = np.full(n_s, -1)
        want[r[ok]] = c[ok]
        np.testing.assert_array_equal(matched, want)
        np.testing.assert_array_equal(best[want >= 0], mat[np.flatnonzero(want >= 0), want[want >= 0]])
        assert np.all(np.isinf(best[want < 0]))
        used = matched[matched >= 0]
        assert len(np.unique(used)) == len(used)            # one source per target


def test_one_to_one_memory_does_not_grow_with_the_markers(traced_peak):
    """A pair of 20,000 markers in small parts: no (sources x targets) matrix (9.6 GB here)."""
    rng = np.random.default_rng(12)
    n = 20_000
    src = np.stack([np.zeros(n), np.arange(n) * 10.0, np.zeros(n)], axis=1)
    rows = [np.column_stack([np.zeros(n), src, np.zeros((n, 2)), np.full(n, s), rng.random(n)])
            for s in (0.0, 1.0, 2.0)]                       # each source: three targets nearby
    rows = np.concatenate(rows)
    out, peak = traced_peak(assign_one_to_one, rows, 3)
    assert len(out) >= n
    assert peak < 100 << 20


# --------------------------------------------------------------------- refinement
def _blob(shape, center, sigma=(1.0, 2.0, 2.0), amp=1.0):
    g = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r2 = sum(((gi - c) / s) ** 2 for gi, c, s in zip(g, center, sigma))
    return amp * np.exp(-0.5 * r2)


@pytest.mark.parametrize("shift", [(0.0, 0.3, -0.4), (0.0, -2.6, 1.2), (0.0, 5.4, -6.3)])
def test_refinement_recovers_subvoxel_shift(shift):
    shape = (7, 48, 48)
    c0 = np.array([3.0, 22.0, 23.0])
    a = _blob(shape, c0)
    b = _blob(shape, c0 + shift, amp=0.9)                   # bleached by 10%
    start = np.rint(c0)
    rows = np.array([[0, *start, *np.rint(np.asarray(shift)), 1.0]])   # whole-voxel vector, like Nellie
    out = refine_vectors(rows, a, b, half_window=(1, 4, 4), search=(1, 8, 8))
    np.testing.assert_allclose(out[0, 4:7], shift, atol=0.15)
    assert out[0, 7] == 1.0 and np.all(out[0, :4] == rows[0, :4])
    lazy = refine_flow(FlowTable([rows], 3, 2), np.stack([a, b]), coarse=False, half_window=(1, 4, 4),
                       search=(1, 8, 8), affine=False)
    np.testing.assert_allclose(lazy.compute_pairs()[0], out)
    # with the affine polish (the default) the vector is closer still
    polished = refine_flow(FlowTable([rows], 3, 2), np.stack([a, b]), coarse=False, half_window=(1, 4, 4),
                           search=(1, 8, 8)).compute_pairs()[0]
    np.testing.assert_allclose(polished[0, 4:7], shift, atol=0.05)


def test_refinement_keeps_flat_patches_and_checks_input():
    a = np.zeros((5, 20, 20))
    rows = np.array([[0, 2, 10, 10, 0, 1, 1, 0.0]])
    np.testing.assert_array_equal(refine_vectors(rows, a, a), rows)
    with pytest.raises(InputError, match="one shape"):
        refine_vectors(rows, a, a[:, :10])
    with pytest.raises(InputError, match="search must be"):
        refine_vectors(rows, a, a, search=(1, -1, 2))
    with pytest.raises(InputError, match="image must have shape"):
        refine_flow(FlowTable([rows], 3, 2), a)


# --------------------------------------------------------------------- object vote
def test_object_vote_stops_leaks_and_keeps_merges():
    objects = np.zeros((1, 10, 20), np.int32)
    objects[0, 2:8, 1:9] = 1
    objects[0, 2:8, 11:19] = 2
    votes = np.where(objects > 0, objects * 10, 0)
    votes[0, 2:8, 11:13] = 10                         # identity 10 leaks into object 2 (25% of it)
    votes[0, 2:4, 1:9] = 0                            # part of object 1 got no vote
    out = object_vote(votes, objects, split_share=0.3)
    assert set(np.unique(out[objects == 1])) == {10}  # coverage: unvoted voxels take the identity
    assert set(np.unique(out[objects == 2])) == {20}  # no leak
    assert np.all(out[objects == 0] == 0)
    merged = object_vote(votes, objects, split_share=0.2)   # 25% >= 20%: a real merge, kept
    assert set(np.unique(merged[objects == 2])) == {10, 20}
    lazy = respect_objects(np.stack([votes, votes])[:, 0], np.stack([objects, objects])[:, 0])
    np.testing.assert_array_equal(lazy.compute()[1], out[0])
    with pytest.raises(InputError, match="split_share must be"):
        object_vote(votes, objects, split_share=0)


# ---------------------------------------------------------- default beats compat
def test_accuracy_options_beat_compat_on_small_hard_scenario(tmp_path):
    import dask

    import dask_tracking as dt

    ds = synthetic_hard(**SMALL)
    ds = ds.replace(**{n: v.persist(scheduler="threads") for n, v in ds.arrays().items()})
    with dask.config.set(scheduler="threads", num_workers=2):
        dt.run(ds, tmp_path / "compat.zarr", compat="nellie", tracks=True, track_start_frame=0)
        dt.run(ds, tmp_path / "acc.zarr", tracks=True)                  # the default: options on
        rc = evaluate(tmp_path / "compat.zarr", ds)
        rb = evaluate(tmp_path / "acc.zarr", ds)
    import zarr

    from dask_tracking.accuracy import ACCURACY_OPTIONS

    assert zarr.open_group(str(tmp_path / "acc.zarr"), mode="r").attrs["parameters"]["accuracy"] == \
        list(ACCURACY_OPTIONS)
    assert rc.flow["rows"] > 0 and rb.flow["rows"] > 0
    assert rb.flow["epe_median_um"] < rc.flow["epe_median_um"]
    assert rb.flow["wrong_object_share"] <= rc.flow["wrong_object_share"] + 1e-9
    assert rb.last("labels", "identity_accuracy") >= rc.last("labels", "identity_accuracy")
    assert min(rb.labels["coverage"]) >= 0.98
    assert rb.last("tracks", "alive_share") >= rc.last("tracks", "alive_share")
    assert rb.last("tracks", "position_error_median_um") < rc.last("tracks", "position_error_median_um")
    with pytest.raises(InputError, match="cannot be used with compat='nellie'"):
        dt.run(ds, tmp_path / "x.zarr", compat="nellie", accuracy=True)
    with pytest.raises(InputError, match="accuracy must be True, False or names"):
        dt.run(ds, tmp_path / "y.zarr", accuracy=["faster"])


# ------------------------------------------------------------ chained object vote
def test_object_vote_chain_follows_objects_without_leaks():
    # two bars 2 voxels apart move right by 3 voxels per frame; frame t's ids are arbitrary
    T, shape = 4, (12, 40)
    labels = np.zeros((T,) + shape, np.int32)
    rows = []
    for t in range(T):
        labels[t, 2:5, 3 + 3 * t:13 + 3 * t] = 1 if t % 2 == 0 else 2
        labels[t, 7:10, 3 + 3 * t:13 + 3 * t] = 2 if t % 2 == 0 else 1
        if t < T - 1:
            for y, x in [(3, 4 + 3 * t), (3, 7 + 3 * t), (3, 10 + 3 * t), (3, 12 + 3 * t),
                         (8, 4 + 3 * t), (8, 7 + 3 * t), (8, 10 + 3 * t), (8, 12 + 3 * t)]:
                rows.append([t, y, x, 0, 3, 0.0])
    rows = np.array(rows, float)
    rows[1, 3] = 5                                  # one wrong row pointing into the other bar
    flow = FlowTable([rows[rows[:, 0] == t] for t in range(T - 1)], 2, T)
    out = object_vote_chain(labels, flow, (0.1, 0.1)).compute()
    for t in range(T):
        assert set(np.unique(out[t][2:5])) == {0, 1}    # the top bar keeps frame 0's id 1
        assert set(np.unique(out[t][7:10])) == {0, 2}
        assert np.count_nonzero(out[t]) == np.count_nonzero(labels[t])
    with pytest.raises(InputError, match="flow covers"):
        object_vote_chain(labels[:3], flow, (0.1, 0.1))


# ------------------------------------------------------------------ living tracks
def test_tracks_live_with_fallback_and_flags():
    import dask_tracking as dt

    ds = synthetic_hard(**SMALL)
    ds = ds.replace(**{n: v.persist(scheduler="threads") for n, v in ds.arrays().items()})
    flow = dt.estimate_flow(ds).persist(scheduler="threads")
    base = dt.label_tracks(ds, flow, skip_coords=7, fallback_radius_um=None, keep_outside=False)
    alive = dt.label_tracks(ds, flow, skip_coords=7, fallback_radius_um=2.0, keep_outside=True)
    auto = dt.label_tracks(ds, flow, skip_coords=7)                   # the default: 4 x the 0.5 um radius
    np.testing.assert_array_equal(auto.data, alive.data)
    assert auto.attrs["fallback_radius_um"] == 2.0 and auto.attrs["keep_outside"] is True
    last = ds.n_frames - 1

    def n_last(tr):
        return len(np.unique(tr.data[tr.data[:, 1] == last, 0]))

    assert n_last(alive) >= n_last(base) and n_last(alive) > 0
    assert "end_reason" not in base.properties
    ends = alive.properties["end_reason"]
    last_rows = np.r_[alive.data[1:, 0] != alive.data[:-1, 0], True]
    assert np.all(ends[~last_rows] == 0) and np.all(np.isin(ends[last_rows], [1, 2, 3]))
    assert np.all(ends[last_rows & (alive.data[:, 1] == last)] == 1)
    assert set(np.unique(alive.properties["outside"])) <= {0, 1}
    with pytest.raises(InputError, match="fallback_radius_um must be a number above"):
        dt.label_tracks(ds, flow, fallback_radius_um=0.1)


def test_object_vote_chain_survives_a_frame_of_poor_segmentation():
    T, shape = 4, (12, 40)
    labels = np.zeros((T,) + shape, np.int32)
    rows = []
    for t in range(T):
        labels[t, 2:5, 3 + 3 * t:13 + 3 * t] = 1
        if t != 1:                                   # the bottom bar is missed at frame 1
            labels[t, 7:10, 3 + 3 * t:13 + 3 * t] = 2
        if t < T - 1:
            for y, x in [(3, 4 + 3 * t), (3, 10 + 3 * t), (8, 4 + 3 * t), (8, 10 + 3 * t)]:
                rows.append([t, y, x, 0, 3, 0.0])
    rows = np.array(rows, float)
    flow = FlowTable([rows[rows[:, 0] == t] for t in range(T - 1)], 2, T)
    out = object_vote_chain(labels, flow, (0.1, 0.1)).compute()
    assert set(np.unique(out[2][7:10])) == {0, 2} and set(np.unique(out[3][7:10])) == {0, 2}
    forgetful = object_vote_chain(labels, flow, (0.1, 0.1), memory=False).compute()
    new_id = set(np.unique(forgetful[2][7:10])) - {0}
    assert len(new_id) == 1 and new_id.pop() not in (1, 2)     # a fresh identity: coverage kept
    assert np.count_nonzero(forgetful[2]) == np.count_nonzero(labels[2])
