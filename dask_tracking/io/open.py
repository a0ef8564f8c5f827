"""``open_dataset``: one entry point for every supported input source."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..dataset import VOLUMES, InputError, TrackingDataset

__all__ = ["open_dataset"]


def open_dataset(source: Any, scale: Any = None, *, spatial_chunks: Any = None) -> TrackingDataset:
    """Open the six tracking inputs lazily from any supported source.

    Parameters
    ----------
    source : str, Path, TrackingDataset or mapping
        * a zarr v3 group in our layout (six arrays, attrs ``axes`` and ``scale``);
        * an OME-Zarr group holding each volume as an OME-Zarr image;
        * a Nellie output folder (``nellie_necessities/``, the folder above it, or one of
          its ``<stem>-im_*.ome.tif`` files to pick a stem);
        * a mapping of the six names to numpy or dask arrays (needs ``scale``);
        * a TrackingDataset (returned, rechunked if asked).
    scale : Scale, mapping or sequence, optional
        T in s, Z/Y/X in um. Required for arrays; overrides metadata otherwise.
    spatial_chunks : tuple, optional
        Rechunk the spatial axes (T is always one frame per chunk).

    Returns
    -------
    TrackingDataset
        Lazy dask arrays (TZYX or TYX), validated structurally (no data read).

    Raises
    ------
    InputError
        Unknown source, missing arrays or metadata, or any validation failure.
    """
    if isinstance(source, TrackingDataset):
        ds = source if scale is None else source.replace(scale=source.scale.coerce(scale, source.axes))
    elif isinstance(source, Mapping):
        ds = TrackingDataset.from_arrays(dict(source), scale, source="arrays")
    elif isinstance(source, (str, Path)):
        ds = _open_path(Path(source), scale)
    else:
        raise InputError(
            f"source must be a path (zarr, OME-Zarr or Nellie output folder), a mapping of "
            f"{', '.join(VOLUMES)} to arrays, or a TrackingDataset; got {type(source).__name__}"
        )
    if spatial_chunks is not None:
        ds = ds.rechunk(spatial_chunks)
    return ds


def _open_path(path: Path, scale: Any) -> TrackingDataset:
    if not path.exists():
        raise InputError(f"source {str(path)!r} does not exist")
    if path.is_dir() and (path / "zarr.json").exists():
        import zarr

        g = zarr.open_group(str(path), mode="r")
        from .zarr_layout import is_tracking_zarr, read_tracking_zarr

        if is_tracking_zarr(g):
            return read_tracking_zarr(path, scale, group=g)
        from .ome_zarr import is_ome_zarr_collection, read_ome_zarr

        if is_ome_zarr_collection(g):
            return read_ome_zarr(path, scale, group=g)
        raise InputError(
            f"zarr group {str(path)!r} holds neither the six arrays ({', '.join(VOLUMES)}) nor "
            "six OME-Zarr images of those names"
        )
    if path.is_dir():
        from .nellie_folder import find_nellie_folder, read_nellie_folder

        folder = find_nellie_folder(path)
        if folder is not None:
            return read_nellie_folder(folder, scale)
    if path.is_file() and path.name.endswith(".ome.tif"):
        from .nellie_folder import NELLIE_KEYS, read_nellie_folder

        # one file of a Nellie folder (or its raw copy) names the stem to read
        stem = path.name[: -len(".ome.tif")]
        for key in NELLIE_KEYS.values():
            if stem.endswith("-" + key):
                stem = stem[: -len(key) - 1]
                break
        if (path.parent / f"{stem}-im_preprocessed.ome.tif").is_file():
            return read_nellie_folder(path.parent, scale, stem=stem)
    raise InputError(
        f"source {str(path)!r} is not a zarr group (our layout or OME-Zarr) nor a Nellie output "
        "folder (with nellie_necessities/*-im_preprocessed.ome.tif and siblings)"
    )
