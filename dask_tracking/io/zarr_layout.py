"""Our zarr v3 input layout: a group holding the six volumes, attrs ``axes`` and ``scale``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da

from ..dataset import VOLUMES, InputError, Scale, TrackingDataset
from .chunk_files import from_zarr

__all__ = ["is_tracking_zarr", "read_tracking_zarr", "write_tracking_zarr"]


def is_tracking_zarr(group: Any) -> bool:
    """True if a zarr group holds the six volumes as direct arrays."""
    try:
        names = set(group.array_keys())
    except Exception:
        return False
    return set(VOLUMES) <= names


def read_tracking_zarr(path: str | Path, scale: Any = None, group: Any = None) -> TrackingDataset:
    """Open our zarr layout lazily. ``scale`` overrides the group's ``scale`` attribute."""
    import zarr

    g = group if group is not None else zarr.open_group(str(path), mode="r")
    missing = [n for n in VOLUMES if n not in set(g.array_keys())]
    if missing:
        raise InputError(
            f"zarr group {str(path)!r} is missing arrays: {', '.join(missing)}; it must hold "
            f"{', '.join(VOLUMES)}"
        )
    attrs = dict(g.attrs)
    axes = attrs.get("axes")
    arrays = {n: from_zarr(g[n]) for n in VOLUMES}
    if axes is None:
        nd = arrays["labels"].ndim
        axes = "TZYX" if nd == 4 else "TYX"
    if scale is None:
        scale = attrs.get("scale")
        if scale is None:
            raise InputError(
                f"zarr group {str(path)!r} has no 'scale' attribute; pass scale={{'T': s, 'Z': um, "
                "'Y': um, 'X': um}}"
            )
    return TrackingDataset.from_arrays(arrays, Scale.coerce(scale, axes), axes=axes,
                                       source=str(path))


def write_tracking_zarr(ds: TrackingDataset, path: str | Path, *, overwrite: bool = False,
                        compute: bool = True, **compute_kwargs: Any):
    """Write a dataset's six volumes to our zarr layout (one frame per chunk on T).

    With ``compute=False`` returns the dask object to compute (a lazy store).
    """
    import zarr

    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{str(p)!r} exists; pass overwrite=True to replace it")
    g = zarr.open_group(str(p), mode="w" if overwrite else "w-")
    g.attrs.update({"axes": ds.axes, "scale": ds.scale.as_dict(),
                    "units": {k: ("s" if k == "T" else "um") for k in ds.scale.as_dict()},
                    "source": ds.source or ""})
    targets, sources = [], []
    for name, a in ds.arrays().items():
        chunks = tuple(c[0] for c in a.chunks)
        z = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks, overwrite=True)
        z.attrs["axes"] = ds.axes
        sources.append(a)
        targets.append(z)
    out = da.store(sources, targets, lock=False, compute=compute, **compute_kwargs)
    return out if not compute else g
