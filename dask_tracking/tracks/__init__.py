"""Label tracks: voxels followed through time with the interpolated flow (spec section 3)."""

from .label import label_tracks
from .model import Tracks, track_columns
from .stream import write_label_tracks
from .walk import WalkParams, walk

__all__ = ["Tracks", "WalkParams", "label_tracks", "track_columns", "walk", "write_label_tracks"]
