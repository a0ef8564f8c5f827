"""Flow vectors by Hu-moment marker matching (spec section 1), refined to sub-voxel precision."""

from .assignment import assign_one_to_one, one_to_one_flow
from .estimate import MODES, FlowParams, estimate_flow
from .features import FrameFeatures
from .refine import RefinePlan, coarse_vectors, refine_flow, refine_vectors
from .table import FlowTable, flow_columns

__all__ = ["FlowParams", "FlowTable", "FrameFeatures", "MODES", "RefinePlan", "assign_one_to_one",
           "coarse_vectors", "estimate_flow", "flow_columns", "one_to_one_flow", "refine_flow",
           "refine_vectors"]
