"""Raw movie -> prepare -> track, all in compat mode, gives Nellie 1.0.4's tracking outputs.

The first three frames of the yeast sample's ``raw`` array are prepared (Filter, Label, Network,
Markers) and tracked (flow, voxel reassignment) with ``compat="nellie"``. Flow pairs are
independent and the label chain starts at frame 0, so the result must equal Nellie's reference
flow rows of pairs (0, 1) and (1, 2) and its reassigned labels and branches of frames 0-2.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import zarr

import dask_tracking as dt

FRAMES = 3


def test_raw_prepared_and_tracked_equals_nellie(yeast_path, tmp_path):
    g = zarr.open_group(str(yeast_path), mode="r")
    ref = g["reference"]
    raw = da.from_zarr(g["raw"])[:FRAMES]
    ds = dt.prepare(raw, dict(g.attrs["scale"]), compat="nellie")

    result = dt.run(ds, tmp_path / "out.zarr", compat="nellie")
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")

    want_flow = ref["flow_vector_array"][...]
    want_flow = want_flow[want_flow[:, 0] < FRAMES - 1]
    assert len(want_flow) > 50 and result.flow_rows == len(want_flow)
    np.testing.assert_array_equal(out["flow"][...], want_flow)
    for name in ("labels_reassigned", "branches_reassigned"):
        got = out[name][...]
        want = ref[name][:FRAMES]
        assert got.dtype == np.int32 and (got[-1] > 0).sum() > 1000, name
        np.testing.assert_array_equal(got, want, err_msg=name)
