"""Cell Tracking Challenge export: ``maskTTT.tif`` per frame and ``res_track.txt``.

Built from the reassigned object labels of a run's output store. Every
reassigned id is a frame-0 id (Nellie's identity semantics), so a label that
is present in consecutive frames is one CTC track. CTC tracks may not have
gaps: when a label disappears and comes back, each new run of frames becomes a
new track whose parent is the previous run (CTC's way to write a gap).
Frames are read one at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import InputError

__all__ = ["export_ctc", "ctc_tracks"]


def ctc_tracks(present: list[np.ndarray]) -> tuple[np.ndarray, dict[int, dict[int, int]]]:
    """CTC track table and per-frame relabelling from the labels present per frame.

    Parameters
    ----------
    present : list of (n_t,) int arrays
        Sorted positive label ids present in each frame.

    Returns
    -------
    tracks : (K, 4) int64
        Rows ``L B E P``: track id, first frame, last frame, parent id (0: none).
    relabel : dict
        ``relabel[t][label]`` is the CTC track id of ``label`` in frame ``t``.
    """
    max_label = max((int(p.max()) for p in present if len(p)), default=0)
    next_id = max_label + 1
    open_run: dict[int, int] = {}       # label -> current track id (present in the previous frame)
    last_track: dict[int, int] = {}     # label -> its latest track id
    rows: dict[int, list[int]] = {}     # track id -> [L, B, E, P]
    relabel: dict[int, dict[int, int]] = {}
    for t, labels in enumerate(present):
        now: dict[int, int] = {}
        for lab in (int(v) for v in labels):
            if lab in open_run:
                tid = open_run[lab]
                rows[tid][2] = t
            else:
                if lab in last_track:           # a gap: new track, parent the previous run
                    tid, parent = next_id, last_track[lab]
                    next_id += 1
                else:
                    tid, parent = lab, 0
                rows[tid] = [tid, t, t, parent]
            now[lab] = tid
            last_track[lab] = tid
        open_run = now
        relabel[t] = now
    table = np.array(sorted(rows.values()), dtype=np.int64).reshape(-1, 4)
    return table, relabel


def export_ctc(group: Any, directory: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the CTC result files of a run (``mask000.tif`` ... and ``res_track.txt``).

    Parameters
    ----------
    group : zarr.Group
        A run's output store (see :mod:`dask_tracking.io.output`).
    directory : str or Path
        Folder to write into (created; must not hold CTC files unless ``overwrite``).

    Returns
    -------
    list of Path
        The files written.
    """
    import tifffile

    labels = group["labels_reassigned"]
    T = labels.shape[0]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite and ((out / "res_track.txt").exists() or any(out.glob("mask*.tif"))):
        raise InputError(f"directory {str(out)!r} already holds CTC files; pass overwrite=True (--overwrite)")
    present = []
    for t in range(T):
        u = np.unique(np.asarray(labels[t]))
        present.append(u[u > 0])
    table, relabel = ctc_tracks(present)
    max_id = int(table[:, 0].max()) if len(table) else 0
    if max_id > np.iinfo(np.uint16).max:
        raise InputError(
            f"CTC masks are 16-bit: track ids go up to {max_id}, above 65535; allowed: at most "
            "65535 tracks"
        )
    digits = max(3, len(str(T - 1)))
    paths = []
    for t in range(T):
        frame = np.asarray(labels[t])
        lut_keys = np.array(sorted(relabel[t]), dtype=np.int64)
        mask = np.zeros(frame.shape, dtype=np.uint16)
        if len(lut_keys):
            lut_vals = np.array([relabel[t][k] for k in lut_keys], dtype=np.uint16)
            fg = frame > 0
            idx = np.searchsorted(lut_keys, frame[fg])
            mask[fg] = lut_vals[idx]
        p = out / f"mask{t:0{digits}d}.tif"
        tifffile.imwrite(p, mask, compression="zlib")
        paths.append(p)
    track_file = out / "res_track.txt"
    with open(track_file, "w") as fh:
        for row in table:
            fh.write(" ".join(str(int(v)) for v in row) + "\n")
    paths.append(track_file)
    return paths
