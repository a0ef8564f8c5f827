"""Flow vectors by Hu-moment marker matching (spec section 1)."""

from .table import FlowTable, flow_columns

__all__ = ["FlowTable", "flow_columns"]
