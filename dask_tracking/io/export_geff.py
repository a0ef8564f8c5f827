"""GEFF (graph exchange file format) export of a run's object tracks.

One node per reassigned object and frame (``t``, centroid ``z, y, x`` in
voxels, ``label``, ``n_voxels``), one directed edge from an object at ``t`` to
the same label at ``t + 1``. Written as the GEFF zarr layout (``nodes/ids``,
``nodes/props/<name>/values``, ``edges/ids`` and the ``geff`` group attribute);
axes carry the voxel size (``scale``, micrometres) and the frame interval.
Frames are read one at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import InputError

__all__ = ["export_geff", "frame_objects", "GEFF_VERSION"]

#: Version of the GEFF specification this writer follows.
GEFF_VERSION = "1.3.0"


def frame_objects(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, voxel counts and centroids of the objects of one frame.

    Parameters
    ----------
    frame : (Z, Y, X) or (Y, X) int array

    Returns
    -------
    labels : (n,) int64, sorted positive ids
    counts : (n,) int64
    centroids : (n, d) float64, voxel coordinates
    """
    fg = np.flatnonzero(frame.ravel() > 0)
    vals = frame.ravel()[fg].astype(np.int64)
    labels, inverse, counts = np.unique(vals, return_inverse=True, return_counts=True)
    coords = np.unravel_index(fg, frame.shape)
    cent = np.stack([np.bincount(inverse, weights=c, minlength=len(labels)) for c in coords], axis=1)
    cent = cent / np.maximum(counts, 1)[:, None] if len(labels) else cent.reshape(0, frame.ndim)
    return labels, counts.astype(np.int64), cent


def export_geff(group: Any, directory: str | Path, *, overwrite: bool = False,
                name: str = "tracks.geff") -> list[Path]:
    """Write ``<directory>/<name>``, a GEFF zarr of the object tracks of a run."""
    import zarr

    labels = group["labels_reassigned"]
    axes = str(labels.attrs.get("axes", "TZYX" if labels.ndim == 4 else "TYX"))
    scale = dict(labels.attrs.get("scale", {}))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    if path.exists() and not overwrite:
        raise InputError(f"{str(path)!r} already exists; pass overwrite=True (--overwrite)")
    spatial = [a.lower() for a in axes[1:]]
    t_col, lab_col, n_col, pos = [], [], [], []
    edges = []
    prev: dict[int, int] = {}
    next_id = 0
    for t in range(labels.shape[0]):
        labs, counts, cent = frame_objects(np.asarray(labels[t]))
        ids = np.arange(next_id, next_id + len(labs), dtype=np.int64)
        next_id += len(labs)
        now = dict(zip((int(v) for v in labs), (int(i) for i in ids)))
        edges.extend((prev[lab], nid) for lab, nid in now.items() if lab in prev)
        prev = now
        t_col.append(np.full(len(labs), t, dtype=np.int64))
        lab_col.append(labs)
        n_col.append(counts)
        pos.append(cent)
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    nodes = g.create_group("nodes")
    nodes.create_array("ids", data=np.arange(next_id, dtype=np.int64))
    props = {"t": np.concatenate(t_col), "label": np.concatenate(lab_col),
             "n_voxels": np.concatenate(n_col)}
    allpos = np.concatenate(pos) if pos else np.zeros((0, len(spatial)))
    for i, ax in enumerate(spatial):
        props[ax] = allpos[:, i].astype(np.float64)
    pg = nodes.create_group("props")
    for key, values in props.items():
        pg.create_group(key).create_array("values", data=values)
    eg = g.create_group("edges")
    eg.create_array("ids", data=np.array(edges, dtype=np.int64).reshape(-1, 2))
    eg.create_group("props")
    axes_meta = [{"name": "t", "type": "time", "unit": "frame",
                  **({"scale": float(scale["T"]), "scaled_unit": "second"} if "T" in scale else {})}]
    for ax in spatial:
        a = {"name": ax, "type": "space", "unit": "pixel"}
        if ax.upper() in scale:
            a.update({"scale": float(scale[ax.upper()]), "scaled_unit": "micrometer"})
        axes_meta.append(a)
    units = {"t": "frame", "label": None, "n_voxels": "voxel", **{ax: "pixel" for ax in spatial}}
    g.attrs["geff"] = {
        "geff_version": GEFF_VERSION,
        "directed": True,
        "axes": axes_meta,
        "node_props_metadata": {
            k: {"identifier": k, "dtype": str(v.dtype), "unit": units[k]} for k, v in props.items()
        },
        "edge_props_metadata": {},
        "extra": {"producer": "dask-tracking", "source": "labels_reassigned",
                  "description": "one node per reassigned object per frame; edges link the same "
                                 "label in consecutive frames"},
    }
    return [path]
