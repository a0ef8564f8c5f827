"""A walk split in pieces (both threads busy on every step) gives the rows of an unsplit walk."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.flow.table import FlowTable

W = importlib.import_module("dask_tracking.tracks.walk")  # the module (the package exports walk())


@pytest.fixture(scope="module")
def flow(yeast_reference):
    return FlowTable.from_numpy(yeast_reference["flow_vector_array"][...], n_frames=30)


def test_piece_bounds_cover_each_chunk_in_order(monkeypatch):
    monkeypatch.setattr(W, "MIN_PIECE", 10)
    chunks = [np.zeros((95, 3)), np.zeros((7, 3)), np.zeros((40, 3))]
    bounds = W._piece_bounds(chunks)
    assert [b[0] for b in bounds] == [0, 0, 0]
    assert [b[-1] for b in bounds] == [95, 7, 40]
    assert all(np.all(np.diff(b) > 0) for b in bounds)
    assert sum(len(b) - 1 for b in bounds) >= W.MIN_PIECES
    monkeypatch.setattr(W, "MIN_PIECE", 1000)  # too few points: one piece per chunk
    assert [len(b) for b in W._piece_bounds(chunks)] == [2, 2, 2]


@pytest.mark.parametrize("compat", ["nellie", None])
def test_walking_in_pieces_gives_the_same_rows(yeast, yeast_reference, flow, compat, monkeypatch):
    ds = yeast.isel(t=slice(0, 6))
    kw = dict(start_frame=2, compat=compat, chunk_size=4000)
    whole = dt.label_tracks(ds, flow, **kw)
    monkeypatch.setattr(W, "MIN_PIECE", 300)
    pieces = dt.label_tracks(ds, flow, **kw)
    assert len(whole.data) > 10_000
    np.testing.assert_array_equal(pieces.data, whole.data)
    for k in whole.properties:
        np.testing.assert_array_equal(pieces.properties[k], whole.properties[k])
