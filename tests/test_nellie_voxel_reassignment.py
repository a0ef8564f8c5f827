"""The VoxelReassigner facade: Nellie's signature and files, on the yeast sample."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.nellie import ImInfo, VoxelReassigner

T = 6


@pytest.fixture(scope="module")
def im_info(yeast, yeast_reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("facade") / "yeast.zarr"
    info = ImInfo(yeast.isel(t=slice(0, T)), output=out)
    fa = yeast_reference["flow_vector_array"][...]
    info.flow = FlowTable.from_numpy(fa[fa[:, 0] < T - 1], n_frames=T)
    return info


def test_run_writes_zarr_and_nellie_files_equal_to_reference(im_info, yeast_reference):
    vr = VoxelReassigner(im_info, write_nellie=True)
    vr.run(scheduler="threads", num_workers=2)
    g = zarr.open_group(str(im_info.output), mode="r")
    ref_l = yeast_reference["labels_reassigned"][:T]
    ref_b = yeast_reference["branches_reassigned"][:T]
    np.testing.assert_array_equal(g["labels_reassigned"][...], ref_l)
    np.testing.assert_array_equal(g["branches_reassigned"][...], ref_b)
    obj = tifffile.imread(im_info.nellie_path("im_obj_label_reassigned"))
    br = tifffile.imread(im_info.nellie_path("im_branch_label_reassigned"))
    assert obj.dtype == np.int32 and obj.shape == ref_l.shape
    np.testing.assert_array_equal(obj, ref_l)
    np.testing.assert_array_equal(br, ref_b)
    with tifffile.TiffFile(im_info.nellie_path("im_obj_label_reassigned")) as tf:
        assert tf.is_ome and tf.series[0].axes == "TZYX"
    vm = np.load(im_info.nellie_path("voxel_matches"), allow_pickle=True)
    assert len(vm) == T - 1
    for t in range(T - 1):
        np.testing.assert_array_equal(vm[t][1], g["voxel_matches"][str(t)][:, 1])
        assert vm[t][0].dtype == np.uint16


def test_match_voxels_returns_candidates_whose_best_are_the_matches(im_info, yeast):
    vr = VoxelReassigner(im_info)
    lab = (yeast.labels[:2] > 0) | (yeast.branches[:2] > 0)
    m = lab.compute()
    vp, vn = np.argwhere(m[0]), np.argwhere(m[1])
    src, tgt, err = vr.match_voxels(vp, vn, 0)
    assert src.shape == tgt.shape and src.shape[1] == 3 and err.shape == (len(src),)
    assert err.dtype == np.float64 and err.max() < vr.params.radius_um
    # best source per target (smallest error, earliest on ties) = the stored matches of pair 0
    flat = np.ravel_multi_index(tuple(tgt.T), yeast.spatial_shape)
    order = np.lexsort((err, flat))
    first = np.r_[True, np.diff(flat[order]) != 0]
    best = order[first]
    res = dt.reassign_labels(yeast.isel(t=slice(0, T)), im_info.flow, compat="nellie")
    m0 = res.matches[0].compute(scheduler="threads")
    np.testing.assert_array_equal(src[best], m0[:, 0])
    np.testing.assert_array_equal(tgt[best], m0[:, 1])


def test_bad_arguments(im_info):
    with pytest.raises(InputError, match="device must be one of .* got 'tpu'"):
        VoxelReassigner(im_info, device="tpu")
    with pytest.raises(InputError, match="num_t must be at most the number of frames 6, got 9"):
        VoxelReassigner(im_info, num_t=9)
    with pytest.raises(InputError, match="max_query_points must be an integer >= 1, got 0"):
        VoxelReassigner(im_info, max_query_points=0)
    with pytest.raises(InputError, match=r"t must be a frame pair index in \[0, 4\], got 7"):
        VoxelReassigner(im_info).match_voxels(np.zeros((1, 3), int), np.zeros((1, 3), int), 7)
