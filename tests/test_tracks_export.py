"""Track export: napari .npz, CSV and parquet round trips with documented columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.flow.table import FlowTable
from dask_tracking.io.tracks_export import read_tracks, write_tracks


@pytest.fixture(scope="module")
def tracks(yeast, yeast_reference):
    flow = FlowTable.from_numpy(yeast_reference["flow_vector_array"][...], n_frames=30)
    return dt.label_tracks(yeast, flow, start_frame=5, end_frame=12, skip_coords=97)


@pytest.mark.parametrize("name", ["t.npz", "t.csv", "t.parquet"])
def test_round_trip(tracks, tmp_path, name):
    assert len(tracks) > 100
    p = write_tracks(tracks, tmp_path / name)
    back = read_tracks(p)
    np.testing.assert_allclose(back.data, tracks.data, rtol=0, atol=0 if name != "t.csv" else 1e-12)
    assert set(back.properties) == {"frame_num", "label", "outside", "end_reason"}
    for k, v in tracks.properties.items():
        np.testing.assert_array_equal(back.properties[k], v)
    with pytest.raises(InputError, match="exists; pass overwrite=True"):
        write_tracks(tracks, p)
    write_tracks(tracks, p, overwrite=True)


def test_csv_columns_and_nellie_pairs(tracks, tmp_path):
    p = write_tracks(tracks, tmp_path / "tracks.csv")
    df = pd.read_csv(p)
    assert list(df.columns) == ["track_id", "t", "z", "y", "x", "frame_num", "label", "outside", "end_reason"]
    assert df["track_id"].dtype == np.int64 and df["t"].dtype == np.int64
    # a (data, properties) pair as Nellie returns it, written as napari tracks
    data = [[0, 0, 1.0, 2.0], [0, 1, 1.5, 2.5]]
    q = write_tracks((data, {"frame_num": [0, 1]}), tmp_path / "nellie.npz")
    back = read_tracks(q)
    assert back.ndim == 2 and back.columns == ["track_id", "t", "y", "x"]
    np.testing.assert_array_equal(back.properties["frame_num"], [0, 1])


def test_export_errors(tracks, tmp_path):
    with pytest.raises(InputError, match="cannot tell the tracks format"):
        write_tracks(tracks, tmp_path / "t.txt")
    with pytest.raises(InputError, match="format must be one of"):
        write_tracks(tracks, tmp_path / "t.npz", format="xml")
    with pytest.raises(InputError, match="tracks data must be"):
        write_tracks((np.zeros((3, 7)), {}), tmp_path / "t.npz")
    with pytest.raises(InputError, match="no tracks file"):
        read_tracks(tmp_path / "missing.csv")
