"""Parity of the preparation stages with Nellie 1.0.4 on the real yeast sample.

``compat="nellie"`` from the ``raw`` array must reproduce ``preprocessed``, ``labels``,
``branches``, ``distance``, ``markers`` and ``reference/prepare/{skel,pixel_class,border}``
exactly, with whole-frame and (17, 64, 64) spatial chunks (and an uneven grid for the
Filter). A few frames here; all 30 frames are checked by ``benchmarks/bench_prepare.py``.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

import dask_tracking as dt

OUTPUTS = ("preprocessed", "labels", "branches", "distance", "markers")
EXTRAS = (("skeleton", "skel"), ("pixel_class", "pixel_class"), ("border", "border"))


def _check_frames(yeast_path, frames, spatial_chunks, client=None):
    g = zarr.open_group(str(yeast_path), mode="r")
    ref = zarr.open_group(str(yeast_path / "reference" / "prepare"), mode="r")
    raw = da.from_zarr(g["raw"])[frames].rechunk((1,) + tuple(spatial_chunks))
    pm = dt.prepare(raw, dict(g.attrs["scale"]), compat="nellie", return_extras=True)
    assert pm.dataset.preprocessed.chunks == raw.chunks
    todo = {**pm.dataset.arrays(), **pm.extras()}
    if client is not None:
        got = dict(zip(todo, client.compute(list(todo.values()), sync=True)))
    else:
        got = dict(zip(todo, dask.compute(*todo.values(), scheduler="threads", num_workers=2)))
    for name in OUTPUTS:
        want = g[name].get_orthogonal_selection((frames,))
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=f"{name} chunks={spatial_chunks}")
    for ours, theirs in EXTRAS:
        want = ref[theirs].get_orthogonal_selection((frames,))
        assert got[ours].dtype == want.dtype, ours
        np.testing.assert_array_equal(got[ours], want, err_msg=f"{ours} chunks={spatial_chunks}")
    # the comparison is not vacuous: objects, branches and markers are present
    assert got["labels"].max() >= 2 and got["markers"].sum() > 10 and got["preprocessed"].max() > 0


def test_yeast_parity_whole_frames(yeast_path):
    _check_frames(yeast_path, [0, 29], (17, 192, 279))


def test_yeast_parity_17_64_64(yeast_path):
    _check_frames(yeast_path, [13, 14], (17, 64, 64))


@pytest.mark.parametrize("chunks", [(5, 50, 70), ((9, 8), (100, 92), (61, 61, 61, 61, 35))])
def test_yeast_filter_any_chunking(yeast_path, chunks):
    from dask_tracking.prepare import filter_movie

    g = zarr.open_group(str(yeast_path), mode="r")
    raw = da.from_zarr(g["raw"])[7:8]
    raw = raw.rechunk(((1,),) + tuple(chunks) if isinstance(chunks[0], tuple) else (1,) + chunks)
    sc = g.attrs["scale"]
    out = filter_movie(raw, (sc["Z"], sc["Y"], sc["X"]))
    assert out.chunks == raw.chunks
    np.testing.assert_array_equal(out.compute(scheduler="threads", num_workers=2), g["preprocessed"][7:8])
