"""The output store of a run: one zarr v3 group per run, with per-frame done markers.

Layout (see ``docs/pipeline.md``)::

    OUT.zarr/
      zarr.json                 group attrs: parameters, compat, version, provenance, status
      flow, flow_index          FlowTable rows (M, 2d+2) float64 and the first row per pair
      labels_reassigned         int32 (T, Z, Y, X) or (T, Y, X), one frame per chunk on T
      branches_reassigned       int32, same shape
      voxel_matches/<t>         (n, 2, d) best source (``[:, 0]``) per target (``[:, 1]``), pair (t, t+1)
      tracks                    (K, 2+d) float64 rows track_id, t, (z), y, x (with ``--tracks``)
      tracks_properties/<name>  (K,) one array per track property
      frames_done               (T,) uint8, 1 once frame t's arrays are all written

``frames_done`` has one chunk per frame, so workers mark frames independently;
a frame is marked only after its reassigned labels, branches and the voxel
matches of the pair ending at it are written. Resuming recomputes from the
first frame not marked.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..dataset import InputError, TrackingDataset

__all__ = [
    "OUTPUT_FORMAT",
    "LABEL_ARRAYS",
    "check_output_path",
    "create_output",
    "open_output",
    "check_resumable",
    "jsonable",
    "frames_done",
    "mark_frame_done",
    "write_rows",
    "read_voxel_matches",
    "export",
    "EXPORT_FORMATS",
]

#: Version of this layout, written to the group attrs as ``format``.
OUTPUT_FORMAT = "dask-tracking-output/1"

#: Reassigned volumes of the output (int32, same shape as the inputs).
LABEL_ARRAYS: tuple[str, ...] = ("labels_reassigned", "branches_reassigned")

#: Parameters that must agree between a run and the store it resumes.
RESUME_KEYS: tuple[str, ...] = ("compat", "max_distance_um", "shape", "axes", "scale", "tracks",
                                "reassign")


def check_output_path(output: Any, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check an output location before any work; return it as a Path.

    Raises
    ------
    InputError
        ``resume`` and ``overwrite`` both set; the output exists and neither is
        set; ``resume`` on something that is not a run's output; the parent
        folder is missing or not writable.
    """
    if resume and overwrite:
        raise InputError("resume=True and overwrite=True exclude each other: choose one")
    if output is None or (isinstance(output, str) and not output.strip()):
        raise InputError(f"output must be a path to a zarr store (e.g. 'out.zarr'), got {output!r}")
    try:
        path = Path(os.fspath(output)).expanduser()
    except TypeError:
        raise InputError(
            f"output must be a path to a zarr store, got {type(output).__name__}"
        ) from None
    parent = path.absolute().parent
    if not parent.is_dir():
        raise InputError(f"output {str(path)!r}: the folder {str(parent)!r} does not exist")
    if path.exists():
        if not (resume or overwrite):
            raise InputError(
                f"output {str(path)!r} already exists; pass --resume (resume=True) to continue "
                "that run or --overwrite (overwrite=True) to replace it"
            )
        if not os.access(path, os.W_OK):
            raise InputError(f"output {str(path)!r} is not writable")
        if resume and not _is_run_output(path):
            raise InputError(
                f"output {str(path)!r} exists but is not a dask-tracking output store "
                f"(no group attribute format={OUTPUT_FORMAT!r}); nothing to resume"
            )
        if overwrite and path.is_dir() and any(path.iterdir()) and not _is_run_output(path):
            raise InputError(
                f"output {str(path)!r} exists and is not a dask-tracking output store; refusing "
                "to overwrite it (remove it yourself if that is what you want)"
            )
        if overwrite and path.is_file():
            raise InputError(f"output {str(path)!r} is a file, not a zarr store; refusing to overwrite it")
    elif not os.access(parent, os.W_OK):
        raise InputError(f"output {str(path)!r} is not writable: no write permission on {str(parent)!r}")
    return path


def _is_run_output(path: Path) -> bool:
    import zarr

    if not (path / "zarr.json").exists():
        return False
    try:
        g = zarr.open_group(str(path), mode="r")
    except Exception:
        return False
    return g.attrs.get("format") == OUTPUT_FORMAT


def _frame_chunks(ds: TrackingDataset) -> tuple[int, ...]:
    return (1,) + tuple(int(c) for c in ds.labels.chunksize[1:])


def create_output(path: Path, ds: TrackingDataset, attrs: Mapping[str, Any], *,
                  overwrite: bool = False) -> Any:
    """Create an empty output group for ``ds`` (zarr v3) and return it.

    Arrays ``labels_reassigned`` and ``branches_reassigned`` (int32, fill 0,
    chunks one frame by the dataset's spatial chunk size), ``frames_done`` and
    the ``voxel_matches`` group are created; ``attrs`` go to the group.
    """
    import zarr

    if overwrite and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    g = zarr.open_group(str(path), mode="w-", zarr_format=3)
    spatial_axes = ds.axes[1:]
    for name in LABEL_ARRAYS:
        a = g.create_array(name, shape=ds.shape, dtype="int32", chunks=_frame_chunks(ds), fill_value=0)
        a.attrs.update({
            "axes": ds.axes,
            "dimension_names": list(ds.axes),
            "units": {"T": "frame", **{ax: "voxel" for ax in spatial_axes}},
            "scale": ds.scale.as_dict(),
            "description": ("object ids propagated from frame 0 (Nellie im_obj_label_reassigned)"
                            if name == "labels_reassigned" else
                            "branch ids propagated from frame 0 (Nellie im_branch_label_reassigned)"),
        })
    done = g.create_array("frames_done", shape=(ds.n_frames,), dtype="uint8", chunks=(1,), fill_value=0)
    done.attrs["description"] = "1 once frame t's reassigned labels, branches and voxel_matches/<t-1> are written"
    vm = g.create_group("voxel_matches")
    vm.attrs.update({
        "description": "voxel_matches/<t>: (n, 2, d) int64 voxel indices for pair (t, t+1); "
                       "[:, 0] the best source voxel at t, [:, 1] the target voxel at t+1, "
                       "sorted by the target's raster index (Nellie voxel_matches.npy)",
        "axes": list(spatial_axes),
    })
    g.attrs.update(dict(attrs))
    return g


def open_output(path: Any, mode: str = "r") -> Any:
    """Open a run's output group, checking it is one.

    Raises
    ------
    InputError
        If ``path`` does not exist or is not a dask-tracking output store.
    """
    import zarr

    p = Path(os.fspath(path))
    if not p.exists():
        raise InputError(f"output store {str(p)!r} does not exist")
    if not _is_run_output(p):
        raise InputError(
            f"{str(p)!r} is not a dask-tracking output store (no group attribute "
            f"format={OUTPUT_FORMAT!r})"
        )
    return zarr.open_group(str(p), mode=mode)


def check_resumable(group: Any, attrs: Mapping[str, Any]) -> None:
    """Raise InputError if ``group`` was written with other parameters than ``attrs``."""
    old = dict(group.attrs.get("parameters", {}))
    new = dict(attrs.get("parameters", {}))
    diffs = [k for k in RESUME_KEYS if jsonable(old.get(k)) != jsonable(new.get(k))]
    if diffs:
        detail = "; ".join(f"{k}: store has {old.get(k)!r}, this run {new.get(k)!r}" for k in diffs)
        raise InputError(
            f"cannot resume {group.store!s}: it was written with other parameters ({detail}); "
            "use overwrite=True (--overwrite) to start again"
        )


def jsonable(v: Any) -> Any:
    """``v`` as it reads back from JSON attributes (tuples as lists, other objects as strings)."""
    import json

    return json.loads(json.dumps(v, default=str)) if v is not None else None


def frames_done(group: Any) -> np.ndarray:
    """(T,) bool: frames whose outputs are completely written."""
    return np.asarray(group["frames_done"][...]).astype(bool)


def mark_frame_done(path: str, t: int, *deps: Any) -> int:
    """Set ``frames_done[t] = 1`` in the store at ``path`` (run as a task after ``deps``)."""
    import zarr

    zarr.open_array(str(path), path="frames_done", mode="r+")[t] = 1
    return int(t)


def write_rows(path: str, name: str, rows: Any, attrs: Mapping[str, Any] | None = None) -> int:
    """Write a small 2-D table (or 1-D column) ``rows`` as array ``name`` of the group at ``path``.

    Replaces an existing array of that name. Returns the number of rows.
    """
    import zarr

    from ..backend import to_host

    a = to_host(rows)
    g = zarr.open_group(str(path), mode="a")
    chunks = (max(min(a.shape[0], 1 << 16), 1),) + tuple(a.shape[1:])
    z = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks, overwrite=True)
    if a.size:
        z[...] = a
    if attrs:
        z.attrs.update(dict(attrs))
    return int(a.shape[0])


def read_voxel_matches(group: Any, t: int) -> np.ndarray | None:
    """The (n, 2, d) voxel matches of pair (t, t+1), or None if not stored."""
    key = f"voxel_matches/{int(t)}"
    if key not in group:
        return None
    return np.asarray(group[key][...])


# --------------------------------------------------------------------------- export
EXPORT_FORMATS: tuple[str, ...] = ("nellie", "ctc", "napari", "geff")


def export(store: Any, to: str, directory: Any, *, overwrite: bool = False) -> list[Path]:
    """Export a run's output store to ``directory`` in format ``to``.

    Parameters
    ----------
    store : str or Path
        The output store of :func:`dask_tracking.run`.
    to : {"nellie", "ctc", "napari", "geff"}
        ``nellie``: Nellie's ``nellie_necessities`` files; ``ctc``: Cell Tracking
        Challenge masks and ``res_track.txt``; ``napari``: the tracks layer
        (``tracks.npy`` and ``tracks.csv``, needs a run with ``tracks=True``);
        ``geff``: a GEFF zarr of the object tracks.
    directory : str or Path
        Where to write (created if missing).

    Returns
    -------
    list of Path
        The files (or GEFF store) written.
    """
    if to not in EXPORT_FORMATS:
        raise InputError(f"to must be one of {', '.join(EXPORT_FORMATS)}, got {to!r}")
    group = open_output(store, mode="r")
    if group.attrs.get("status") != "complete":
        raise InputError(
            f"output store {str(store)!r} is not complete (status {group.attrs.get('status')!r}); "
            "finish it with `dask-tracking run ... --resume` first"
        )
    out = Path(os.fspath(directory))
    if out.exists() and not out.is_dir():
        raise InputError(f"directory {str(out)!r} exists and is not a folder")
    if to == "nellie":
        from .export_nellie import export_nellie

        return export_nellie(group, out, overwrite=overwrite)
    if to == "ctc":
        from .export_ctc import export_ctc

        return export_ctc(group, out, overwrite=overwrite)
    if to == "geff":
        from .export_geff import export_geff

        return export_geff(group, out, overwrite=overwrite)
    return _export_napari(group, out, overwrite=overwrite)


def _export_napari(group: Any, out: Path, *, overwrite: bool = False) -> list[Path]:
    """``tracks.npz`` (napari: ``data`` for ``viewer.add_tracks``, properties, graph) and ``tracks.csv``."""
    from ..tracks.model import Tracks
    from .tracks_export import write_tracks

    if "tracks" not in group:
        raise InputError(
            "the output store has no 'tracks'; run with --tracks (tracks=True) to export napari tracks"
        )
    rows = np.asarray(group["tracks"][...], dtype=np.float64)
    props = {}
    if "tracks_properties" in group:
        for name in group["tracks_properties"].array_keys():
            props[name] = np.asarray(group[f"tracks_properties/{name}"][...])
    tracks = Tracks(rows, props, {}, {})
    out.mkdir(parents=True, exist_ok=True)
    npz, csv = out / "tracks.npz", out / "tracks.csv"
    if not overwrite and (npz.exists() or csv.exists()):
        raise InputError(f"{str(out)!r} already holds tracks.npz/tracks.csv; pass overwrite=True (--overwrite)")
    paths = [write_tracks(tracks, npz, overwrite=overwrite)]
    try:
        paths.append(write_tracks(tracks, csv, overwrite=overwrite))
    except ImportError:  # pragma: no cover - pandas (export extra) missing
        pass
    return paths
