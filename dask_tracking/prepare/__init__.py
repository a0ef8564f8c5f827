"""From a raw movie to the tracking inputs: Nellie's Filter, Label, Network and Markers on Dask.

Public names: :func:`prepare`, :class:`PreparedMovie`, the parameter objects
(:class:`PrepareParams`, :class:`FilterParams`, :class:`LabelParams`,
:class:`NetworkParams`, :class:`MarkerParams`) and the per-stage functions
(:func:`filter_movie`, :func:`label_movie`, :func:`network_movie`,
:func:`markers_movie`, and their one-frame numpy forms ``*_frame``).

The package itself is callable, ``dask_tracking.prepare(raw, scale)``, so the
top-level name works whether Python resolved it to this package or to the function.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_PUBLIC = {
    "prepare": "api", "PreparedMovie": "api", "EXTRAS": "api",
    "PrepareParams": "params", "FilterParams": "params", "LabelParams": "params",
    "NetworkParams": "params", "MarkerParams": "params",
    "filter_movie": "frangi", "filter_frame": "frangi", "filter_halo": "frangi",
    "label_movie": "label", "label_frame": "label",
    "network_movie": "network", "network_frame": "network",
    "markers_movie": "markers", "markers_frame": "markers",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _CallablePackage(types.ModuleType):
    """Lets ``dask_tracking.prepare(...)`` call :func:`prepare` even when it names this package."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return __getattr__("prepare")(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
