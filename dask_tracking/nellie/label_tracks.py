"""Nellie's ``LabelTracks``: voxel tracks of one label or all labels (spec section 3).

A thin facade over :func:`dask_tracking.label_tracks` with ``compat="nellie"``:
same rows as Nellie 1.0.4 (start frame twice when both directions run, points
filtered to "inside any label", Q-A / Q-B quirks), returned as Nellie does, a
list of ``[track_id, t, (z), y, x]`` rows and ``{"frame_num": [...]}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..dataset import VOLUMES, InputError
from ..tracks.label import label_tracks
from .flow_interpolation import _as_lists
from .im_info import ImInfo

__all__ = ["LabelTracks"]


def _open_labels(im_info: ImInfo, source: Any) -> da.Array:
    """A label volume: the dataset's labels, a volume name, an output array name, a path or an array."""
    if source is None:
        return im_info.dataset.labels
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        return source if isinstance(source, da.Array) else da.from_array(
            source, chunks=(1,) + tuple(source.shape[1:]))
    name = str(source)
    if name in VOLUMES:
        return getattr(im_info.dataset, name)
    if im_info.output is not None and (im_info.output / name).exists():
        return da.from_zarr(str(im_info.output), component=name)
    p = Path(name)
    if p.suffix.lower() in (".tif", ".tiff") and p.exists():
        import tifffile
        import zarr

        store = tifffile.imread(str(p), aszarr=True)
        arr = da.from_zarr(zarr.open(store, mode="r"))
        return arr.reshape(im_info.shape) if arr.size == int(np.prod(im_info.shape)) else arr
    if p.exists():
        return da.from_zarr(str(p))
    raise InputError(
        f"label_im_path {source!r} is neither a dataset volume ({', '.join(VOLUMES)}), an array of the "
        f"output store, an existing zarr array or OME-TIFF path, nor an array"
    )


class LabelTracks:
    """Track the voxels of a label through time (Nellie's class).

    Parameters
    ----------
    im_info : ImInfo
    num_t : int, optional
        Number of frames (default: all); the default ``end_frame`` of :meth:`run`.
    label_im_path : str, Path or array, optional
        The label volume: default the dataset's ``labels``; a dataset volume name,
        an array name of the output store (e.g. ``"labels_reassigned"``), a zarr
        or OME-TIFF path, or an array.
    """

    def __init__(self, im_info: ImInfo, num_t: int | None = None, label_im_path: Any = None):
        self.im_info = im_info
        self.num_t = num_t if num_t is not None else im_info.shape[0]
        self.label_im_path = label_im_path
        self.label_memmap: da.Array | None = None
        self.im_memmap: da.Array | None = None

    def initialize(self) -> None:
        """Open the label volume and the raw image (lazily)."""
        self.label_memmap = _open_labels(self.im_info, self.label_im_path)
        self.im_memmap = self.im_info.dataset.raw

    def run(self, label_num: int | None = None, start_frame: int = 0, end_frame: int | None = None,
            min_track_num: int = 0, skip_coords: int = 1, max_distance_um: float = 0.5) -> tuple[list, dict]:
        """Tracks of ``label_num`` (all labels if None) seeded at ``start_frame``, Nellie's rows.

        Returns
        -------
        tracks : list of [track_id, t, (z), y, x]
        properties : dict
            ``{"frame_num": [...]}`` aligned with ``tracks``; ``([], {})`` when
            there is nothing to track.
        """
        if self.label_memmap is None:
            self.initialize()
        lab = self.label_memmap
        if end_frame is None:
            end_frame = self.num_t
        if start_frame > lab.shape[0] - 1:
            return [], {}
        end = max(0, min(int(end_frame), lab.shape[0]))
        if not (start_frame < end or start_frame > 0):
            return [], {}
        tr = label_tracks(self.im_info.dataset, self.im_info.flow_table(), label=label_num,
                          start_frame=int(start_frame), end_frame=end, min_track_num=int(min_track_num),
                          skip_coords=int(skip_coords), max_distance_um=max_distance_um, compat="nellie",
                          labels=lab)
        if tr.attrs.get("n_seeds", 1) == 0:
            return [], {}
        return _as_lists(tr.data), {"frame_num": tr.properties["frame_num"].tolist()}
