"""OME-TIFF volumes: lazy reading (one dask task per frame) and frame-by-frame writing.

Reading normalises to canonical axes the way Nellie does (spec section 0.2): T
first (a length-1 T is prepended if the file has none), then Z if present, then
Y, X; a singleton Z and a singleton C are squeezed. The physical scale comes
from the OME-XML ``Pixels`` attributes ``PhysicalSizeX/Y/Z`` and
``TimeIncrement``, converted to um and s from their unit attributes (Nellie
ignores the units and assumes um and s; files written by Nellie carry the
defaults, so both read the same numbers).

A task reads its frame from the file itself (a ``numpy.memmap`` of the
uncompressed pixel data, or the frame's pages through tifffile), so graphs stay
small and pickle without data, also on a distributed cluster.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import dask.array as da
import numpy as np

from ..dataset import InputError

__all__ = ["OmeTiffInfo", "ome_tiff_info", "read_ome_tiff", "write_ome_tiff"]

_LENGTH_TO_UM = {
    "µm": 1.0, "um": 1.0, "micrometer": 1.0, "micron": 1.0, "nm": 1e-3, "nanometer": 1e-3,
    "Å": 1e-4, "angstrom": 1e-4, "pm": 1e-6, "mm": 1e3, "millimeter": 1e3, "cm": 1e4,
    "m": 1e6, "meter": 1e6,
}
_TIME_TO_S = {
    "s": 1.0, "second": 1.0, "ms": 1e-3, "millisecond": 1e-3, "µs": 1e-6, "us": 1e-6,
    "microsecond": 1e-6, "ns": 1e-9, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
}


@dataclass(frozen=True)
class OmeTiffInfo:
    """What :func:`read_ome_tiff` needs to know about a file (read from its header only).

    Attributes
    ----------
    path : str
    file_axes, file_shape : str, tuple of int
        Axes and shape of the file's first series, as tifffile reports them.
    axes : str
        Canonical axes after normalisation, ``"TZYX"`` or ``"TYX"``.
    shape : tuple of int
        Canonical shape.
    dtype : numpy.dtype
    offset : int or None
        Byte offset of the contiguous uncompressed pixel data, or None.
    scale : dict
        ``{"T": s, "Z": um, "Y": um, "X": um}`` entries found in the OME-XML.
    """

    path: str
    file_axes: str
    file_shape: tuple[int, ...]
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int | None
    scale: dict


def _ome_scale(xml: str | None) -> dict:
    """Scale entries of the first OME Image's Pixels element, converted to um and s."""
    if not xml:
        return {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    out = {}
    for axis in ("X", "Y", "Z"):
        v = pixels.get(f"PhysicalSize{axis}")
        if v is not None:
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
            out[axis] = float(v) * _LENGTH_TO_UM.get(unit, 1.0)
    v = pixels.get("TimeIncrement")
    if v is not None:
        out["T"] = float(v) * _TIME_TO_S.get(pixels.get("TimeIncrementUnit", "s"), 1.0)
    return out


def ome_tiff_info(path: str | Path) -> OmeTiffInfo:
    """Read the header of an OME-TIFF: axes, shape, dtype, data offset and scale.

    Raises
    ------
    InputError
        If the file cannot be read as a TIFF, or its axes cannot be normalised
        (an axis other than T, C, Z, Y, X of size > 1, or more than one channel).
    """
    import tifffile

    p = Path(path)
    if not p.is_file():
        raise InputError(f"OME-TIFF {str(p)!r} does not exist")
    try:
        with tifffile.TiffFile(str(p)) as tif:
            series = tif.series[0]
            file_axes, file_shape = series.axes, tuple(int(s) for s in series.shape)
            dtype = np.dtype(series.dtype)
            offset = series.dataoffset
            xml = tif.ome_metadata
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise InputError(f"{str(p)!r} is not a readable TIFF file ({exc})") from None
    axes = [a for a in file_axes]
    shape = list(file_shape)
    for i in reversed(range(len(axes))):
        a = axes[i]
        if a in "TZYX":
            continue
        if shape[i] == 1:
            continue
        if a == "C":
            raise InputError(
                f"{str(p)!r} has {shape[i]} channels (axes {file_axes!r}, shape {file_shape}); "
                "allowed: one channel"
            )
        raise InputError(
            f"{str(p)!r} has axis {a!r} of size {shape[i]} (axes {file_axes!r}); allowed axes: "
            "T, Z, Y, X (and singleton others)"
        )
    kept = {a: n for a, n in zip(axes, shape) if a in "TZYX"}
    if "Y" not in kept or "X" not in kept:
        raise InputError(f"{str(p)!r} has axes {file_axes!r}; allowed: Y and X present")
    canon = "T" + ("Z" if kept.get("Z", 1) > 1 else "") + "YX"
    cshape = tuple(kept.get(a, 1) for a in canon)
    return OmeTiffInfo(path=str(p), file_axes=file_axes, file_shape=file_shape, axes=canon,
                       shape=cshape, dtype=dtype, offset=offset, scale=_ome_scale(xml))


def _canonical(data: np.ndarray, file_axes: str, canon: str) -> np.ndarray:
    """Reorder/squeeze a full-series array (a memmap) to ``canon`` axes, lazily (views)."""
    axes = list(file_axes)
    for i in reversed(range(len(axes))):
        if axes[i] not in canon:
            data = data.reshape(data.shape[:i] + data.shape[i + 1:]) if data.shape[i] == 1 \
                else data.take(0, axis=i)
            axes.pop(i)
    if "T" not in axes:
        data = data[np.newaxis]
        axes.insert(0, "T")
    return np.transpose(data, [axes.index(a) for a in canon])


def _read_frame(info: OmeTiffInfo, t: int) -> np.ndarray:
    """Frame ``t`` (canonical spatial axes) of the file, read by the calling task."""
    import tifffile

    if info.offset is not None:
        mm = np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.offset,
                       shape=info.file_shape)
        return np.array(_canonical(mm, info.file_axes, info.axes)[t])
    t_first = info.file_axes.startswith("T") or "T" not in info.file_axes
    if t_first:
        per = int(np.prod(info.file_shape[1:-2], dtype=np.int64)) if "T" in info.file_axes \
            else int(np.prod(info.file_shape[:-2], dtype=np.int64))
        pages = tifffile.imread(info.path, key=range(t * per, (t + 1) * per))
        return pages.reshape(info.shape[1:])
    full = tifffile.imread(info.path)                 # rare layout: read the series
    return np.array(_canonical(full.reshape(info.file_shape), info.file_axes, info.axes)[t])


def read_ome_tiff(path: str | Path) -> tuple[da.Array, str, dict]:
    """Open an OME-TIFF lazily, one frame per chunk.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    array : dask.array.Array
        Shape (T, Z, Y, X) or (T, Y, X), the file's dtype, chunks ``(1, full frame)``.
    axes : {"TZYX", "TYX"}
    scale : dict
        Entries of ``{"T": s, "Z": um, "Y": um, "X": um}`` found in the OME-XML
        (possibly fewer; the caller decides what is missing).
    """
    import dask

    info = ome_tiff_info(path)
    read = dask.delayed(_read_frame, pure=True)
    tok = dask.base.tokenize(info.path, Path(info.path).stat().st_mtime_ns, info.file_shape)
    frames = [da.from_delayed(read(info, t, dask_key_name=f"read-ome-tiff-frame-{tok}-{t}"),
                              shape=info.shape[1:], dtype=info.dtype,
                              name=f"ome-tiff-{tok}-{t}")
              for t in range(info.shape[0])]
    return da.stack(frames, axis=0), info.axes, dict(info.scale)


def write_ome_tiff(
    path: str | Path,
    array: Any,
    *,
    axes: str,
    scale: Mapping[str, float],
    dtype: Any = None,
    description: str | None = None,
) -> Path:
    """Write a (T, ...) array as an uncompressed BigTIFF OME-TIFF, one frame at a time.

    The file is what Nellie's ``ImInfo.allocate_memory`` makes: uncompressed
    contiguous BigTIFF (so ``tifffile.memmap`` works), OME axes ``TZYX``/``TYX``,
    ``PhysicalSizeX/Y/Z`` (um) and ``TimeIncrement`` (s) on the Pixels element.

    Parameters
    ----------
    path : str or Path
    array : dask, zarr or numpy array
        Shape (T, Z, Y, X) or (T, Y, X); each frame is materialised on its own.
    axes : {"TZYX", "TYX"}
    scale : mapping
        ``{"T": s, "Z": um, "Y": um, "X": um}`` (Z left out for TYX).
    dtype : numpy dtype, optional
        Cast to this dtype (default: the array's).
    description : str, optional
        OME ``Image/Description``.

    Returns
    -------
    Path
    """
    import tifffile

    if axes not in ("TZYX", "TYX"):
        raise InputError(f"axes must be 'TZYX' or 'TYX', got {axes!r}")
    shape = tuple(int(s) for s in array.shape)
    if len(shape) != len(axes):
        raise InputError(f"array has shape {shape} but axes {axes!r} need {len(axes)} dimensions")
    dt = np.dtype(dtype if dtype is not None else array.dtype)

    def pages() -> Iterator[np.ndarray]:
        for t in range(shape[0]):
            frame = np.asarray(array[t]).astype(dt, copy=False)
            if frame.ndim == 2:
                yield frame
            else:
                yield from frame

    meta: dict[str, Any] = {"axes": axes}
    sc = {str(k).upper(): float(v) for k, v in dict(scale).items() if v is not None}
    for a in ("X", "Y", "Z"):
        if a in sc and a in axes:
            meta[f"PhysicalSize{a}"] = sc[a]
            meta[f"PhysicalSize{a}Unit"] = "µm"
    if "T" in sc:
        meta["TimeIncrement"] = sc["T"]
        meta["TimeIncrementUnit"] = "s"
    if description is not None:
        meta["Description"] = description
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(str(p), pages(), shape=shape, dtype=dt, ome=True, bigtiff=True,
                     photometric="minisblack", metadata=meta)
    return p
