"""Voxel reassignment on a movie larger than the workers' memory, with bounded memory.

Writes a synthetic 3D+t movie to zarr (:func:`dask_tracking.datasets.write_synthetic_zarr`),
then runs :func:`dask_tracking.reassign_labels` on a distributed LocalCluster whose
workers are each limited to ``--memory-limit`` and stores the result to zarr with one
lazy ``store``. The same graph is then run without limits (threaded scheduler) into a
second store and both outputs are compared frame by frame (labels, branches and every
pair's voxel matches).

Flow: the true integer displacement of the synthetic motion at every marker (cost -1),
one lazy task per frame pair, so the benchmark measures this stage only.

Peak memory: the resident set size of each worker process, sampled every 50 ms with
psutil from the client; a worker restart (the nanny kills a worker above its limit)
fails the run.

Usage::

    python benchmarks/bench_reassign_memory.py --out /tmp/reassign_mem --frames 52 \\
        --shape 32,512,512 --chunks 32,256,256 --workers 2 --memory-limit 1GB

writes ``benchmarks/results/reassign_memory.json``; the stores are deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BYTES_PER_VOXEL = 2 + 4 + 4 + 1 + 4 + 4  # the six input volumes (raw u16 ... branches u32)
STAGE_BYTES_PER_VOXEL = 4 + 4 + 4 + 4    # read labels i32 + branches u32, write two int32 volumes


class WorkerMemory:
    """Largest RSS of each given process, sampled in a background thread."""

    def __init__(self, pids: list[int], interval: float = 0.05):
        import psutil

        self.procs = {p: psutil.Process(p) for p in pids}
        self.peak = {p: 0 for p in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid, proc in self.procs.items():
            try:
                self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
            except Exception:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "WorkerMemory":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _truth_rows(markers: Any, t: int, truth: Any) -> Any:
    import numpy as np

    p = np.argwhere(np.asarray(markers) > 0).astype(np.float64)
    d = np.round(truth.displacement(p, t)) if len(p) else p
    return np.column_stack([np.full(len(p), float(t)), p, d, np.full(len(p), -1.0)])


def truth_flow(ds: Any):
    """A lazy FlowTable of the true motion at the markers (one task per frame pair)."""
    import dask

    from dask_tracking.flow.table import FlowTable

    import dataclasses

    rows = dask.delayed(_truth_rows, pure=True)
    # the geometry only: the truth's ``objects`` volume must not travel with the tasks
    truth = dataclasses.replace(ds.truth, objects=None)
    pairs = [rows(ds.markers[t], t, truth) for t in range(ds.n_frames - 1)]
    return FlowTable(pairs, ds.ndim, ds.n_frames)


def compare_stores(a: Path, b: Path, n_frames: int) -> dict:
    """Frame-by-frame equality of two reassignment stores (bounded memory)."""
    import numpy as np
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    bad = []
    labelled = 0
    for t in range(n_frames):
        for name in ("labels_reassigned", "branches_reassigned"):
            x, y = ga[name][t], gb[name][t]
            if not np.array_equal(x, y):
                bad.append(f"{name}[{t}]")
            if name == "labels_reassigned":
                labelled += int((x > 0).sum())
        if t < n_frames - 1 and not np.array_equal(ga["voxel_matches"][str(t)][...],
                                                    gb["voxel_matches"][str(t)][...]):
            bad.append(f"voxel_matches/{t}")
    return {"equal": not bad, "differences": bad[:20], "reassigned_voxels": labelled}


def run_benchmark(out: Path, *, frames: int, shape: tuple, chunks: tuple, workers: int,
                  memory_limit: str, n_objects: int, seed: int = 0, compare: bool = True,
                  keep: bool = False) -> dict:
    """Write the movie, run the constrained and the unconstrained reassignment, compare."""
    import dask
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    import dask_tracking as dt
    from dask_tracking.datasets import write_synthetic_zarr

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    movie = out / "movie.zarr"
    t0 = time.perf_counter()
    ds = write_synthetic_zarr(movie, frames, shape, overwrite=True, n_objects=n_objects, seed=seed,
                              chunks=chunks)
    t_write = time.perf_counter() - t0
    n_vox = frames * math.prod(shape)
    limit = parse_bytes(memory_limit)

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit, dashboard_address=None,
                           local_directory=str(out / "dask-spill"))
    client = Client(cluster)
    try:
        pids = list(client.run(os.getpid).values())
        res = dt.reassign_labels(ds, truth_flow(ds))
        n_tasks = len(res.labels.__dask_graph__())
        job = res.store(str(out / "constrained.zarr"))
        t0 = time.perf_counter()
        with WorkerMemory(pids) as mem:
            job.compute()
        t_constrained = time.perf_counter() - t0
        pids_after = list(client.run(os.getpid).values())
    finally:
        client.close()
        cluster.close()
    result = {
        "what": "reassign_labels (default mode) + Reassignment.store on a synthetic movie, "
                "workers with a memory limit",
        "n_frames": frames, "spatial_shape": list(shape), "chunks": list(chunks),
        "n_objects": n_objects, "workers": workers, "threads_per_worker": 1,
        "memory_limit_per_worker_bytes": limit,
        "workers_total_memory_gb": round(workers * limit / 1e9, 3),
        "movie_uncompressed_gb": round(n_vox * BYTES_PER_VOXEL / 1e9, 3),
        "stage_io_uncompressed_gb": round(n_vox * STAGE_BYTES_PER_VOXEL / 1e9, 3),
        "movie_over_workers_memory": round(n_vox * BYTES_PER_VOXEL / (workers * limit), 2),
        "graph_tasks": n_tasks,
        "write_movie_s": round(t_write, 1),
        "reassign_constrained_s": round(t_constrained, 1),
        "peak_worker_rss_bytes": max(mem.peak.values()),
        "peak_worker_rss_gb": round(max(mem.peak.values()) / 1e9, 3),
        "peak_worker_rss_over_limit": round(max(mem.peak.values()) / limit, 3),
        "workers_restarted": sorted(pids) != sorted(pids_after),
    }
    if compare:
        res = dt.reassign_labels(dt.open_dataset(movie), truth_flow(ds))
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=workers):
            res.store(str(out / "unconstrained.zarr"), compute=True)
        result["reassign_unconstrained_threads_s"] = round(time.perf_counter() - t0, 1)
        result.update(compare_stores(out / "constrained.zarr", out / "unconstrained.zarr", frames))
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="working folder (movie + two output stores)")
    ap.add_argument("--frames", type=int, default=52)
    ap.add_argument("--shape", default="32,512,512", help="spatial shape Z,Y,X")
    ap.add_argument("--chunks", default="32,256,256", help="spatial chunks of the movie")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="1GB", help="per worker")
    ap.add_argument("--n-objects", type=int, default=150)
    ap.add_argument("--no-compare", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=str(HERE / "results" / "reassign_memory.json"))
    args = ap.parse_args(argv)
    import psutil

    import dask_tracking

    parse = lambda s: tuple(int(v) for v in s.split(","))  # noqa: E731
    result = run_benchmark(Path(args.out), frames=args.frames, shape=parse(args.shape),
                           chunks=parse(args.chunks), workers=args.workers,
                           memory_limit=args.memory_limit, n_objects=args.n_objects,
                           compare=not args.no_compare, keep=args.keep)
    result["command"] = "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:]))
    result["machine"] = {"cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
                         "python": platform.python_version(), "platform": platform.platform()}
    result["dask_tracking"] = dask_tracking.__version__
    result["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
