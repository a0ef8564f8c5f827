"""Throughput of each tracking stage on one GPU against the CPU cores of the same machine.

One command (on a machine with CUDA, CuPy and dask-cuda)::

    python benchmarks/bench_gpu.py --yeast YEAST.zarr --tiles 8 --frames 4 \\
        --synthetic 16 48 1024 1024 --json OUT.json

Inputs:

``--yeast``
    a zarr in our layout with the yeast sample's six volumes (any number of frames, the
    first ``--frames`` are used); every frame is tiled ``--tiles`` x ``--tiles`` in Y and X
    (label and branch ids offset per tile so they stay unique, as ``make_inputs.py`` does)
    and written to ``--work`` (local disk) with one tile per chunk.
``--synthetic T Z Y X``
    a seeded synthetic movie (:func:`dask_tracking.datasets.synthetic`, rendered lazily
    per frame, nothing written): its rendering is part of both paths' time.

Paths, per stage (``flow``: ``estimate_flow(...).persist()``; ``reassign``: labels and
branches of ``reassign_labels`` written to a zarr store; ``tracks``: ``label_tracks`` of
every label from frame 0):

``cpu``  a ``distributed.LocalCluster`` of one single-threaded worker process per core;
``gpu``  ``dask_tracking.cluster(kind="gpu")`` (``LocalCUDACluster``: one worker per GPU,
         RMM pool) on ``dask_tracking.gpu.to_device(ds)`` (CuPy chunks);
``gpuN`` the same chunks on one ``LocalCUDACluster`` worker with N threads (``--paths``).

A stage that fails on a path is recorded with its error (e.g. a stage whose kernels do
not take CuPy chunks yet). Also measured: the neighbour-search primitive
(:func:`dask_tracking.backend.nearest_neighbour`, cKDTree with every core vs the GPU brute
force). The JSON is rewritten after every measurement, so a run cut short keeps what it did.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _tile(frame: np.ndarray, n: int, offset: int) -> np.ndarray:
    z, y, x = frame.shape
    out = np.empty((z, y * n, x * n), dtype=frame.dtype)
    for i in range(n):
        for j in range(n):
            block = frame
            if offset:
                block = np.where(frame > 0, frame + np.asarray((i * n + j) * offset, dtype=frame.dtype), 0)
            out[:, i * y:(i + 1) * y, j * x:(j + 1) * x] = block
    return out


def tiled_yeast(source: str, tiles: int, frames: int, work: Path):
    """Write the first ``frames`` of ``source`` tiled ``tiles`` x ``tiles`` to ``work``; open it."""
    import dask.array as da
    import zarr

    import dask_tracking as dt
    from dask_tracking.dataset import VOLUMES, TrackingDataset
    from dask_tracking.io.zarr_layout import write_tracking_zarr

    path = work / f"yeast_x{tiles}_t{frames}.zarr"
    if not (path / "zarr.json").exists():
        src = dt.open_dataset(source).isel(t=slice(0, frames))
        arrays = {}
        for name in VOLUMES:
            a = np.asarray(getattr(src, name).compute())
            off = int(a.max()) if name in ("labels", "branches") else 0
            arrays[name] = np.stack([_tile(a[t], tiles, off) for t in range(a.shape[0])])
        z, y, x = arrays["labels"].shape[1:]
        ds = TrackingDataset.from_arrays({k: da.from_array(v, chunks=(1, z, y // tiles, x // tiles))
                                          for k, v in arrays.items()}, src.scale, axes=src.axes,
                                         source=f"{source} tiled {tiles}x{tiles}")
        write_tracking_zarr(ds, path, overwrite=True)
        del arrays
    zarr.open_group(str(path), mode="r")
    return dt.open_dataset(str(path))


def _nbytes(ds) -> int:
    return int(sum(a.nbytes for a in ds.arrays().values()))


class Paths:
    """The two clusters, started once, used one at a time through ``dask.config``."""

    def __init__(self, cpu_workers: int, cpu_memory: str):
        self.cpu_workers, self.cpu_memory = cpu_workers, cpu_memory
        self.sessions = {}

    def client(self, kind: str):
        if kind not in self.sessions:
            t0 = time.perf_counter()
            if kind == "cpu":
                from distributed import Client, LocalCluster

                cl = LocalCluster(n_workers=self.cpu_workers, threads_per_worker=1, processes=True,
                                  memory_limit=self.cpu_memory, dashboard_address=None)
                self.sessions[kind] = (Client(cl, set_as_default=False), cl, time.perf_counter() - t0)
            elif kind == "gpu":
                import dask_tracking as dt

                s = dt.cluster(kind="gpu")
                self.sessions[kind] = (s.client, s, time.perf_counter() - t0)
            else:  # "gpuN": one LocalCUDACluster worker with N threads (host-bound parts in parallel)
                from dask_cuda import LocalCUDACluster
                from distributed import Client

                cl = LocalCUDACluster(threads_per_worker=int(kind[3:]), dashboard_address=None,
                                      device_memory_limit=0.8)
                self.sessions[kind] = (Client(cl, set_as_default=False), cl, time.perf_counter() - t0)
        return self.sessions[kind][0]

    def close(self):
        for client, cl, _ in self.sessions.values():
            client.close()
            cl.close()


def run_stage(stage: str, ds, flow, kind: str, work: Path):
    """Run ``stage`` on the current scheduler; return (seconds, summary, flow)."""
    import dask
    import zarr

    import dask_tracking as dt
    from dask_tracking.gpu import array_to_host

    t0 = time.perf_counter()
    if stage == "flow":
        out = dt.estimate_flow(ds).persist()
        n = int(len(out.to_numpy()))
        return time.perf_counter() - t0, {"flow_rows": n}, out
    if stage == "reassign":
        res = dt.reassign_labels(ds, flow)
        store = work / f"reassign_{kind}.zarr"
        g = zarr.open_group(str(store), mode="w")
        targets, sources = [], []
        for name in ("labels", "branches"):
            a = array_to_host(getattr(res, name))
            targets.append(g.create_array(name, shape=a.shape, dtype=a.dtype,
                                          chunks=tuple(c[0] for c in a.chunks), overwrite=True))
            sources.append(a)
        dask.array.store(sources, targets, lock=False)
        lab = zarr.open_array(str(store / "labels"), mode="r")
        return time.perf_counter() - t0, {"labelled_voxels_last_frame": int((lab[-1] > 0).sum())}, flow
    if stage == "tracks":
        tr = dt.label_tracks(ds, flow)
        return time.perf_counter() - t0, {"track_rows": int(tr.data.shape[0])}, flow
    raise ValueError(stage)


def bench_dataset(name: str, ds, stages, paths: Paths, work: Path, result: dict, save,
                  kinds=("cpu", "gpu")) -> None:
    import dask

    from dask_tracking.gpu import to_device

    entry = result.setdefault("datasets", {}).setdefault(name, {
        "shape": list(ds.shape), "chunks": [c[0] for c in ds.labels.chunks], "bytes": _nbytes(ds),
        "voxels": int(np.prod(ds.shape)), "stages": {}})
    flows = {}
    for stage in stages:
        for kind in kinds:
            rec = entry["stages"].setdefault(stage, {}).setdefault(kind, {})
            try:
                client = paths.client(kind)
                data = to_device(ds) if kind.startswith("gpu") else ds
                # the GPU path reads the flow the CPU path made (same rows: tests/gpu) when its own failed
                flow = flows.get(kind, flows.get("cpu"))
                with dask.config.set(scheduler=client.get):
                    s, info, out = run_stage(stage, data, flow, kind, work)
                if stage == "flow":
                    flows[kind] = out
                rec.update(ok=True, seconds=round(s, 3), voxels_per_s=float(np.prod(ds.shape)) / s, **info)
            except Exception as exc:  # recorded, not hidden: the README reports it
                rec.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:600],
                           where=traceback.format_exc().strip().splitlines()[-3:])
            print(name, stage, kind, rec, flush=True)
            save()
        c = entry["stages"][stage].get("cpu", {})
        for kind in kinds[1:]:
            g = entry["stages"][stage].get(kind, {})
            if c.get("ok") and g.get("ok"):
                entry["stages"][stage][f"{kind}_speedup"] = round(c["seconds"] / g["seconds"], 3)
    for kind in kinds:
        ok = [entry["stages"][s][kind] for s in stages if entry["stages"][s].get(kind, {}).get("ok")]
        if len(ok) == len(stages):
            entry.setdefault("whole_stage_s", {})[kind] = round(sum(r["seconds"] for r in ok), 3)
    w = entry.get("whole_stage_s", {})
    for kind in kinds[1:]:
        if "cpu" in w and kind in w:
            entry.setdefault("whole_stage_speedup", {})[kind] = round(w["cpu"] / w[kind], 3)
    save()


def bench_search(result: dict, save, sizes) -> None:
    """nearest_neighbour (k=1 and k=8 under a bound) and ball_counts: cKDTree on the host vs GPU."""
    import cupy as cp
    from scipy.spatial import cKDTree

    from dask_tracking.backend import ball_counts, nearest_neighbour

    out = result.setdefault("search", [])
    rng = np.random.default_rng(0)
    for n_p, n_q in sizes:
        p = rng.uniform(0, 20, (n_p, 3))
        q = rng.uniform(0, 20, (n_q, 3))
        gp, gq = cp.asarray(p), cp.asarray(q)
        r = float(20 * (8 / n_p) ** (1 / 3))  # about 8 points in the ball
        for what, k in (("knn", 1), ("knn", 8), ("ball", 0)):
            t0 = time.perf_counter()
            if what == "knn":
                want = cKDTree(p).query(q, k=k, distance_upper_bound=r, workers=-1)
            else:
                want = cKDTree(p).query_ball_point(q, r, return_length=True, workers=-1)
            cpu_s = time.perf_counter() - t0
            if what == "knn":
                nearest_neighbour(gp[:10], gq[:10], k)  # warm the kernels
            else:
                ball_counts(gp[:10], gq[:10], r)
            cp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            got = nearest_neighbour(gp, gq, k, distance_upper_bound=r) if what == "knn" else ball_counts(gp, gq, r)
            cp.cuda.Device().synchronize()
            gpu_s = time.perf_counter() - t0
            same = (bool(np.array_equal(cp.asnumpy(got[1]).reshape(np.shape(want[1])), want[1]))
                    if what == "knn" else bool(np.array_equal(cp.asnumpy(got), want)))
            rec = {"points": n_p, "queries": n_q, "op": what, "k": k, "radius": r, "cpu_ckdtree_all_cores_s": round(cpu_s, 4),
                   "gpu_s": round(gpu_s, 4), "gpu_speedup": round(cpu_s / gpu_s, 3), "same_answer": same}
            out.append(rec)
            print(rec, flush=True)
            save()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--yeast", help="our zarr layout of the yeast sample")
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--synthetic", type=int, nargs=4, metavar=("T", "Z", "Y", "X"))
    ap.add_argument("--synthetic-objects", type=int, default=400)
    ap.add_argument("--stages", nargs="+", default=["flow", "reassign", "tracks"])
    ap.add_argument("--search", type=int, nargs="*", default=[20000, 1000000],
                    help="points and queries pairs for the search primitive (even count)")
    ap.add_argument("--paths", nargs="+", default=["cpu", "gpu"],
                    help="cpu (LocalCluster, a worker per core) first, then gpu (dask_tracking.cluster(kind='gpu')) "
                         "and/or gpuN (one LocalCUDACluster worker with N threads)")
    ap.add_argument("--cpu-workers", type=int, default=os.cpu_count())
    ap.add_argument("--cpu-memory", default="6GB")
    ap.add_argument("--work", default="/tmp/dask_tracking_bench_gpu")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from dask_tracking.gpu import device_summary

    result = {
        "command": "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "gpu": device_summary(),
                    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                             text=True, cwd=HERE).stdout.strip() or None,
                    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "cpu_workers": args.cpu_workers,
    }

    def save():
        Path(args.json).write_text(json.dumps(result, indent=1))

    save()
    s = args.search
    bench_search(result, save, list(zip(s[0::2], s[1::2])))
    paths = Paths(args.cpu_workers, args.cpu_memory)
    try:
        if args.yeast:
            t0 = time.perf_counter()
            ds = tiled_yeast(args.yeast, args.tiles, args.frames, work)
            result["yeast_prepare_s"] = round(time.perf_counter() - t0, 2)
            bench_dataset(f"yeast_x{args.tiles}_t{args.frames}", ds, args.stages, paths, work, result, save,
                          tuple(args.paths))
        if args.synthetic:
            from dask_tracking.datasets import synthetic

            T, Z, Y, X = args.synthetic
            ds = synthetic(3, T, shape=(Z, Y, X), n_objects=args.synthetic_objects, seed=0,
                           chunks=(Z, min(Y, 512), min(X, 512)))
            bench_dataset(f"synthetic_{T}x{Z}x{Y}x{X}", ds, args.stages, paths, work, result, save,
                          tuple(args.paths))
        result["cluster_start_s"] = {k: round(v[2], 2) for k, v in paths.sessions.items()}
        save()
    finally:
        paths.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
