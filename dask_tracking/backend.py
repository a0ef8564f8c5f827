"""Array backend chosen by the chunk type of the input, never by a global.

A dask array whose ``_meta`` is a CuPy array runs its per-chunk kernels with
CuPy; otherwise NumPy. CuPy is imported lazily, only when such an array is seen.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["array_module", "is_cupy", "to_host", "require_gpu_extra", "cupy_available"]


def is_cupy(x: Any) -> bool:
    """True if ``x`` (an array, or a dask array via its ``_meta``) is a CuPy array."""
    meta = getattr(x, "_meta", x)
    mod = type(meta).__module__
    return mod.startswith("cupy")


def array_module(x: Any) -> ModuleType:
    """``cupy`` if ``x`` (or its dask ``_meta``) is a CuPy array, else ``numpy``."""
    if is_cupy(x):
        return importlib.import_module("cupy")
    return np


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy of ``x`` (no copy if it already is NumPy)."""
    if is_cupy(x):
        return x.get()
    return np.asarray(x)


def require_gpu_extra(what: str = "GPU support") -> ModuleType:
    """Import CuPy or raise an ImportError that names the ``gpu`` extra."""
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError(
            f"{what} needs CuPy: install the gpu extra, pip install 'dask-tracking[gpu]' "
            f"(cupy and dask-cuda); import failed with: {exc}"
        ) from exc


def cupy_available() -> bool:
    """True if CuPy imports and sees at least one CUDA device."""
    try:
        cp = importlib.import_module("cupy")
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
