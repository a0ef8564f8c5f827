"""Write and read point tracks (:class:`~dask_tracking.tracks.Tracks`) as napari, CSV or parquet files.

Formats, chosen by the file extension (or ``format=``):

``.npz`` (napari)
    ``data`` (K, 2+d) float64 rows ``track_id, t, (z), y, x`` (the ``data`` of
    ``viewer.add_tracks``), ``columns``, one ``prop_<name>`` array per property
    and ``graph`` (JSON text of napari's ``{track_id: [parent ids]}``).
``.csv`` / ``.parquet``
    One row per point, columns ``track_id`` (int64), ``t`` (int64, frame index),
    ``z`` (3D only), ``y``, ``x`` (float64, voxels), then one column per property
    (e.g. ``frame_num``, ``label``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import InputError
from ..tracks.model import Tracks, track_columns

__all__ = ["write_tracks", "read_tracks", "TRACK_FORMATS"]

#: Formats and their file extensions.
TRACK_FORMATS = {"napari": ".npz", "csv": ".csv", "parquet": ".parquet"}


def _format(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in TRACK_FORMATS:
            raise InputError(f"format must be one of {sorted(TRACK_FORMATS)}, got {format!r}")
        return format
    for name, ext in TRACK_FORMATS.items():
        if path.suffix.lower() == ext:
            return name
    raise InputError(
        f"cannot tell the tracks format from {str(path)!r}: use a .npz (napari), .csv or .parquet "
        f"file name, or pass format= one of {sorted(TRACK_FORMATS)}"
    )


def _as_tracks(tracks: Any) -> Tracks:
    if isinstance(tracks, Tracks):
        return tracks
    if isinstance(tracks, tuple) and len(tracks) == 2:  # (data, properties), Nellie / napari style
        data = np.asarray(tracks[0], dtype=np.float64)
        if data.ndim != 2 or data.shape[1] not in (4, 5):
            raise InputError(f"tracks data must be (K, 4) or (K, 5) rows track_id, t, (z), y, x; got {data.shape}")
        return Tracks(data, {k: np.asarray(v) for k, v in (tracks[1] or {}).items()})
    raise InputError(f"tracks must be a Tracks object or a (data, properties) pair, got {type(tracks).__name__}")


def write_tracks(tracks: Any, path: str | Path, *, format: str | None = None, overwrite: bool = False) -> Path:
    """Write tracks to ``path`` (napari ``.npz``, ``.csv`` or ``.parquet``).

    Parameters
    ----------
    tracks : Tracks or (data, properties)
    path : str or Path
    format : {"napari", "csv", "parquet"}, optional
        Default: from the extension.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The file written.
    """
    tr = _as_tracks(tracks)
    p = Path(path)
    fmt = _format(p, format)
    for k, v in tr.properties.items():
        if len(v) != len(tr):
            raise InputError(f"property {k!r} has {len(v)} values for {len(tr)} track rows")
    if p.exists() and not overwrite:
        raise InputError(f"{str(p)!r} exists; pass overwrite=True to replace it")
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "napari":
        arrays = {"data": tr.data, "columns": np.array(tr.columns)}
        arrays.update({f"prop_{k}": np.asarray(v) for k, v in tr.properties.items()})
        arrays["graph"] = np.array(json.dumps({str(k): [int(x) for x in v] for k, v in tr.graph.items()}))
        with open(p, "wb") as f:
            np.savez(f, **arrays)
        return p
    df = tr.to_dataframe()
    if fmt == "csv":
        df.to_csv(p, index=False)
    else:
        df.to_parquet(p, index=False)
    return p


def read_tracks(path: str | Path, *, format: str | None = None) -> Tracks:
    """Read tracks written by :func:`write_tracks`."""
    p = Path(path)
    fmt = _format(p, format)
    if not p.exists():
        raise InputError(f"no tracks file at {str(p)!r}")
    if fmt == "napari":
        with np.load(p, allow_pickle=False) as z:
            props = {k[5:]: z[k] for k in z.files if k.startswith("prop_")}
            graph = {int(k): v for k, v in json.loads(str(z["graph"])).items()}
            return Tracks(np.asarray(z["data"], dtype=np.float64), props, graph)
    import pandas as pd

    df = pd.read_csv(p) if fmt == "csv" else pd.read_parquet(p)
    nd = 3 if "z" in df.columns else 2
    cols = track_columns(nd)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{str(p)!r} lacks the track columns {missing} (needs {cols})")
    data = df[cols].to_numpy(dtype=np.float64)
    props = {c: df[c].to_numpy() for c in df.columns if c not in cols}
    return Tracks(data, props, {})
