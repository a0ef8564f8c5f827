"""GPU tests: skipped with the reason where CuPy or a CUDA device is absent."""

from __future__ import annotations

import pytest


def _cuda_reason() -> str | None:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy is not installed (pip install 'dask-tracking[gpu]'): {exc.__class__.__name__}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no CUDA device: {exc}"
    if n < 1:
        return "no CUDA device"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _cuda_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=f"GPU test: {reason}")
    for item in items:
        # modules that set NEEDS_CUDA = False test the CPU side of the GPU support (the
        # brute-force search with NumPy, the ImportError naming the gpu extra) and run anywhere
        if not getattr(getattr(item, "module", None), "NEEDS_CUDA", True):
            continue
        if "tests/gpu" in str(item.fspath).replace("\\", "/"):
            item.add_marker(marker)
