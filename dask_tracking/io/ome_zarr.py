"""OME-Zarr input: a zarr v3 group holding each of the six volumes as an OME-Zarr image.

Layout (NGFF 0.5)::

    movie.zarr/                 zarr v3 group
      raw/                      an OME-Zarr image: attrs {"ome": {"version": "0.5", "multiscales": [...]}}
        0/                      level 0 (the only level read), axes t, [c], [z], y, x
      preprocessed/ distance/ markers/ labels/ branches/   the same

The scale is taken from level 0's ``scale`` coordinate transformation (times
the multiscale-wide one, if any), in the axes' units converted to seconds and
micrometres. A singleton ``c`` or ``z`` axis is squeezed; a missing ``t`` axis
becomes a length-1 T. NGFF 0.4-style attributes (``multiscales`` at the top of
the attributes) are read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..dataset import VOLUMES, InputError, Scale, TrackingDataset
from .chunk_files import from_zarr

__all__ = ["is_ome_zarr_collection", "read_ome_zarr", "write_ome_zarr", "NGFF_VERSION"]

NGFF_VERSION = "0.5"
_SPACE_TO_UM = {
    "micrometer": 1.0, "nanometer": 1e-3, "angstrom": 1e-4, "picometer": 1e-6, "millimeter": 1e3,
    "centimeter": 1e4, "meter": 1e6, "um": 1.0, "µm": 1.0, "nm": 1e-3, "mm": 1e3,
}
_TIME_TO_S = {
    "second": 1.0, "millisecond": 1e-3, "microsecond": 1e-6, "nanosecond": 1e-9, "minute": 60.0,
    "hour": 3600.0, "s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0,
}


def _multiscales(attrs: Any) -> list | None:
    a = dict(attrs)
    ome = a.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return ome["multiscales"]
    if isinstance(a.get("multiscales"), list):
        return a["multiscales"]
    return None


def is_ome_zarr_collection(group: Any) -> bool:
    """True if ``group`` has the six volumes as child groups that are OME-Zarr images."""
    try:
        names = set(group.group_keys())
    except Exception:
        return False
    if not set(VOLUMES) <= names:
        return False
    return all(_multiscales(group[n].attrs) for n in VOLUMES)


def _scale_of(ms: dict, axes: list[dict], where: str) -> list[float]:
    def scale_in(transforms: Any) -> np.ndarray:
        out = np.ones(len(axes))
        for tr in transforms or []:
            if tr.get("type") == "scale":
                if "scale" not in tr:
                    raise InputError(f"{where}: a 'scale' transformation without values (a path "
                                     "to a binary scale is not supported)")
                out = out * np.asarray(tr["scale"], dtype=float)
        return out

    level0 = ms["datasets"][0]
    s = scale_in(level0.get("coordinateTransformations")) * scale_in(ms.get("coordinateTransformations"))
    out = []
    for ax, v in zip(axes, s):
        unit = ax.get("unit")
        kind = ax.get("type")
        if kind == "time":
            factor = _TIME_TO_S.get(unit, 1.0) if unit else 1.0
            if unit and unit not in _TIME_TO_S:
                raise InputError(f"{where}: time unit {unit!r} is not supported; allowed: "
                                 f"{', '.join(sorted(k for k in _TIME_TO_S if len(k) > 3))}")
        elif kind == "space":
            factor = _SPACE_TO_UM.get(unit, 1.0) if unit else 1.0
            if unit and unit not in _SPACE_TO_UM:
                raise InputError(f"{where}: space unit {unit!r} is not supported; allowed: "
                                 f"{', '.join(sorted(k for k in _SPACE_TO_UM if len(k) > 3))}")
        else:
            factor = 1.0
        out.append(float(v) * factor)
    return out


def _read_image(group: Any, name: str, where: str) -> tuple[da.Array, str, dict]:
    ms = _multiscales(group.attrs)[0]
    axes = ms.get("axes")
    if not axes:
        raise InputError(f"{where}: multiscales has no 'axes'")
    axes = [a if isinstance(a, dict) else {"name": a} for a in axes]
    names = [str(a["name"]).lower() for a in axes]
    path0 = ms["datasets"][0]["path"]
    arr = from_zarr(group[path0])
    if arr.ndim != len(names):
        raise InputError(f"{where}: level {path0!r} has {arr.ndim} dimensions but axes {names}")
    scale = dict(zip(names, _scale_of(ms, axes, where)))
    index = []
    kept = []
    for n, size in zip(names, arr.shape):
        if n in ("t", "z", "y", "x") and not (n == "z" and size == 1):
            index.append(slice(None))
            kept.append(n)
        elif size == 1:
            index.append(0)
        else:
            raise InputError(f"{where}: axis {n!r} has size {size}; allowed: t, z, y, x "
                             "(other axes of size 1)")
    arr = arr[tuple(index)]
    if "t" not in kept:
        arr = arr[None]
        kept.insert(0, "t")
    if not {"y", "x"} <= set(kept):
        raise InputError(f"{where}: axes {names}; allowed: y and x present")
    order = [kept.index(a) for a in ("t", "z", "y", "x") if a in kept]
    arr = arr.transpose(order)
    canon = "".join(a.upper() for a in ("t", "z", "y", "x") if a in kept)
    sc = {a.upper(): scale[a] for a in ("t", "z", "y", "x") if a in kept and a in scale}
    if "t" not in names:
        sc.pop("T", None)
    return arr, canon, sc


def read_ome_zarr(path: str | Path, scale: Any = None, group: Any = None) -> TrackingDataset:
    """Open six OME-Zarr images (level 0) lazily as a TrackingDataset.

    Parameters
    ----------
    path : str or Path
        The parent zarr group.
    scale : optional
        Overrides the coordinate transformations.
    group : zarr.Group, optional
        The already opened parent group.

    Raises
    ------
    InputError
        A volume missing or not an OME-Zarr image, unsupported axes or units,
        images of different shapes or scales, no time scale and none given.
    """
    import zarr

    g = group if group is not None else zarr.open_group(str(path), mode="r")
    names = set(g.group_keys())
    missing = [n for n in VOLUMES if n not in names or not _multiscales(g[n].attrs)]
    if missing:
        raise InputError(f"OME-Zarr group {str(path)!r} lacks OME-Zarr images for: "
                         f"{', '.join(missing)}; it must hold {', '.join(VOLUMES)}")
    arrays, scales, axes_of = {}, {}, {}
    for n in VOLUMES:
        arrays[n], axes_of[n], scales[n] = _read_image(g[n], n, f"OME-Zarr image {str(path)!r}/{n}")
    axes = axes_of["labels"]
    if scale is None:
        ref = scales["labels"]
        for n in VOLUMES:
            other = scales[n]
            if axes_of[n] == axes and any(not np.isclose(other.get(a, ref.get(a)), ref.get(a))
                                           for a in ref if ref.get(a) is not None):
                raise InputError(
                    f"OME-Zarr image {n!r} has scale {other} but 'labels' has {ref}; all six must agree"
                )
        want = ("T", "Z", "Y", "X") if axes == "TZYX" else ("T", "Y", "X")
        lacking = [a for a in want if a not in ref]
        if lacking:
            raise InputError(f"OME-Zarr group {str(path)!r} gives no scale for {', '.join(lacking)}; "
                             "pass scale={'T': s, 'Z': um, 'Y': um, 'X': um}")
        scale = ref
    return TrackingDataset.from_arrays(arrays, Scale.coerce(scale, axes), axes=axes, source=str(path))


def write_ome_zarr(ds: TrackingDataset, path: str | Path, *, overwrite: bool = False,
                   compute: bool = True) -> Any:
    """Write the six volumes as OME-Zarr (NGFF 0.5) images in one zarr v3 group.

    Each volume ``<name>/`` gets one level ``0`` with axes ``t, z, y, x`` (or
    ``t, y, x``), units second and micrometer, a ``scale`` transformation equal to
    the dataset's scale, and the dataset's chunks (one frame per chunk on T).

    Returns
    -------
    zarr.Group, or the lazy store (a dask object) with ``compute=False``.
    """
    import zarr

    if not isinstance(ds, TrackingDataset):
        raise InputError(f"ds must be a TrackingDataset, got {type(ds).__name__}")
    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(f"{str(p)!r} exists; pass overwrite=True to replace it")
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    g.attrs["dask_tracking"] = {"layout": "ome-zarr collection", "volumes": list(VOLUMES),
                                "source": ds.source or ""}
    names = [a.lower() for a in ds.axes]
    sc = ds.scale.as_dict()
    axes_meta = [{"name": n, "type": "time" if n == "t" else "space",
                  "unit": "second" if n == "t" else "micrometer"} for n in names]
    sources, targets = [], []
    for name, a in ds.arrays().items():
        img = g.create_group(name)
        img.attrs["ome"] = {
            "version": NGFF_VERSION,
            "multiscales": [{
                "name": name,
                "axes": axes_meta,
                "datasets": [{"path": "0", "coordinateTransformations": [
                    {"type": "scale", "scale": [float(sc[ax.upper()]) for ax in names]}]}],
            }],
        }
        z = img.create_array("0", shape=a.shape, dtype=a.dtype,
                             chunks=tuple(c[0] for c in a.chunks),
                             dimension_names=names)
        sources.append(a)
        targets.append(z)
    out = da.store(sources, targets, lock=False, compute=compute)
    return g if compute else out
