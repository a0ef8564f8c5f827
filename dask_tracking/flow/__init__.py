"""Flow vectors by Hu-moment marker matching (spec section 1)."""

from .estimate import MODES, FlowParams, estimate_flow
from .features import FrameFeatures
from .table import FlowTable, flow_columns

__all__ = ["FlowParams", "FlowTable", "FrameFeatures", "MODES", "estimate_flow", "flow_columns"]
