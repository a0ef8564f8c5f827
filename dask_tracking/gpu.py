"""Move a dataset's chunks between host (NumPy) and GPU (CuPy) memory, lazily.

The array backend of every stage follows the chunk type of its input (dask's
``_meta``, see :mod:`dask_tracking.backend`); nothing here sets a global device.
:func:`to_device` maps each chunk through ``cupy.asarray`` (one task per chunk,
no data read), so a pipeline built on the result runs its per-chunk kernels
with CuPy; :func:`to_host` is the inverse, for writing.

CuPy is imported only when one of these functions is called; without it the
ImportError names the ``gpu`` extra (``pip install 'dask-tracking[gpu]'``).
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from .backend import is_cupy, require_gpu_extra
from .dataset import VOLUMES, InputError, TrackingDataset

__all__ = ["to_device", "to_host", "array_to_device", "array_to_host", "device_summary"]


def _to_cupy(block: Any) -> Any:
    import cupy

    return cupy.asarray(block)


def _to_numpy(block: Any) -> np.ndarray:
    return block.get() if is_cupy(block) else np.asarray(block)


def array_to_device(a: da.Array) -> da.Array:
    """A dask array with the same chunks and dtype whose chunks are CuPy arrays.

    Parameters
    ----------
    a : dask.array.Array, any shape
        NumPy- (or already CuPy-) backed.

    Returns
    -------
    dask.array.Array
        Same shape, chunks and dtype; ``_meta`` is ``cupy.empty((0,) * a.ndim, a.dtype)``.
        ``a`` itself is returned if its chunks already are CuPy.
    """
    cp = require_gpu_extra("dask_tracking.gpu.to_device")
    if not isinstance(a, da.Array):
        raise InputError(f"a must be a dask array, got {type(a).__name__}")
    if is_cupy(a):
        return a
    return a.map_blocks(_to_cupy, dtype=a.dtype, meta=cp.empty((0,) * a.ndim, dtype=a.dtype))


def array_to_host(a: da.Array) -> da.Array:
    """The inverse of :func:`array_to_device`: NumPy chunks (``a`` itself if already NumPy)."""
    if not isinstance(a, da.Array):
        raise InputError(f"a must be a dask array, got {type(a).__name__}")
    if not is_cupy(a):
        return a
    return a.map_blocks(_to_numpy, dtype=a.dtype, meta=np.empty((0,) * a.ndim, dtype=a.dtype))


def _check_dataset(ds: Any) -> TrackingDataset:
    if not isinstance(ds, TrackingDataset):
        raise InputError(f"dataset must be a TrackingDataset, got {type(ds).__name__}")
    return ds


def to_device(dataset: TrackingDataset) -> TrackingDataset:
    """The same dataset with all six volumes' chunks on the GPU (CuPy), lazily.

    Parameters
    ----------
    dataset : TrackingDataset
        Any chunking; scale, axes, source and truth are kept.

    Returns
    -------
    TrackingDataset
        Each volume ``a`` replaced by :func:`array_to_device(a) <array_to_device>`:
        same shape (T, Z, Y, X) or (T, Y, X), chunks and dtypes.

    Raises
    ------
    InputError
        ``dataset`` is not a TrackingDataset.
    ImportError
        CuPy is missing (the message names the ``gpu`` extra).

    Examples
    --------
    >>> import dask_tracking as dt
    >>> from dask_tracking.gpu import to_device
    >>> ds = to_device(dt.open_dataset("movie.zarr"))          # doctest: +SKIP
    >>> flow = dt.estimate_flow(ds)                            # doctest: +SKIP
    """
    ds = _check_dataset(dataset)
    require_gpu_extra("dask_tracking.gpu.to_device")
    return ds.replace(**{name: array_to_device(getattr(ds, name)) for name in VOLUMES})


def to_host(dataset: TrackingDataset) -> TrackingDataset:
    """The same dataset with NumPy chunks (the inverse of :func:`to_device`)."""
    ds = _check_dataset(dataset)
    return ds.replace(**{name: array_to_host(getattr(ds, name)) for name in VOLUMES})


def device_summary() -> dict:
    """Name, memory (bytes) and compute capability of each visible CUDA device.

    Returns
    -------
    dict
        ``{"cupy": version, "devices": [{"name", "total_memory", "compute_capability"}, ...]}``.
    """
    cp = require_gpu_extra("dask_tracking.gpu.device_summary")
    devices = []
    for i in range(cp.cuda.runtime.getDeviceCount()):
        props = cp.cuda.runtime.getDeviceProperties(i)
        name = props["name"]
        devices.append({
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "total_memory": int(props["totalGlobalMem"]),
            "compute_capability": f"{props['major']}.{props['minor']}",
        })
    return {"cupy": cp.__version__, "devices": devices}
