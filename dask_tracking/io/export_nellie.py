"""Nellie's own files from a run's output store (spec section 0.2).

Writes ``<directory>/nellie_necessities/<stem>-<key><ext>``:

* ``flow_vector_array.npy``: (M, 2d+2) float64 rows ``t, (z), y, x, (dz), dy, dx, cost``;
* ``im_obj_label_reassigned.ome.tif`` and ``im_branch_label_reassigned.ome.tif``:
  int32 OME-TIFF, axes ``TZYX``/``TYX``, with PhysicalSize and TimeIncrement;
* ``voxel_matches.npy``: object array (P, 2), ``[k][0]`` the source and ``[k][1]``
  the target voxels (n_k, d) of pair (k, k+1), unsigned as Nellie writes them
  (load with ``allow_pickle=True``).

With ``inputs=True`` and the input dataset still readable, the six tracking
inputs are written beside them by :func:`dask_tracking.io.nellie_folder.write_nellie_folder`,
so Nellie's feature stage and napari plugin find a complete folder. Volumes
are written one frame at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import InputError
from .ome_tiff import write_ome_tiff

__all__ = ["export_nellie", "matches_dtype"]


def matches_dtype(spatial_shape: tuple[int, ...]) -> np.dtype:
    """Nellie's voxel_matches dtype: uint16, or uint32/uint64 for larger frames (spec 4.4)."""
    m = max(spatial_shape) if spatial_shape else 0
    if m <= 65536:
        return np.dtype(np.uint16)
    if m <= 2**32:
        return np.dtype(np.uint32)
    return np.dtype(np.uint64)


def _stem(group: Any) -> str:
    src = (group.attrs.get("input") or {}).get("source")
    if src:
        name = Path(str(src).rstrip("/")).name
        for ext in (".ome.zarr", ".zarr", ".ome.tif", ".ome.tiff", ".tif", ".tiff"):
            if name.lower().endswith(ext):
                return name[: -len(ext)] or "dask_tracking"
        return name or "dask_tracking"
    return "dask_tracking"


def export_nellie(group: Any, directory: str | Path, *, stem: str | None = None, inputs: bool = True,
                  overwrite: bool = False) -> list[Path]:
    """Write a run's outputs (and, when readable, its inputs) as Nellie's files.

    Parameters
    ----------
    group : zarr.Group
        A run's output store.
    directory : str or Path
        Nellie's output folder; files go to ``directory/nellie_necessities``.
    stem : str, optional
        File name stem (Nellie's ``<stem>``); default the input's name.
    inputs : bool
        Also write the six inputs (``im_preprocessed`` ...) when the input is readable.

    Returns
    -------
    list of Path
    """
    from ..flow.table import FlowTable

    stem = stem or _stem(group)
    folder = Path(directory) / "nellie_necessities"
    folder.mkdir(parents=True, exist_ok=True)
    name = lambda key, ext: folder / f"{stem}-{key}{ext}"  # noqa: E731
    if not overwrite and name("flow_vector_array", ".npy").exists():
        raise InputError(f"{str(folder)!r} already holds {stem}-flow_vector_array.npy; pass "
                         "overwrite=True (--overwrite)")
    labels = group["labels_reassigned"]
    axes = str(labels.attrs.get("axes", "TZYX" if labels.ndim == 4 else "TYX"))
    scale = dict(labels.attrs.get("scale", {}))
    paths = []

    flow = FlowTable.from_zarr(group).to_numpy(scheduler="sync")
    p = name("flow_vector_array", ".npy")
    np.save(p, flow.astype(np.float64))
    paths.append(p)
    for key, arr in (("im_obj_label_reassigned", "labels_reassigned"),
                     ("im_branch_label_reassigned", "branches_reassigned")):
        paths.append(write_ome_tiff(name(key, ".ome.tif"), group[arr], axes=axes, scale=scale, dtype=np.int32))

    T = labels.shape[0]
    dt = matches_dtype(tuple(labels.shape[1:]))
    pairs = []
    for t in range(T - 1):
        key = f"voxel_matches/{t}"
        if key not in group or group[key].attrs.get("stopped", False):
            break  # Nellie's loop broke here: its voxel_matches.npy ends before this pair
        m = np.asarray(group[key][...])
        pairs.append((m[:, 0].astype(dt), m[:, 1].astype(dt)))
    vm = np.empty((len(pairs), 2), dtype=object)
    for k, (src, dst) in enumerate(pairs):
        vm[k, 0], vm[k, 1] = src, dst
    p = name("voxel_matches", ".npy")
    np.save(p, vm, allow_pickle=True)
    paths.append(p)

    if inputs:
        paths.extend(_export_inputs(group, Path(directory), stem, overwrite))
    return paths


def _export_inputs(group: Any, directory: Path, stem: str, overwrite: bool = False) -> list[Path]:
    """The six inputs via write_nellie_folder, when the input is still readable."""
    import logging

    log = logging.getLogger(__name__)
    src = (group.attrs.get("input") or {}).get("source")
    if not src or not Path(str(src)).exists():
        log.warning("input %r not readable: Nellie export without the input volumes", src)
        return []
    try:
        from .nellie_folder import write_nellie_folder
        from .open import open_dataset
    except ImportError:  # pragma: no cover - depends on the foundation stage
        log.warning("write_nellie_folder unavailable: Nellie export without the input volumes")
        return []
    ds = open_dataset(src)
    want = list((group.attrs.get("input") or {}).get("shape", []))
    if list(ds.shape) != want:
        log.warning("input %r now has shape %s, the run used %s (a subset?): Nellie export "
                    "without the input volumes", src, list(ds.shape), want)
        return []
    written = write_nellie_folder(ds, directory, stem, overwrite=overwrite)
    if isinstance(written, (list, tuple)):
        return [Path(p) for p in written]
    return []
