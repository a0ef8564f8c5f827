"""The HuMomentTracking facade: Nellie's signature, zarr output, Nellie's .npy on request."""

from __future__ import annotations

import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.datasets import synthetic
from dask_tracking.nellie import HuMomentTracking, ImInfo


class _Viewer:
    def __init__(self):
        self.seen = []

    @property
    def status(self):
        return self.seen[-1] if self.seen else ""

    @status.setter
    def status(self, text):
        self.seen.append(text)


def test_run_writes_zarr_and_nellie_npy_equal_to_reference(yeast, yeast_reference, tmp_path):
    im_info = ImInfo(yeast, output=tmp_path / "run.zarr", nellie_dir=tmp_path / "nellie", stem="yeast")
    viewer = _Viewer()
    hu = HuMomentTracking(im_info, viewer=viewer, device="cpu", compat="nellie")
    table = hu.run(write_nellie=True, scheduler="threads")
    ref = np.asarray(yeast_reference["flow_vector_array"][...])
    np.testing.assert_array_equal(table.to_numpy(), ref)
    assert im_info.flow is table
    npy = np.load(tmp_path / "nellie" / "yeast-flow_vector_array.npy")
    assert npy.dtype == np.float64
    np.testing.assert_array_equal(npy, ref)
    back = dt.FlowTable.from_zarr(str(tmp_path / "run.zarr"))
    np.testing.assert_array_equal(back.to_numpy(), ref)
    assert viewer.seen and viewer.seen[-1].endswith("done.")


def test_defaults_and_accepted_parameters(tmp_path):
    ds = synthetic(ndim=2, n_frames=3, seed=4)
    im_info = ImInfo(ds, output=tmp_path / "o.zarr")
    hu = HuMomentTracking(im_info, num_t=2, max_distance_um=1.0, viewer=None, device="auto",
                          mode="sparse", max_dense_pairs=10, max_dense_roi_voxels_cpu=100,
                          max_dense_roi_voxels_gpu=100, low_memory=True)
    table = hu.run(scheduler="sync")
    assert table.n_frames == 2
    want = dt.estimate_flow(ds, num_t=2, mode="sparse").to_numpy(scheduler="sync")
    np.testing.assert_array_equal(table.to_numpy(), want)   # low_memory: no change by default
    assert not (tmp_path / "nellie_necessities").exists()   # .npy only when asked


def test_empty_flow_writes_nellie_empty_float32(tmp_path):
    ds = synthetic(ndim=2, n_frames=3, seed=4)
    ds = ds.replace(markers=ds.markers * 0)
    im_info = ImInfo(ds, output=tmp_path / "o.zarr")
    HuMomentTracking(im_info, write_nellie=True).run(scheduler="sync")
    npy = np.load(im_info.nellie_path("flow_vector_array"))
    assert npy.shape == (0, 6) and npy.dtype == np.float32


def test_bad_device_and_mode(yeast):
    im_info = ImInfo(yeast)
    with pytest.raises(InputError, match="device must be one of 'auto', 'cpu', 'gpu', 'cuda', got 'tpu'"):
        HuMomentTracking(im_info, device="tpu")
    with pytest.raises(InputError, match="GPU path of HuMomentTracking is not available yet"):
        HuMomentTracking(im_info, device="gpu")
    with pytest.raises(InputError, match="mode must be one of"):
        HuMomentTracking(im_info, mode="hungarian")
