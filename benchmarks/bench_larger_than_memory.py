"""Larger than memory: a synthetic movie several times the total worker memory, run to the end.

One command::

    python benchmarks/bench_larger_than_memory.py [--shape 16 768 768] [--frames 20] \\
        [--workers 2] [--memory-limit 600MB]

1. writes a synthetic movie with :func:`dask_tracking.datasets.write_synthetic_zarr`
   (chunks 1 x 16 x 256 x 256) to ``benchmarks/work/data/`` (kept for later runs);
2. in a fresh process, starts a ``LocalCluster`` of ``--workers`` processes with
   ``--memory-limit`` each (spilling to ``benchmarks/work/spill``) and runs the whole
   tracking stage with :func:`dask_tracking.run` (flow and reassignment written to one
   zarr store; add ``--tracks`` for the tracks of all labels);
3. measures wall time, the peak resident memory of the whole process tree and of the
   largest single process (sampled every 20 ms), and the throughput in input MB/s
   (uncompressed bytes of the six inputs) and voxels/s.

Result: ``benchmarks/results/larger_than_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _measure import run_measured  # noqa: E402
from bench_side_by_side import OUT, RESULTS, machine  # noqa: E402

DATA = HERE / "work" / "data"
SPILL = HERE / "work" / "spill"


def _parse_bytes(s: str) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(s))


def _inner(argv) -> int:
    """The measured child: cluster + dask_tracking.run."""
    p = argparse.ArgumentParser()
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--workers", type=int)
    p.add_argument("--memory-limit")
    p.add_argument("--tracks", action="store_true")
    p.add_argument("--json")
    a = p.parse_args(argv)
    from distributed import Client, LocalCluster

    import dask_tracking as dt

    import dask

    from dask_tracking.cluster import worker_environ

    t0 = time.perf_counter()
    with dask.config.set(worker_environ()):  # the workers' malloc settings of dask_tracking.cluster()
        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                               memory_limit=a.memory_limit, dashboard_address=":0",
                               local_directory=str(SPILL))
    client = Client(cluster)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = dt.run(a.data, a.out, client=client, overwrite=True, tracks=a.tracks)
    run_s = time.perf_counter() - t0

    def _worker_stats(dask_worker):
        import psutil

        d = dask_worker.data
        spilled = 0
        for attr in ("spilled_total", "stats"):
            v = getattr(d, attr, None)
            if v is not None:
                spilled = getattr(v, "disk_bytes", 0) or 0
                break
        return {"rss": psutil.Process().memory_info().rss, "spilled_bytes_total": spilled}

    try:
        stats = client.run(_worker_stats)
    except Exception as exc:  # pragma: no cover - informational only
        stats = {"error": repr(exc)}
    info = {"setup_s": setup, "run_s": run_s, "flow_rows": getattr(res, "flow_rows", None),
            "tracks_rows": getattr(res, "tracks_rows", None), "worker_stats_end": stats}
    Path(a.json).write_text(json.dumps(info, default=str))
    try:
        client.close()
        cluster.close()
    except Exception:
        pass
    return 0


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--inner":
        return _inner(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=(16, 768, 768))
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--objects", type=int, default=None,
                   help="synthetic objects (default: the density of the synthetic default movie)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="600MB", help="per worker")
    p.add_argument("--tracks", action="store_true")
    p.add_argument("--timeout", type=float, default=1800)
    a = p.parse_args(argv)
    import numpy as np

    import dask_tracking.datasets as dsets

    z, y, x = a.shape
    objects = a.objects or max(6, int(round(6 * (y * x) / (96 * 128))))
    path = DATA / f"synthetic_{z}x{y}x{x}_t{a.frames}_o{objects}.zarr"
    t0 = time.perf_counter()
    if not (path / "zarr.json").exists():
        DATA.mkdir(parents=True, exist_ok=True)
        dsets.write_synthetic_zarr(path, a.frames, (z, y, x), overwrite=True, n_objects=objects,
                                   chunks=(min(z, 16), 256, 256), num_workers=2, seed=7)
    gen_s = time.perf_counter() - t0
    import dask_tracking as dt

    ds = dt.open_dataset(str(path))
    input_bytes = int(sum(v.nbytes for v in ds.arrays().values()))
    voxels = int(np.prod(ds.shape))
    total_mem = a.workers * _parse_bytes(a.memory_limit)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "larger_than_memory.zarr"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(SPILL, ignore_errors=True)
    SPILL.mkdir(parents=True, exist_ok=True)
    js = OUT / "larger_than_memory_inner.json"
    js.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--inner", "--data", str(path), "--out",
           str(out), "--workers", str(a.workers), "--memory-limit", a.memory_limit, "--json", str(js)]
    if a.tracks:
        cmd.append("--tracks")
    m = run_measured(cmd, timeout=a.timeout, inner_json=js)
    inner = m.inner
    ok = bool(inner) and not m.timed_out
    run_s = inner.get("run_s")
    cmd_line = (f"python benchmarks/bench_larger_than_memory.py --shape {z} {y} {x} --frames {a.frames}"
                f" --workers {a.workers} --memory-limit {a.memory_limit}" + (" --tracks" if a.tracks else ""))
    res = {
        "shape": list(ds.shape), "voxels": voxels, "input_bytes": input_bytes,
        "input_gb": input_bytes / 1e9, "objects": objects, "generate_s": gen_s,
        "workers": a.workers, "memory_limit": a.memory_limit, "total_worker_memory_bytes": total_mem,
        "input_over_worker_memory": input_bytes / total_mem, "tracks": a.tracks,
        "ok": ok, "timed_out": m.timed_out, "rc": m.rc, "run_s": run_s, "wall_s": m.wall_s,
        "setup_s": inner.get("setup_s"),
        "mb_per_s": input_bytes / 1e6 / run_s if ok and run_s else None,
        "voxels_per_s": voxels / run_s if ok and run_s else None,
        "peak_rss_mb": round(m.peak_rss / 2**20, 1), "peak_anon_mb": round(m.peak_anon / 2**20, 1),
        "peak_worker_mb": round(m.peak_single / 2**20, 1), "processes": m.peak_procs,
        "spilled": _spill_note(inner), "inner": inner, "command": cmd_line, "machine": machine(),
        "tail": "" if ok else m.tail[-3000:],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "larger_than_memory.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: v for k, v in res.items() if k not in ("machine", "inner", "tail")}, indent=1))
    if not ok:
        print(m.tail[-3000:])
    shutil.rmtree(SPILL, ignore_errors=True)
    return 0 if ok else 1


def _spill_note(inner: dict) -> str:
    st = inner.get("worker_stats_end")
    if not isinstance(st, dict) or "error" in st:
        return "–"
    total = sum(int(v.get("spilled_bytes_total", 0) or 0) for v in st.values() if isinstance(v, dict))
    return f"{total / 2**20:.0f} MB" if total else "none reported"


if __name__ == "__main__":
    sys.exit(main())
