"""Reassignment.store on a real distributed cluster: zarr layout, per-pair matches, resume."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import zarr

import dask_tracking as dt
from dask_tracking.datasets import synthetic

from test_reassign import truth_flow


@pytest.fixture(scope="module")
def movie():
    ds = synthetic(3, 6, seed=7, n_objects=6, chunks=(6, 50, 64))
    return ds, truth_flow(ds)


def test_store_writes_lazily_and_resume_equals_full_run(movie, tmp_path, local_cluster_client):
    ds, flow = movie
    res = dt.reassign_labels(ds, flow)
    out = tmp_path / "out.zarr"
    job = res.store(str(out))
    g = zarr.open_group(str(out), mode="r")
    assert not g["labels_reassigned"][...].any()  # nothing computed before compute()
    job.compute()
    g = zarr.open_group(str(out), mode="r")
    lab, br = g["labels_reassigned"], g["branches_reassigned"]
    assert lab.dtype == np.int32 and lab.shape == ds.shape and lab.chunks == (1, 6, 50, 64)
    assert lab.attrs["compat"] == "fixed" and lab.attrs["axes"] == "TZYX"
    expect_l, expect_b, *expect_m = dask.compute(res.labels, res.branches, *res.matches)
    np.testing.assert_array_equal(lab[...], expect_l)
    np.testing.assert_array_equal(br[...], expect_b)
    assert sorted(g["voxel_matches"].array_keys(), key=int) == [str(t) for t in range(5)]
    for t in range(5):
        np.testing.assert_array_equal(g["voxel_matches"][str(t)][...], expect_m[t])
    assert (expect_l[5][ds.labels[5].compute() > 0] > 0).all()

    # resume: frames 0..2 are on disk; restart the chain at t0 = 2 into a store holding them
    resumed = tmp_path / "resumed.zarr"
    first = res.store(str(resumed), frames=[0, 1, 2])
    first.compute()
    part = zarr.open_group(str(resumed), mode="r")
    t0 = 2
    again = dt.reassign_labels(ds, flow, initial=(t0, part["labels_reassigned"][t0],
                                                  part["branches_reassigned"][t0]))
    again.store(str(resumed), frames=range(t0 + 1, 6), compute=True)
    final = zarr.open_group(str(resumed), mode="r")
    np.testing.assert_array_equal(final["labels_reassigned"][...], expect_l)
    np.testing.assert_array_equal(final["branches_reassigned"][...], expect_b)
    for t in range(5):
        np.testing.assert_array_equal(final["voxel_matches"][str(t)][...], expect_m[t])


def test_store_rejects_frames_out_of_range(movie, tmp_path):
    ds, flow = movie
    res = dt.reassign_labels(ds, flow)
    with pytest.raises(dt.InputError, match=r"frames must lie in \[0, 5\], got \[7\]"):
        res.store(str(tmp_path / "x.zarr"), frames=[1, 7])
