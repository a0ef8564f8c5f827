"""Nellie's ``FlowInterpolator``, ``interpolate_all_forward`` and ``interpolate_all_backward``.

Thin facades with Nellie 1.0.4's names, signatures and results (spec 2.1-2.4),
quirks Q-A / Q-B included, over :mod:`dask_tracking.interpolate` and
:mod:`dask_tracking.tracks`. The flow comes from ``im_info.flow_table()``.

Differences from Nellie (all on paths where Nellie crashes): single-frame data
raises :class:`~dask_tracking.InputError` on use instead of ``AttributeError``
(B12), and a missing frame interval is read as 1 s (as HuMomentTracking does)
instead of a ``TypeError`` (B10).
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from ..config import gate_radius_um
from ..dataset import InputError
from ..interpolate.kernel import Anchors, frame_anchors, interpolate_points, neighbour_counts
from ..tracks.label import emission_rows
from ..tracks.walk import WalkParams, walk
from .im_info import ImInfo

__all__ = ["FlowInterpolator", "interpolate_all_forward", "interpolate_all_backward"]


def _spacing(im_info: ImInfo) -> tuple[float, ...]:
    r = im_info.dim_res
    return (r["Y"], r["X"]) if im_info.no_z else (r["Z"], r["Y"], r["X"])


def _anchors(im_info: ImInfo, t: int, forward: bool) -> Anchors:
    table = im_info.flow_table()
    rows = table.frame(t if forward else t - 1)
    if dask.is_dask_collection(rows):
        rows = rows.compute()
    return frame_anchors(rows, table.ndim, forward)


class FlowInterpolator:
    """Interpolate flow vectors at arbitrary coordinates (Nellie's class).

    Parameters
    ----------
    im_info : ImInfo
        The dataset; its flow is ``im_info.flow_table()``.
    num_t : int, optional
        Number of frames (default: all).
    max_distance_um : float
        Speed in um/s; the radius is ``max(max_distance_um * dt, 0.5)`` um.
    forward : bool
        Forward (anchors at vector starts of pair t) or backward (vector ends of
        pair t-1).
    """

    def __init__(self, im_info: ImInfo, num_t: int | None = None, max_distance_um: float = 0.5,
                 forward: bool = True):
        self.im_info = im_info
        self.num_t = num_t if num_t is not None else im_info.shape[0]
        self.scaling = _spacing(im_info)
        self.max_distance_um = gate_radius_um(max_distance_um, im_info.dim_res["T"])
        self.forward = bool(forward)
        self.current_t: int | None = None
        self.check_rows: Anchors | None = None

    def _anchors_for(self, t: int) -> Anchors:
        if self.im_info.no_t:
            raise InputError("FlowInterpolator needs a movie: this dataset has a single frame (no flow)")
        if self.current_t != t or self.check_rows is None:
            self.check_rows = _anchors(self.im_info, int(t), self.forward)
            self.current_t = int(t)
        return self.check_rows

    def interpolate_coord(self, coords: Any, t: int) -> np.ndarray:
        """Displacement (voxels, ``t -> t+1``) at each coordinate of frame ``t``.

        Parameters
        ----------
        coords : array, shape (N, d)
            Voxel coordinates; NaN rows allowed.
        t : int

        Returns
        -------
        ndarray, shape (N, d) float64, or (0, d)
            Nellie's result, including its quirks: an empty (0, d) array when no
            coordinate is valid or none has an anchor within the radius; NaN
            rows for coordinates without a vector (and, as in Nellie, for valid
            rows at index >= the number of valid rows, and every row but the
            first when no coordinate has more than one anchor).
        """
        anchors = self._anchors_for(t)
        c = np.asarray(coords, dtype=np.float64)
        d = len(self.scaling)
        if c.ndim != 2 or c.shape[1] != d:
            raise InputError(f"coords must be an (N, {d}) array of voxel positions, got shape {c.shape}")
        k = neighbour_counts(anchors, c, self.scaling, self.max_distance_um)
        if len(c) == 0 or np.isnan(c[:, 0]).all() or k.max() == 0:
            return np.zeros((0, d))
        return interpolate_points(anchors, c, self.scaling, self.max_distance_um, compat="nellie")


def _as_lists(data: np.ndarray) -> list[list]:
    return [[int(r[0]), int(r[1]), *r[2:].tolist()] for r in data]


def _walk_all(coords: Any, frames: list[int], im_info: ImInfo, min_track_num: int, max_distance_um: float,
              forward: bool) -> tuple[list, dict]:
    c = np.asarray(coords, dtype=np.float64)
    d = 2 if im_info.no_z else 3
    if c.ndim != 2 or c.shape[1] != d:
        raise InputError(f"coords must be an (N, {d}) array of voxel positions, got shape {c.shape}")
    params = WalkParams(_spacing(im_info), gate_radius_um(max_distance_um, im_info.dim_res["T"]),
                        forward, "nellie")
    anchors = {t: _anchors(im_info, t, forward) for t in frames}
    res = walk([c], frames, anchors, params, scheduler="sync")
    data, frame_num = emission_rows(res, forward, int(min_track_num), d)
    if isinstance(coords, np.ndarray) and coords.dtype.kind == "f":
        coords[...] = res.final[0]  # Nellie moves the caller's array in place
    return _as_lists(data), {"frame_num": frame_num.tolist()}


def interpolate_all_forward(coords: Any, start_t: int, end_t: int, im_info: ImInfo, min_track_num: int = 0,
                            max_distance_um: float = 0.5) -> tuple[list, dict]:
    """Walk ``coords`` forward from ``start_t`` through frames ``start_t .. end_t - 1`` (Nellie's).

    Returns napari track rows ``[track_id, t, (z), y, x]`` and ``{"frame_num": [...]}``.
    As in Nellie, a float ``coords`` array is moved in place (dead points become NaN).
    """
    frames = [int(t) for t in range(int(start_t), int(end_t))]
    return _walk_all(coords, frames, im_info, min_track_num, max_distance_um, True)


def interpolate_all_backward(coords: Any, start_t: int, end_t: int, im_info: ImInfo, min_track_num: int = 0,
                             max_distance_um: float = 0.5) -> tuple[list, dict]:
    """Walk ``coords`` backward from ``start_t`` down to frame ``end_t`` (inclusive), Nellie's.

    Rows are emitted at ``t - 1`` for each visited ``t``; frame 0 has no backward
    flow, so a walk to 0 ends with rows at frame 0.
    """
    frames = [int(t) for t in range(int(start_t), int(end_t) - 1, -1)]
    return _walk_all(coords, frames, im_info, min_track_num, max_distance_um, False)
