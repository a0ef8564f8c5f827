"""dask_tracking: Nellie's organelle tracking as Dask graphs on zarr.

Public names are imported lazily, so ``import dask_tracking`` stays fast and
optional dependencies load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    # data model
    "Scale": "dask_tracking.dataset",
    "TrackingDataset": "dask_tracking.dataset",
    "InputError": "dask_tracking.dataset",
    "VOLUMES": "dask_tracking.dataset",
    "validate": "dask_tracking.dataset",
    "open_dataset": "dask_tracking.io.open",
    "write_tracking_zarr": "dask_tracking.io.zarr_layout",
    "write_ome_zarr": "dask_tracking.io.ome_zarr",
    "read_nellie_folder": "dask_tracking.io.nellie_folder",
    "write_nellie_folder": "dask_tracking.io.nellie_folder",
    # stages
    "FlowTable": "dask_tracking.flow.table",
    "estimate_flow": "dask_tracking.flow",
    "interpolate_flow": "dask_tracking.interpolate",
    "label_tracks": "dask_tracking.tracks",
    "write_label_tracks": "dask_tracking.tracks",
    "reassign_labels": "dask_tracking.reassign",
    "prepare": "dask_tracking.prepare",
    # the whole job
    "run": "dask_tracking.pipeline",
    "cluster": "dask_tracking.cluster",
    "evaluate": "dask_tracking.evaluate",
}

__all__ = sorted(_PUBLIC) + ["__version__", "datasets", "nellie"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    if name in ("datasets", "nellie", "io", "backend", "config"):
        mod = importlib.import_module(f"dask_tracking.{name}")
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'dask_tracking' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
