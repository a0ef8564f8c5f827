"""Flow interpolation at arbitrary coordinates (spec section 2).

:func:`interpolate_flow` is the public entry point; :mod:`.kernel` holds the
per-block array code (used by the tracks and reassignment stages too).
"""

from .api import interpolate_flow
from .kernel import Anchors, empty_anchors, frame_anchors, interpolate_points, neighbour_counts

__all__ = ["Anchors", "empty_anchors", "frame_anchors", "interpolate_flow", "interpolate_points",
           "neighbour_counts"]
