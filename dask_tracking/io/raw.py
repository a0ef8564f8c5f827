"""Raw movie readers: OME-TIFF / ImageJ TIFF, OME-Zarr images, ND2 (with the ``nd2`` package).

``open_raw(path)`` returns a lazy dask array with axes ``TZYX`` or ``TYX`` (one frame
per chunk), the :class:`~dask_tracking.dataset.Scale` read from the file's metadata
(or given), and the axes string. A movie without a time axis, or without a physical
voxel size or frame interval, raises :class:`~dask_tracking.dataset.InputError` that
says what to pass.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..dataset import VOLUMES, InputError, Scale

__all__ = ["open_raw", "is_raw_source", "as_movie", "RAW_SUFFIXES"]

#: File suffixes read as raw movies.
RAW_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".nd2")

_LENGTH_UM = {"um": 1.0, "µm": 1.0, "micrometer": 1.0, "micron": 1.0, "nm": 1e-3, "nanometer": 1e-3,
              "mm": 1e3, "millimeter": 1e3, "m": 1e6, "meter": 1e6, "pm": 1e-6, "Å": 1e-4, "angstrom": 1e-4}
_TIME_S = {"s": 1.0, "second": 1.0, "sec": 1.0, "ms": 1e-3, "millisecond": 1e-3, "us": 1e-6, "µs": 1e-6,
           "microsecond": 1e-6, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}

_HOW_SCALE = "pass scale={'T': seconds, 'Z': um, 'Y': um, 'X': um} (leave out 'Z' for 2D movies)"


def is_raw_source(path: Any) -> bool:
    """True if ``path`` is a raw movie (TIFF, ND2, OME-Zarr image), False for a tracking dataset.

    A zarr group holding the six tracking volumes, or a Nellie output folder, is not raw.
    """
    p = Path(str(path))
    name = p.name.lower()
    if p.is_file() or not p.exists():
        return name.endswith(RAW_SUFFIXES)
    if p.is_dir() and ((p / "zarr.json").exists() or (p / ".zattrs").exists() or (p / ".zgroup").exists()):
        attrs = _zarr_attrs(p)
        if _multiscales(attrs) is not None:
            return True
        try:
            import zarr

            g = zarr.open_group(str(p), mode="r")
            names = set(g.array_keys())
        except Exception:
            return False
        return "raw" in names and not set(VOLUMES) <= names
    return False


def open_raw(path: Any, scale: Any = None, *, channel: int | None = None,
             axes: str | None = None) -> tuple[da.Array, Scale, str]:
    """Open a raw movie lazily.

    Parameters
    ----------
    path : str or Path
        An OME-TIFF / ImageJ TIFF (``.tif``, ``.ome.tif``), an OME-Zarr image (a
        directory with ``multiscales`` metadata; level 0 is read), a zarr group with
        a ``raw`` array and ``scale``/``axes`` attrs, or an ND2 file (needs ``pip install nd2``).
    scale : Scale, mapping or sequence, optional
        T in s, Z/Y/X in um; replaces the metadata's scale.
    channel : int, optional
        The channel to read from a multi-channel movie (required when it has more than one).
    axes : str, optional
        Replaces the axes the file declares, e.g. ``"TYX"`` for a plain TIFF stack of 2D frames.

    Returns
    -------
    (dask.array.Array, Scale, str)
        The movie (T, Z, Y, X) or (T, Y, X), one frame per chunk; its scale; its axes.

    Raises
    ------
    InputError
        Missing file, unknown format, no time axis, no scale in the metadata and none
        given, or several channels and no ``channel``.
    """
    p = Path(str(path))
    if not p.exists():
        raise InputError(f"raw movie {str(p)!r} does not exist")
    name = p.name.lower()
    if p.is_file() and name.endswith((".tif", ".tiff")):
        arr, file_axes, meta = _read_tiff(p)
    elif p.is_file() and name.endswith(".nd2"):
        arr, file_axes, meta = _read_nd2(p)
    elif p.is_dir():
        arr, file_axes, meta = _read_zarr(p)
    else:
        raise InputError(
            f"raw movie {str(p)!r} has an unknown format; allowed: OME-TIFF or TIFF (.tif, .tiff), "
            "OME-Zarr (a directory), ND2 (.nd2)"
        )
    if axes is not None:
        if len(axes) != arr.ndim:
            raise InputError(f"axes={axes!r} has {len(axes)} letters but {str(p)!r} has {arr.ndim} "
                             f"dimensions (shape {tuple(arr.shape)}, file axes {file_axes!r})")
        file_axes = axes
    return _finish(arr, file_axes, meta, scale, channel, str(p))


def as_movie(raw: Any, scale: Any, *, axes: str | None = None, channel: int | None = None,
             source: str = "array") -> tuple[da.Array, Scale, str]:
    """Check an in-memory movie (numpy or dask) and its scale; same return as :func:`open_raw`.

    ``axes`` defaults to ``TZYX`` for 4-D and ``TYX`` for 3-D arrays; give it (e.g.
    ``"ZYX"``, ``"TCZYX"``) for other layouts.
    """
    nd = getattr(raw, "ndim", None)
    if nd is None:
        raw = np.asarray(raw)
        nd = raw.ndim
    if axes is None:
        if nd == 4:
            axes = "TZYX"
        elif nd == 3:
            axes = "TYX"
        else:
            raise InputError(
                f"raw has {nd} dimensions (shape {tuple(raw.shape)}); allowed: 4 (T, Z, Y, X) or "
                "3 (T, Y, X), or pass axes= naming every axis, e.g. axes='TCZYX' with channel=0"
            )
    if scale is None:
        raise InputError(f"raw arrays carry no scale: {_HOW_SCALE}")
    arr = raw if isinstance(raw, da.Array) else da.from_array(np.asarray(raw), chunks="auto")
    return _finish(arr, axes.upper(), {}, scale, channel, source)


# ---------------------------------------------------------------------------- helpers
def _finish(arr, axes: str, meta: dict, scale: Any, channel: int | None, source: str):
    axes = axes.upper()
    if len(axes) != arr.ndim:
        raise InputError(f"axes {axes!r} do not match the {arr.ndim} dimensions of {source!r} "
                         f"(shape {tuple(arr.shape)})")
    unknown = set(axes) - set("TCZYX")
    for a in sorted(unknown):  # singleton extra axes (tifffile's 'Q', 'S', 'I') are dropped
        i = axes.index(a)
        if arr.shape[i] != 1:
            raise InputError(f"{source!r} has an axis {a!r} of size {arr.shape[i]} (axes {axes!r}) that is "
                             "not T, C, Z, Y or X: pass axes= naming every axis, e.g. axes='TYX' or 'TZYX'")
        arr = arr[(slice(None),) * i + (0,)]
        axes = axes.replace(a, "")
    if "C" in axes:
        i = axes.index("C")
        n = arr.shape[i]
        if channel is None and n != 1:
            raise InputError(f"{source!r} has {n} channels (axes {axes!r}); pass channel= one of 0..{n - 1}")
        c = 0 if channel is None else int(channel)
        if not 0 <= c < n:
            raise InputError(f"channel must be one of 0..{n - 1} for {source!r}, got {channel!r}")
        arr = arr[(slice(None),) * i + (c,)]
        axes = axes.replace("C", "")
    if "T" not in axes:
        raise InputError(
            f"{source!r} has axes {axes!r} and no time axis (T): tracking needs a movie; pass a "
            "time series with axes TZYX or TYX (for arrays: raw of shape (T, Z, Y, X) or axes='TZYX')"
        )
    for need in ("Y", "X"):
        if need not in axes:
            raise InputError(f"{source!r} has axes {axes!r} without {need}; allowed: TZYX or TYX")
    order = "TZYX" if "Z" in axes else "TYX"
    arr = arr.transpose([axes.index(a) for a in order])
    if scale is not None:
        sc = Scale.coerce(scale, order)
    else:
        missing = [a for a in order if not meta.get(a)]
        if missing:
            have = {a: meta[a] for a in order if meta.get(a)}
            raise InputError(
                f"{source!r} has no {', '.join(missing)} size in its metadata (found {have}); {_HOW_SCALE}"
            )
        sc = Scale.coerce({a: meta[a] for a in order}, order)
    if arr.shape[0] < 2:
        raise InputError(f"{source!r} has {arr.shape[0]} frame(s) along T; tracking needs at least 2")
    arr = arr.rechunk({0: 1})
    return arr, sc, order


def _unit(value: float, unit: str | None, table: dict[str, float]) -> float:
    if unit is None:
        return float(value)
    f = table.get(str(unit).strip(), table.get(str(unit).strip().lower()))
    return float(value) * (f if f is not None else 1.0)


def _read_tiff(p: Path):
    import tifffile

    with tifffile.TiffFile(str(p)) as tf:
        series = tf.series[0]
        axes = series.axes.upper()
        shape, dtype = tuple(series.shape), series.dtype
        meta: dict[str, float] = {}
        if tf.is_ome and tf.ome_metadata:
            meta = _ome_xml_scale(tf.ome_metadata)
        elif tf.is_imagej:
            meta = _imagej_scale(tf)
    t_axis = axes.index("T") if "T" in axes else None
    if t_axis is None:
        arr = da.from_delayed(_delayed_tiff(str(p), None, 0), shape=shape, dtype=dtype)
        return arr, axes, meta
    frame_shape = shape[:t_axis] + shape[t_axis + 1:]
    frames = [da.from_delayed(_delayed_tiff(str(p), t, t_axis), shape=frame_shape, dtype=dtype)
              for t in range(shape[t_axis])]
    return da.stack(frames, axis=t_axis), axes, meta


def _delayed_tiff(path: str, t: int | None, t_axis: int):
    import dask

    return dask.delayed(_read_tiff_frame, pure=True)(path, t, t_axis)


def _read_tiff_frame(path: str, t: int | None, t_axis: int) -> np.ndarray:
    """One frame of a TIFF series, read through tifffile's zarr view (only that frame's pages)."""
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tf:
        store = tf.series[0].aszarr(level=0)
        z = zarr.open(store, mode="r")
        if t is None:
            return np.asarray(z[...])
        index = (slice(None),) * t_axis + (t,)
        return np.asarray(z[index])


def _ome_xml_scale(xml: str) -> dict[str, float]:
    root = ET.fromstring(xml)
    pixels = None
    for el in root.iter():
        if el.tag.endswith("}Pixels") or el.tag == "Pixels":
            pixels = el
            break
    if pixels is None:
        return {}
    out: dict[str, float] = {}
    for ax in ("X", "Y", "Z"):
        v = pixels.get(f"PhysicalSize{ax}")
        if v is not None:
            out[ax] = _unit(float(v), pixels.get(f"PhysicalSize{ax}Unit", "µm"), _LENGTH_UM)
    v = pixels.get("TimeIncrement")
    if v is not None:
        out["T"] = _unit(float(v), pixels.get("TimeIncrementUnit", "s"), _TIME_S)
    return out


def _imagej_scale(tf) -> dict[str, float]:
    meta = tf.imagej_metadata or {}
    page = tf.pages[0]
    out: dict[str, float] = {}
    unit = meta.get("unit", "um")
    unit = "um" if unit in ("micron", "\\u00B5m", "microns") else unit
    for ax, tag in (("X", "XResolution"), ("Y", "YResolution")):
        t = page.tags.get(tag)
        if t is not None:
            num, den = t.value
            if num:
                out[ax] = _unit(den / num, unit, _LENGTH_UM)
    if meta.get("spacing"):
        out["Z"] = _unit(float(meta["spacing"]), unit, _LENGTH_UM)
    if meta.get("finterval"):
        out["T"] = float(meta["finterval"])
    return out


def _zarr_attrs(p: Path) -> dict:
    for name in ("zarr.json", ".zattrs"):
        f = p / name
        if f.exists():
            try:
                d = json.loads(f.read_text())
            except ValueError:
                return {}
            return d.get("attributes", d) if name == "zarr.json" else d
    return {}


def _multiscales(attrs: dict):
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    return ms[0] if ms else None


def _read_zarr(p: Path):
    import zarr

    attrs = _zarr_attrs(p)
    ms = _multiscales(attrs)
    g = zarr.open_group(str(p), mode="r")
    if ms is None:
        if "raw" in set(g.array_keys()):
            arr = da.from_zarr(g["raw"])
            axes = attrs.get("axes") or ("TZYX" if arr.ndim == 4 else "TYX")
            return arr, axes, {k.upper(): v for k, v in (attrs.get("scale") or {}).items()}
        raise InputError(f"zarr group {str(p)!r} is not an OME-Zarr image (no 'multiscales' metadata) "
                         "and holds no 'raw' array")
    axes_meta = ms.get("axes") or []
    names = [(a["name"] if isinstance(a, dict) else str(a)).upper() for a in axes_meta]
    ds0 = ms["datasets"][0]
    arr = da.from_zarr(g[ds0["path"]])
    if not names:
        names = list("TCZYX"[-arr.ndim:])
    meta: dict[str, float] = {}
    for tr in list(ms.get("coordinateTransformations") or []) + list(ds0.get("coordinateTransformations") or []):
        if tr.get("type") == "scale":
            for i, (n, v) in enumerate(zip(names, tr["scale"])):
                unit = axes_meta[i].get("unit") if i < len(axes_meta) and isinstance(axes_meta[i], dict) else None
                table = _TIME_S if n == "T" else _LENGTH_UM
                meta[n] = meta.get(n, 1.0) * _unit(float(v), unit, table)
    return arr, "".join(names), meta


def _read_nd2(p: Path):
    try:
        import nd2
    except ImportError as exc:
        raise ImportError(f"reading ND2 files needs the nd2 package: pip install nd2 ({exc})") from exc
    with nd2.ND2File(str(p)) as f:
        sizes = dict(f.sizes)
        vs = f.voxel_size()
        meta = {"X": vs.x, "Y": vs.y}
        if "Z" in sizes:
            meta["Z"] = vs.z
        for loop in f.experiment or []:
            if getattr(loop, "type", "") in ("TimeLoop", "NETimeLoop"):
                period = getattr(loop.parameters, "periodMs", None)
                if period:
                    meta["T"] = float(period) * 1e-3
                break
    arr = nd2.imread(str(p), dask=True)
    return arr, "".join(sizes).upper(), meta
