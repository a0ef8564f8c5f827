"""Voxel reassignment: object and branch identities through time (spec section 4).

:func:`reassign_labels` carries the frame-0 object and branch ids of a
:class:`~dask_tracking.TrackingDataset` through every frame, voxel by voxel,
with the flow of :func:`~dask_tracking.estimate_flow`. The result is lazy and is
written with :meth:`Reassignment.store`.
"""

from .api import reassign_labels
from .params import ReassignParams
from .result import Reassignment

__all__ = ["ReassignParams", "Reassignment", "reassign_labels"]
