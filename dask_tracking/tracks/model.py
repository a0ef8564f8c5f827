"""``Tracks``: napari-style track rows with properties and a graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

__all__ = ["Tracks", "track_columns"]


def track_columns(ndim: int) -> list[str]:
    """``["track_id", "t", "z", "y", "x"]`` (3D) or ``["track_id", "t", "y", "x"]`` (2D)."""
    return ["track_id", "t", *(["z", "y", "x"] if ndim == 3 else ["y", "x"])]


@dataclass(frozen=True, eq=False)
class Tracks:
    """Point tracks in napari's Tracks layout.

    Parameters
    ----------
    data : ndarray, shape (K, 2+d), float64
        Rows ``track_id, t, (z), y, x``; ``t`` is a frame index, positions are
        in voxels (sub-voxel, as interpolated).
    properties : dict of str -> ndarray, each (K,)
        Per-row values, aligned with ``data`` (``frame_num`` always; the default
        mode adds ``label``, the seed's label id at the start frame).
    graph : dict
        napari's track graph (``{track_id: [parent ids]}``); empty here, tracks
        never split or merge.
    attrs : dict
        Parameters that produced the tracks (start frame, radius, compat...).

    Notes
    -----
    ``data, properties = tracks`` unpacks like Nellie's ``(tracks, track_properties)``.
    """

    data: np.ndarray
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    graph: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return int(self.data.shape[1]) - 2

    @property
    def columns(self) -> list[str]:
        return track_columns(self.ndim)

    @property
    def track_ids(self) -> np.ndarray:
        """Distinct track ids, sorted, int64."""
        return np.unique(self.data[:, 0]).astype(np.int64)

    @property
    def n_tracks(self) -> int:
        return int(len(self.track_ids))

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __iter__(self) -> Iterator[Any]:
        yield self.data
        yield self.properties

    def track(self, track_id: int) -> np.ndarray:
        """The rows of one track, (n, 2+d)."""
        return self.data[self.data[:, 0] == track_id]

    def to_dataframe(self):
        """A pandas DataFrame with columns ``track_id, t, (z), y, x`` and the properties."""
        import pandas as pd

        df = pd.DataFrame(self.data, columns=self.columns)
        df["track_id"] = df["track_id"].astype(np.int64)
        df["t"] = df["t"].astype(np.int64)
        for k, v in self.properties.items():
            df[k] = np.asarray(v)
        return df

    def to_napari(self) -> tuple[np.ndarray, dict]:
        """``(data, {"properties": ..., "graph": ...})``, the arguments of ``viewer.add_tracks``."""
        return self.data, {"properties": dict(self.properties), "graph": dict(self.graph)}

    def __repr__(self) -> str:
        return f"Tracks({self.n_tracks} tracks, {len(self)} points, {self.ndim}D, properties={list(self.properties)})"
