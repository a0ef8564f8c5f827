"""The class API of Nellie 1.0.4's tracking stage, as thin facades over the functional core.

``ImInfo`` adapts a :class:`~dask_tracking.TrackingDataset` and an output location;
``HuMomentTracking``, ``FlowInterpolator``, ``interpolate_all_forward``,
``interpolate_all_backward``, ``LabelTracks`` and ``VoxelReassigner`` keep Nellie's
names and signatures and call :func:`~dask_tracking.estimate_flow`,
:func:`~dask_tracking.interpolate_flow`, :func:`~dask_tracking.label_tracks` and
:func:`~dask_tracking.reassign_labels`.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ImInfo": "dask_tracking.nellie.im_info",
    "HuMomentTracking": "dask_tracking.nellie.hu_tracking",
    "FlowInterpolator": "dask_tracking.nellie.flow_interpolation",
    "interpolate_all_forward": "dask_tracking.nellie.flow_interpolation",
    "interpolate_all_backward": "dask_tracking.nellie.flow_interpolation",
    "LabelTracks": "dask_tracking.nellie.label_tracks",
    "VoxelReassigner": "dask_tracking.nellie.voxel_reassignment",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dask_tracking.nellie' has no attribute {name!r}")
