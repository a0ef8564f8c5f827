"""``dask-tracking demo``: the whole job on a small synthetic movie with known motion.

Builds :func:`dask_tracking.datasets.synthetic`, runs :func:`dask_tracking.run`
into ``<folder>/demo.zarr``, measures the result against the ground truth and
draws ``<folder>/demo.png`` (flow vectors and tracks over a max projection).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DemoReport", "run_demo", "flow_accuracy", "label_accuracy"]


@dataclass(frozen=True)
class DemoReport:
    """Summary of a demo run.

    Attributes
    ----------
    output : Path
        The run's output store.
    figure : Path or None
        The PNG figure (None if matplotlib is missing).
    n_frames, n_markers, flow_rows, labelled_voxels
        Frames, markers over all frames, flow table rows, reassigned voxels (all frames).
    flow_median_error_um : float
        Median distance between each flow vector's end and the true position, um.
    flow_within_one_voxel : float
        Share of flow vectors whose end is within one voxel (Euclidean, in voxels) of the truth.
    label_accuracy : float
        Share of reassigned voxels whose label is the frame-0 label of the true object.
    seconds : float
    """

    output: Path
    figure: Path | None
    n_frames: int
    n_markers: int
    flow_rows: int
    labelled_voxels: int
    flow_median_error_um: float
    flow_within_one_voxel: float
    label_accuracy: float
    seconds: float

    def summary(self) -> str:
        lines = [
            f"output: {self.output}",
            f"figure: {self.figure}" if self.figure else "figure: (matplotlib missing, none written)",
            f"frames: {self.n_frames}",
            f"markers: {self.n_markers}",
            f"flow rows: {self.flow_rows}",
            f"labelled voxels (reassigned, all frames): {self.labelled_voxels}",
            f"flow accuracy: median end-point error {self.flow_median_error_um:.3f} um, "
            f"{100 * self.flow_within_one_voxel:.1f}% within one voxel of the true motion",
            f"label accuracy: {100 * self.label_accuracy:.1f}% of reassigned voxels carry their "
            "object's frame-0 label",
            f"time: {self.seconds:.1f} s",
        ]
        return "\n".join(lines)


def flow_accuracy(rows: np.ndarray, truth: Any, spacing: tuple[float, ...]) -> tuple[float, float]:
    """Median end-point error (um) and share within one voxel, of flow rows against the truth.

    Parameters
    ----------
    rows : (M, 2d+2) float64
        Flow rows ``t, position, displacement, cost`` (voxels).
    truth : SyntheticTruth
        With ``displacement(coords, t)`` in voxels.
    """
    d = len(spacing)
    if len(rows) == 0:
        return float("nan"), 0.0
    errs = []
    for t in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == t]
        true = np.asarray(truth.displacement(r[:, 1:1 + d], t))
        errs.append(r[:, 1 + d:1 + 2 * d] - true)
    e = np.concatenate(errs)
    um = np.linalg.norm(e * np.asarray(spacing), axis=1)
    vox = np.linalg.norm(e, axis=1)
    return float(np.median(um)), float(np.mean(vox <= 1.0))


def label_accuracy(reassigned: Any, objects: Any) -> float:
    """Share of reassigned voxels whose label maps to the right true object.

    Each frame-0 label is mapped to the true object most of its voxels belong to;
    frames are read one at a time.
    """
    r0 = np.asarray(reassigned[0])
    o0 = np.asarray(objects[0])
    fg = r0 > 0
    mapping: dict[int, int] = {}
    for lab in np.unique(r0[fg]):
        ids, counts = np.unique(o0[r0 == lab], return_counts=True)
        mapping[int(lab)] = int(ids[np.argmax(counts)])
    good = total = 0
    for t in range(reassigned.shape[0]):
        r = np.asarray(reassigned[t])
        o = np.asarray(objects[t])
        m = r > 0
        if not m.any():
            continue
        labs = r[m]
        keys = np.array(sorted(mapping), dtype=np.int64)
        vals = np.array([mapping[k] for k in keys], dtype=np.int64)
        idx = np.clip(np.searchsorted(keys, labs), 0, max(len(keys) - 1, 0))
        mapped = np.where(keys[idx] == labs, vals[idx], -1) if len(keys) else np.full(len(labs), -1)
        good += int(np.sum(mapped == o[m]))
        total += int(m.sum())
    return good / total if total else 0.0


def _figure(path: Path, raw_frame: np.ndarray, rows: np.ndarray, tracks: np.ndarray | None,
            ndim: int) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - plot extra missing
        return None
    proj = raw_frame.max(axis=0) if ndim == 3 else raw_frame
    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110)
    ax.imshow(proj, cmap="gray", interpolation="nearest")
    d = ndim
    if len(rows):
        y, x = rows[:, d - 1], rows[:, d]
        dy, dx = rows[:, 2 * d - 1], rows[:, 2 * d]
        q = ax.quiver(x, y, dx, dy, rows[:, 0], cmap="cool", angles="xy", scale_units="xy",
                      scale=1.0, width=0.005, zorder=3)
        fig.colorbar(q, ax=ax, label="frame t of the flow vector t -> t+1")
    if tracks is not None and len(tracks):
        ids = np.unique(tracks[:, 0])
        step = max(len(ids) // 150, 1)  # at most ~150 tracks drawn
        for tid in ids[::step]:
            tr = tracks[tracks[:, 0] == tid]
            tr = tr[np.argsort(tr[:, 1])]
            ax.plot(tr[:, -1], tr[:, -2], "-", color="orange", lw=0.8, alpha=0.8, zorder=2)
    ax.set_title("dask-tracking demo: flow vectors (arrows) and tracks (orange)\n"
                 "over the max projection of frame 0")
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("y (voxels)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_demo(folder: str | Path | None = None, *, ndim: int = 3, n_frames: int = 6, seed: int = 0,
             client: Any = None, progress: bool = False) -> DemoReport:
    """Run the whole job on a synthetic movie and measure it against the truth.

    Parameters
    ----------
    folder : str or Path, optional
        Where ``demo.zarr`` and ``demo.png`` go (replaced if present); default a
        new temporary folder.
    ndim : {2, 3}
    n_frames : int
    seed : int
    client : distributed.Client, optional
        Where to compute (default dask's threaded scheduler).

    Returns
    -------
    DemoReport
    """
    import time

    import zarr

    from .datasets import synthetic
    from .pipeline import run

    start = time.perf_counter()
    out = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="dask-tracking-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    ds = synthetic(ndim, n_frames, seed=seed)
    store = out / "demo.zarr"
    want_tracks = _has_tracks()
    result = run(ds, store, client=client, overwrite=store.exists(), tracks=want_tracks,
                 progress=progress)
    g = zarr.open_group(str(store), mode="r")
    rows = np.asarray(g["flow"][...])
    tracks = np.asarray(g["tracks"][...]) if "tracks" in g else None
    med, within = flow_accuracy(rows, ds.truth, ds.spacing)
    acc = label_accuracy(g["labels_reassigned"], ds.truth.objects)
    n_markers = int((ds.markers > 0).sum().compute())
    fig = _figure(out / "demo.png", np.asarray(ds.raw[0].compute()), rows, tracks, ndim)
    return DemoReport(store, fig, ds.n_frames, n_markers, result.flow_rows, int(sum(result.labelled_voxels)),
                      med, within, acc, time.perf_counter() - start)


def _has_tracks() -> bool:
    try:
        from .tracks import label_tracks  # noqa: F401
    except ImportError:
        return False
    return True
