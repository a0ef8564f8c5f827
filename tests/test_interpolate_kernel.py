"""The interpolation kernel: Nellie parity on the yeast sample, quirks, chunk invariance."""

from __future__ import annotations

import numpy as np
import pytest

from dask_tracking.config import gate_radius_um
from dask_tracking.dataset import InputError
from dask_tracking.interpolate import frame_anchors, interpolate_points, neighbour_counts

SPACING = (0.25, 0.0655, 0.0655)


@pytest.fixture(scope="module")
def ref(yeast_reference):
    r = yeast_reference
    return {k: r[k][...] for k in ("flow_vector_array", "interp_coords_t10",
                                   "interp_forward_t10", "interp_backward_t10")}


@pytest.fixture(scope="module")
def radius(yeast_path):
    import zarr

    return gate_radius_um(0.5, zarr.open_group(str(yeast_path), mode="r").attrs["scale"]["T"])


@pytest.mark.parametrize("forward", [True, False])
def test_compat_equals_nellie_reference(ref, radius, forward):
    flow = ref["flow_vector_array"]
    key = "interp_forward_t10" if forward else "interp_backward_t10"
    rows = flow[flow[:, 0] == (10 if forward else 9)]
    anchors = frame_anchors(rows, 3, forward)
    got = interpolate_points(anchors, ref["interp_coords_t10"], SPACING, radius, compat="nellie")
    want = ref[key]
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("compat", [None, "nellie"])
@pytest.mark.parametrize("size", [1, 17, 1000, 2500])
def test_blocks_equal_whole_batch(ref, radius, compat, size):
    flow = ref["flow_vector_array"]
    anchors = frame_anchors(flow[flow[:, 0] == 10], 3, True)
    coords = ref["interp_coords_t10"][:3000].copy()
    coords[::7] = np.nan  # NaN rows inside the batch (Q-B matters in compat)
    whole = interpolate_points(anchors, coords, SPACING, radius, compat=compat)
    k = neighbour_counts(anchors, coords, SPACING, radius)
    n_good = int((~np.isnan(coords[:, 0])).sum())
    parts = [interpolate_points(anchors, coords[i:i + size], SPACING, radius, compat=compat,
                                n_good=n_good, k_max=int(k.max()), offset=i)
             for i in range(0, len(coords), size)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    if compat == "nellie":  # Q-B: good rows at index >= n_good lose their vector
        assert np.isnan(whole[n_good:]).all()
        assert not np.isnan(whole[:n_good][~np.isnan(coords[:n_good, 0])]).any()
    else:
        assert not np.isnan(whole[~np.isnan(coords[:, 0])]).any()


def _toy():
    # 2D anchors: two vectors near the origin
    rows = np.array([[0, 0.0, 0.0, 1.0, 0.0, -2.0],
                     [0, 0.0, 2.0, 0.0, 1.0, -1.0]])
    return frame_anchors(rows, 2, True)


def test_quirk_qa_k1_only_row0():
    a = _toy()
    coords = np.array([[0.0, 0.5], [10.0, 10.0], [0.0, 2.2]])  # each has <= 1 neighbour
    nellie = interpolate_points(a, coords, (1.0, 1.0), 0.5, compat="nellie")
    fixed = interpolate_points(a, coords, (1.0, 1.0), 0.5)
    np.testing.assert_array_equal(nellie[0], [1.0, 0.0])
    assert np.isnan(nellie[1:]).all()
    np.testing.assert_array_equal(fixed[0], [1.0, 0.0])
    assert np.isnan(fixed[1]).all()
    np.testing.assert_array_equal(fixed[2], [0.0, 1.0])


def test_exact_hit_and_weights():
    a = _toy()
    # exact hit on anchor 0: default takes it alone, Nellie's +1 shift lets anchor 1 in (B17)
    coords = np.array([[0.0, 0.0]])
    fixed = interpolate_points(a, coords, (1.0, 1.0), 3.0)
    nellie = interpolate_points(a, coords, (1.0, 1.0), 3.0, compat="nellie")
    np.testing.assert_array_equal(fixed[0], [1.0, 0.0])
    # Nellie: w = [2, 0] -> [1 - (0 - 1)... ] = shifted [3, 1] / 4
    np.testing.assert_allclose(nellie[0], [0.75, 0.25])
    # midway: inverse distance equal, cost weights 2 and 1
    mid = interpolate_points(a, np.array([[0.0, 1.0]]), (1.0, 1.0), 3.0)
    np.testing.assert_allclose(mid[0], [2 / 3, 1 / 3])


def test_no_anchors_and_bad_input():
    a = frame_anchors(np.zeros((0, 6)), 2, True)
    out = interpolate_points(a, np.zeros((4, 2)), (1.0, 1.0), 1.0, compat="nellie")
    assert out.shape == (4, 2) and np.isnan(out).all()
    with pytest.raises(InputError, match=r"coords must be an \(N, 2\)"):
        interpolate_points(_toy(), np.zeros((3, 3)), (1.0, 1.0), 1.0)
    with pytest.raises(InputError, match="spacing must be 2 positive"):
        interpolate_points(_toy(), np.zeros((3, 2)), (1.0, -1.0), 1.0)
    with pytest.raises(InputError, match="compat must be None"):
        interpolate_points(_toy(), np.zeros((3, 2)), (1.0, 1.0), 1.0, compat="napari")
    with pytest.raises(InputError, match=r"rows must be an \(n, 8\)"):
        frame_anchors(np.zeros((3, 6)), 3, True)
