"""Flow interpolation with CuPy query points equals the NumPy result (CuPy in, CuPy out)."""

from __future__ import annotations

import numpy as np
import pytest

from dask_tracking.interpolate import frame_anchors, interpolate_flow, interpolate_points

SPACING = (0.25, 0.1, 0.1)


def _case():
    rng = np.random.default_rng(0)
    rows = np.column_stack([np.zeros(200), rng.integers(0, 60, (200, 3)).astype(float),
                            rng.normal(0, 1, (200, 3)), rng.uniform(-3, 0.5, 200)])
    q = rng.uniform(0, 60, (5000, 3))
    q[::17] = np.nan
    return rows, q


@pytest.mark.parametrize("compat", [None, "nellie"])
def test_cupy_points_equal_numpy(compat):
    import cupy as cp
    import dask.array as da

    rows, q = _case()
    want = interpolate_points(frame_anchors(rows, 3, True), q, SPACING, 1.0, compat=compat)
    got = interpolate_points(frame_anchors(rows, 3, True), cp.asarray(q), SPACING, 1.0, compat=compat)
    assert isinstance(got, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(got), want)
    lazy = interpolate_flow(rows, da.from_array(cp.asarray(q), chunks=(700, 3)), 0, spacing=SPACING, dt=1.0,
                            max_distance_um=1.0, compat=compat)
    assert isinstance(lazy._meta, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(lazy.compute()), want)
    eager = interpolate_flow(rows, cp.asarray(q), 0, spacing=SPACING, dt=1.0, max_distance_um=1.0,
                             compat=compat, chunk_size=999)
    np.testing.assert_array_equal(cp.asnumpy(eager), want)
