"""Flow interpolation at arbitrary coordinates (spec section 2)."""

from .kernel import Anchors, empty_anchors, frame_anchors, interpolate_points, neighbour_counts

__all__ = ["Anchors", "empty_anchors", "frame_anchors", "interpolate_points", "neighbour_counts"]
