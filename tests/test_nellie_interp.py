"""The Nellie facades: FlowInterpolator, interpolate_all_forward/backward, LabelTracks."""

from __future__ import annotations

import numpy as np
import pytest

from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.nellie import (FlowInterpolator, ImInfo, LabelTracks, interpolate_all_backward,
                                  interpolate_all_forward)


def _rows(a):
    a = np.asarray(a, dtype=np.float64)
    return a[np.lexsort(a.T[::-1])]


@pytest.fixture(scope="module")
def im_info(yeast, yeast_reference):
    info = ImInfo(yeast)
    info.flow = FlowTable.from_numpy(yeast_reference["flow_vector_array"][...], n_frames=30)
    return info


@pytest.mark.parametrize("forward", [True, False])
def test_flow_interpolator_matches_nellie(im_info, yeast_reference, forward):
    coords = yeast_reference["interp_coords_t10"][...]
    want = yeast_reference["interp_forward_t10" if forward else "interp_backward_t10"][...]
    fi = FlowInterpolator(im_info, forward=forward)
    got = fi.interpolate_coord(coords, 10)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert fi.current_t == 10 and fi.max_distance_um == pytest.approx(0.5 * 4.535566806793213)


def test_flow_interpolator_empty_and_quirks(im_info, yeast_reference):
    fi = FlowInterpolator(im_info)
    assert fi.interpolate_coord(np.full((4, 3), np.nan), 10).shape == (0, 3)  # no good rows
    assert fi.interpolate_coord(np.array([[0.0, -500.0, -500.0]]), 10).shape == (0, 3)  # K == 0
    assert fi.interpolate_coord(np.zeros((5, 3)), 29).shape == (0, 3)  # no flow after the last frame
    coords = yeast_reference["interp_coords_t10"][:50].copy()
    coords[0] = np.nan
    v = fi.interpolate_coord(coords, 10)
    assert np.isnan(v[0]).all() and np.isnan(v[49]).all()  # Q-B: the last good row loses its vector
    assert not np.isnan(v[1:49]).any()
    with pytest.raises(InputError, match=r"coords must be an \(N, 3\)"):
        fi.interpolate_coord(np.zeros((3, 2)), 10)


def test_interpolate_all_walks_mutate_like_nellie(im_info, yeast_reference):
    lab = np.asarray(im_info.dataset.labels[15].compute())
    seeds = np.argwhere(lab == 1).astype(float)
    fw_coords = seeds.copy()
    tracks, props = interpolate_all_forward(fw_coords, 15, 30, im_info)
    assert len(tracks) == len(props["frame_num"]) > 0
    assert {r[1] for r in tracks} == set(range(15, 30))
    assert not np.array_equal(fw_coords, seeds)  # moved in place, as Nellie does
    bw_coords = seeds.copy()
    tracks_b, props_b = interpolate_all_backward(bw_coords, 15, 0, im_info, min_track_num=7)
    assert {r[1] for r in tracks_b} == set(range(0, 16))
    assert min(r[0] for r in tracks_b) >= 7
    # LabelTracks = backward + forward, filtered to labelled voxels: a subset of the two walks
    lt = LabelTracks(im_info)
    lt.initialize()
    data, p = lt.run(label_num=1, start_frame=15)
    want = yeast_reference["tracks_label1_start15"][...]
    np.testing.assert_allclose(_rows(data), _rows(want), rtol=0, atol=1e-9)
    walked = np.concatenate([np.asarray(tracks_b, float) - [7, 0, 0, 0, 0], np.asarray(tracks, float)])
    assert len(data) <= len(walked)
    assert p["frame_num"] == [int(r[1]) for r in data]


def test_label_tracks_edge_cases(im_info):
    lt = LabelTracks(im_info, label_im_path="labels")
    assert lt.run(start_frame=30) == ([], {})
    assert lt.run(label_num=10**6) == ([], {})
    data, props = lt.run(label_num=1, start_frame=28, end_frame=99, skip_coords=50)
    assert {r[1] for r in data} <= set(range(30)) and len(data) == len(props["frame_num"])
    with pytest.raises(InputError, match="label_im_path 'nope' is neither"):
        LabelTracks(im_info, label_im_path="nope").initialize()
