"""evaluate(): accuracy against a synthetic truth, on perfect and damaged outputs, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from dask_tracking.cli import main
from dask_tracking.dataset import InputError
from dask_tracking.datasets import synthetic_hard
from dask_tracking.evaluate import evaluate, load_truth, truth_spec
from dask_tracking.flow.table import FlowTable

KW = dict(n_frames=3, n_pairs=1, shape=(8, 64, 96), seed=3)


@pytest.fixture(scope="module")
def hard():
    ds = synthetic_hard(**KW)
    return ds.replace(**{n: v.persist(scheduler="threads") for n, v in ds.arrays().items()},
                      truth=ds.truth.__class__(objects=ds.truth.objects.persist(scheduler="threads"), geometry=ds.truth.geometry,
                                               spacing=ds.truth.spacing, dt=ds.truth.dt,
                                               n_frames=ds.truth.n_frames))


def _true_flow(ds) -> FlowTable:
    pairs = []
    for t in range(ds.n_frames - 1):
        c = np.argwhere(ds.markers[t].compute() > 0).astype(float)
        v = ds.truth.displacement(c, t)
        pairs.append(np.c_[np.full(len(c), t), c, v, np.zeros(len(c))])
    return FlowTable(pairs, 3, ds.n_frames)


def _true_tracks(ds) -> np.ndarray:
    c = np.argwhere(ds.labels[0].compute() > 0)[::97].astype(float)
    rows = []
    for t in range(ds.n_frames):
        p = ds.truth.position(c, 0, t)
        rows.append(np.c_[np.arange(len(c)), np.full(len(c), t), p])
    return np.concatenate(rows)


def test_perfect_outputs_score_perfectly(hard):
    objects = hard.truth.objects.compute()
    perm = np.array([0, 7, 3], np.int32)          # labels up to a permutation
    rep = evaluate({"flow": _true_flow(hard), "labels": perm[objects], "tracks": _true_tracks(hard)}, hard)
    assert rep.flow["rows"] > 0
    assert rep.flow["epe_median_um"] < 1e-9 and rep.flow["epe_p90_um"] < 1e-9
    assert rep.flow["wrong_object_share"] == 0.0
    assert rep.labels["coverage"] == [1.0] * 3
    assert rep.labels["identity_accuracy"] == [1.0] * 3
    assert rep.tracks["alive_share"] == [1.0] * 3
    assert max(rep.tracks["position_error_median_um"]) < 1e-9
    assert "identity accuracy last frame 1.0000" in rep.summary()


def test_damage_is_measured(hard):
    objects = hard.truth.objects.compute()
    labels = objects.copy()
    labels[2][objects[2] == 1] = 2                 # identity of object 1 leaks into object 2's id at t=2
    labels[1][(objects[1] == 2)] = 0               # object 2 not labelled at t=1
    flow = _true_flow(hard)
    shifted = [p.copy() for p in flow.pairs]
    shifted[0][:, 5] += 0.5 / 0.0655               # +0.5 um in Y on pair 0
    tracks = _true_tracks(hard)
    tracks = tracks[~((tracks[:, 1] == 2) & (tracks[:, 0] % 2 == 0))]   # half the tracks end at t=1
    tracks[tracks[:, 1] == 1, 3] += 1.0 / 0.0655   # +1 um in Y at t=1
    rep = evaluate({"flow": FlowTable(shifted, 3, 3), "labels": labels, "tracks": tracks}, hard)
    assert rep.flow["epe_median_um_per_pair"][0] == pytest.approx(0.5)
    assert rep.flow["epe_median_um_per_pair"][1] < 1e-9
    n1 = (objects[1] == 1).sum()
    n2 = (objects[1] == 2).sum()
    assert rep.labels["coverage"][1] == pytest.approx(n1 / (n1 + n2))
    m1, m2 = (objects[2] == 1).sum(), (objects[2] == 2).sum()
    assert rep.labels["identity_accuracy"][2] == pytest.approx(m2 / (m1 + m2))
    assert rep.tracks["alive_share"][2] == pytest.approx(0.5, abs=0.05)
    assert rep.tracks["position_error_median_um"][1] == pytest.approx(1.0)


def test_output_store_and_cli(hard, tmp_path):
    out = tmp_path / "out.zarr"
    g = zarr.open_group(str(out), mode="w")
    _true_flow(hard).to_zarr(g, "flow")
    objects = hard.truth.objects.compute()
    g.create_array("labels_reassigned", data=objects)
    g.create_array("tracks", data=_true_tracks(hard))
    spec = truth_spec("synthetic_hard", **KW)
    rep = evaluate(out, spec)
    assert rep.flow["epe_median_um"] < 1e-9 and rep.labels["identity_accuracy"][-1] == 1.0
    (tmp_path / "truth.json").write_text(json.dumps(spec))
    res = CliRunner().invoke(main, ["evaluate", str(out), "--truth", str(tmp_path / "truth.json"),
                                    "--json", str(tmp_path / "rep.json")])
    assert res.exit_code == 0, res.output
    assert "wrong object 0.00%" in res.output
    data = json.loads((tmp_path / "rep.json").read_text())
    assert data["labels"]["coverage"] == [1.0, 1.0, 1.0]
    bad = CliRunner().invoke(main, ["evaluate", str(out), "--truth", '{"generator": "nope"}'])
    assert bad.exit_code == 2 and "generator" in bad.output


def test_bad_inputs(hard, tmp_path):
    with pytest.raises(InputError, match="truth must be a SyntheticTruth"):
        evaluate({"labels": np.zeros((3, 8, 64, 96))}, {"generator": "other"})
    with pytest.raises(InputError, match="output .* does not exist"):
        evaluate(tmp_path / "missing.zarr", hard)
    with pytest.raises(InputError, match="labels have shape"):
        evaluate({"labels": np.zeros((3, 8, 64, 95), np.int32)}, hard)
    with pytest.raises(InputError, match="reference_frame must be an integer in"):
        evaluate({"labels": np.zeros((3, 8, 64, 96), np.int32)}, hard, reference_frame=3)
    with pytest.raises(InputError, match="at least one of 'flow'"):
        evaluate({}, hard)
    with pytest.raises(InputError, match="generator must be one of"):
        truth_spec("nope")
    with pytest.raises(InputError, match="neither JSON text"):
        load_truth(str(tmp_path / "nothing.json"))
