"""The C library's ``log10f``, ``log10`` and ``pow``, element by element.

NumPy dispatches ``log10`` and ``power`` to SIMD kernels (SVML on AVX-512 CPUs)
whose results differ from the C library's in the last bit for a few percent of
inputs. Nellie 1.0.4's reference outputs were made where NumPy used the C
library, so compat mode calls it directly and gives the same bits on any x86-64
or ARM CPU. Only small arrays go through here (the positive preprocessed voxels
of a block, the ROI coordinate powers, the Hu moments), and large arrays call the
C function once per distinct value, so the per-element call is cheap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import math
from functools import lru_cache

import numpy as np

__all__ = ["log10f", "log10", "power"]


@lru_cache(maxsize=1)
def _log10f():
    name = ctypes.util.find_library("m") or "libm.so.6"
    try:
        # PyDLL keeps the GIL during the call: a CDLL function releases and takes it back on
        # every call, and with one call per distinct voxel value, threads that share the GIL
        # queue behind each other
        fn = ctypes.PyDLL(name).log10f
    except (OSError, AttributeError):  # pragma: no cover - no C math library
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


def log10f(x: np.ndarray) -> np.ndarray:
    """float32 ``log10f`` of every element of a float32 array (same shape)."""
    x = np.asarray(x, dtype=np.float32)
    fn = _log10f()
    if fn is None:  # pragma: no cover
        return np.log10(x.astype(np.float64)).astype(np.float32)
    values, inverse = _distinct(x.ravel())
    out = np.fromiter(map(fn, values.tolist()), dtype=np.float32, count=values.size)
    return (out if inverse is None else out[inverse]).reshape(x.shape)


def log10(x: np.ndarray) -> np.ndarray:
    """float64 C ``log10`` of every element (positive, finite inputs)."""
    x = np.asarray(x, dtype=np.float64)
    values, inverse = _distinct(x.ravel())
    out = np.fromiter(map(math.log10, values.tolist()), dtype=np.float64, count=values.size)
    return (out if inverse is None else out[inverse]).reshape(x.shape)


def power(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """float64 C ``pow`` with NumPy broadcasting.

    ``pow(x, 0) == 1`` and ``pow(x, 1) == x`` exactly, so only other exponents
    are evaluated, one exponent at a time and (for large arrays) once per distinct
    base: the same C calls on the same values as element by element.
    """
    b, e = np.broadcast_arrays(np.asarray(base, dtype=np.float64), np.asarray(exponent, dtype=np.float64))
    out = np.where(e == 0, 1.0, b)
    todo = (e != 0) & (e != 1)
    if not np.any(todo):
        return out
    for ev in np.unique(e[todo]).tolist():
        sel = todo & (e == ev)
        values, inverse = _distinct(b[sel])
        res = np.fromiter(map(math.pow, values.tolist(), itertools.repeat(ev, values.size)),
                          dtype=np.float64, count=values.size)
        out[sel] = res if inverse is None else res[inverse]
    return out


#: Above this many elements the C function is called once per distinct value.
_DISTINCT_MIN = 2048


def _distinct(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(values to evaluate, index of each element in them or None): the distinct values of
    a large array (bit patterns: -0.0 and 0.0, NaNs stay apart), else the array itself."""
    if flat.size <= _DISTINCT_MIN:
        return flat, None
    bits = flat.view(np.uint32 if flat.dtype.itemsize == 4 else np.uint64)
    ub, inverse = np.unique(bits, return_inverse=True)
    return ub.view(flat.dtype), inverse.reshape(-1)
