"""Voxel reassignment parity with Nellie 1.0.4 on the real yeast sample (reference flow)."""

from __future__ import annotations

import dask
import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.flow.table import FlowTable


@pytest.fixture(scope="module")
def yeast_flow(yeast_reference):
    return FlowTable.from_numpy(yeast_reference["flow_vector_array"][...], n_frames=30)


@pytest.mark.parametrize("chunks", [-1, (17, 64, 64), (5, 50, 70)], ids=["whole", "17x64x64", "5x50x70"])
def test_compat_equals_nellie_reference(yeast, yeast_reference, yeast_flow, chunks):
    ds = yeast.rechunk(chunks)
    res = dt.reassign_labels(ds, yeast_flow, compat="nellie")
    assert res.labels.chunks == ds.labels.chunks and res.labels.dtype == np.int32
    with dask.config.set(scheduler="threads", num_workers=2):
        labels, branches, stopped = dask.compute(res.labels, res.branches, res.stopped)
    ref_l = yeast_reference["labels_reassigned"][...]
    ref_b = yeast_reference["branches_reassigned"][...]
    assert labels.shape == ref_l.shape == (30, 17, 192, 279)
    bad_l = [t for t in range(30) if not np.array_equal(labels[t], ref_l[t])]
    bad_b = [t for t in range(30) if not np.array_equal(branches[t], ref_b[t])]
    assert bad_l == [] and bad_b == [], f"frames differing: objects {bad_l}, branches {bad_b}"
    assert (labels[29] > 0).sum() > 5000  # identities reach the last frame
    assert not any(stopped)


def test_matches_are_best_source_per_target(yeast, yeast_flow):
    """voxel_matches of a pair: one row per target, sorted by raster index, uint16, and chunk-free."""
    ds = yeast.isel(t=slice(0, 3))
    flow = FlowTable(yeast_flow.pairs[:2], 3, 3)
    whole = dt.reassign_labels(ds, flow, compat="nellie")
    tiled = dt.reassign_labels(ds.rechunk((5, 50, 70)), flow, compat="nellie")
    with dask.config.set(scheduler="threads", num_workers=2):
        (m0, m1), (n0, n1), lab, br = dask.compute(whole.matches, tiled.matches, ds.labels, ds.branches)
    for a, b in ((m0, n0), (m1, n1)):
        assert a.dtype == np.uint16 and a.ndim == 3 and a.shape[1:] == (2, 3)
        np.testing.assert_array_equal(a, b)
        flat = np.ravel_multi_index(tuple(a[:, 1].astype(np.int64).T), ds.spatial_shape)
        assert np.all(np.diff(flat) > 0)  # one row per target, raster order
        d_um = np.linalg.norm((a[:, 0].astype(float) - a[:, 1]) * np.array(ds.spacing), axis=1)
        assert np.median(d_um) < 1.0  # matches connect nearby voxels
    # sources are labelled voxels of t, targets labelled voxels of t+1
    for t, m in ((0, m0), (1, m1)):
        src, tgt = (tuple(m[:, i].astype(np.int64).T) for i in (0, 1))
        assert np.all((lab[t][src] > 0) | (br[t][src] > 0))
        assert np.all((lab[t + 1][tgt] > 0) | (br[t + 1][tgt] > 0))
