"""Larger than memory: the whole tracking stage on a synthetic movie several times the
total worker memory, run to the end under worker memory limits.

One command::

    python benchmarks/bench_larger_than_memory.py --shape 16 768 768 --frames 40 \\
        --workers 2 --memory-limit 1GB

1. writes a synthetic movie with :func:`dask_tracking.datasets.write_synthetic_zarr`
   (chunks 1 x 16 x 256 x 256) to ``benchmarks/work/data/`` (kept for later runs);
2. in a fresh process, starts a ``LocalCluster`` of ``--workers`` processes x 1 thread
   with ``--memory-limit`` each (the worker settings of :func:`dask_tracking.cluster`,
   spilling to ``benchmarks/work/spill``) and runs :func:`dask_tracking.run` (default
   mode: flow, reassignment and every output written to one zarr store; ``--tracks``
   adds the tracks of all labels);
3. measures the wall time of ``run``, the throughput in input MB/s (uncompressed bytes
   of the six inputs) and voxels/s, the peak resident memory of the whole process tree
   (client, nannies, workers; sampled every 20 ms from outside) and of each worker
   (sampled every 50 ms from the client), the bytes the workers spilled to disk
   (distributed's cumulative ``disk-write`` metric) and whether a worker was restarted;
4. checks the output: ``dask_tracking.run`` on the first ``--check-frames`` frames
   (``all``: the whole movie) on the threaded scheduler without any limit, compared
   with the constrained run's flow rows, reassigned labels, branches and voxel matches
   of those frames (the reassignment is a chain from frame 0, so a prefix of the movie
   gives the same frames).

If the constrained run does not finish within ``--timeout`` seconds, the worker
memory, the tasks each worker was processing and the last worker log lines are
written to the result (``stall``) before the run is stopped.

Result: ``benchmarks/results/larger_than_memory.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import threading
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


class _WorkerRSS:
    """Largest RSS of each worker process, sampled every ``interval`` s in a thread."""

    def __init__(self, pids: dict, interval: float = 0.05):
        import psutil

        self.procs = {}
        for addr, pid in pids.items():
            try:
                self.procs[addr] = psutil.Process(pid)
            except psutil.Error:
                pass
        self.peak = {a: 0 for a in self.procs}
        self.last = dict(self.peak)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        for a, p in self.procs.items():
            try:
                rss = p.memory_info().rss
            except Exception:
                continue
            self.last[a] = rss
            self.peak[a] = max(self.peak[a], rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)

    def __enter__(self) -> "_WorkerRSS":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _worker_stats(dask_worker) -> dict:
    """Run on each worker: its pid, RSS and cumulative spill metrics."""
    import os as _os

    import psutil

    d = dask_worker.data
    cm = getattr(d, "cumulative_metrics", {}) or {}
    cur = getattr(d, "spilled_total", None)
    return {
        "pid": _os.getpid(),
        "rss": psutil.Process().memory_info().rss,
        "spill_written_bytes": int(cm.get(("disk-write", "bytes"), 0)),
        "spill_writes": int(cm.get(("disk-write", "count"), 0)),
        "unspill_read_bytes": int(cm.get(("disk-read", "bytes"), 0)),
        "spilled_now_bytes": int(getattr(cur, "disk", 0) or 0),
        "memory_limit": getattr(dask_worker, "memory_limit", None)
        or getattr(getattr(dask_worker, "memory_manager", None), "memory_limit", None),
    }


def _held(dask_worker) -> dict:
    """Run on each worker: bytes of task results it holds, by task-name prefix, in memory / on disk."""
    from dask.utils import key_split

    data = dask_worker.data
    fast = getattr(data, "fast", data)
    out: dict = {}
    for key, ts in list(dask_worker.state.tasks.items()):
        if ts.state != "memory":
            continue
        d = out.setdefault(key_split(key), {"mem": 0, "disk": 0, "n": 0})
        d["mem" if key in fast else "disk"] += int(ts.nbytes or 0)
        d["n"] += 1
    return out


class _HeldSampler:
    """Every ``every`` s: what the workers hold, by task prefix (peak and a short timeline)."""

    def __init__(self, client, every: float):
        self.client, self.every = client, every
        self.peak: dict = {}
        self.timeline: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.perf_counter()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                per_worker = self.client.run(_held)
            except Exception:
                continue
            tot: dict = {}
            for held in per_worker.values():
                for k, d in held.items():
                    t = tot.setdefault(k, {"mem": 0, "disk": 0, "n": 0})
                    for f in t:
                        t[f] += d[f]
            for k, d in tot.items():
                pk = self.peak.setdefault(k, {"mem": 0, "disk": 0, "n": 0})
                for f in pk:
                    pk[f] = max(pk[f], d[f])
            top = sorted(tot.items(), key=lambda kv: -(kv[1]["mem"] + kv[1]["disk"]))[:4]
            self.timeline.append([round(time.perf_counter() - self.t0, 1),
                                  {k: [round(d["mem"] / 2**20), round(d["disk"] / 2**20), d["n"]]
                                   for k, d in top}])

    def __enter__(self) -> "_HeldSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _diagnose(client, rss: "_WorkerRSS | None") -> dict:
    """What the cluster is doing: for a stalled or failed run."""
    out: dict = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        out["workers"] = client.run(_worker_stats)
    except Exception as exc:
        out["workers"] = repr(exc)
    try:
        info = client.scheduler_info()["workers"]
        out["worker_status"] = {a: {"status": w.get("status"), "memory": w.get("metrics", {}).get("memory"),
                                    "managed_bytes": w.get("metrics", {}).get("managed_bytes"),
                                    "spilled_bytes": w.get("metrics", {}).get("spilled_bytes")}
                                for a, w in info.items()}
    except Exception as exc:
        out["worker_status"] = repr(exc)
    try:
        out["processing"] = {a: [str(k) for k in ks][:20] for a, ks in client.processing().items()}
    except Exception as exc:
        out["processing"] = repr(exc)
    try:
        logs = client.get_worker_logs(n=40)
        out["worker_logs"] = {a: [f"{lvl} {msg}"[:400] for lvl, msg in lines] for a, lines in logs.items()}
    except Exception as exc:
        out["worker_logs"] = repr(exc)
    if rss is not None:
        out["worker_peak_rss"] = dict(rss.peak)
        out["worker_last_rss"] = dict(rss.last)
    return out


def _inner(argv) -> int:
    """The measured child: cluster + dask_tracking.run."""
    p = argparse.ArgumentParser()
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--workers", type=int)
    p.add_argument("--memory-limit")
    p.add_argument("--tracks", action="store_true")
    p.add_argument("--json")
    p.add_argument("--deadline", type=float, default=None)
    p.add_argument("--held-every", type=float, default=0)
    a = p.parse_args(argv)
    import dask
    from distributed import Client, LocalCluster

    import dask_tracking as dt
    from dask_tracking.cluster import worker_config

    js = Path(a.json)
    t0 = time.perf_counter()
    with dask.config.set(worker_config()):  # the worker settings of dask_tracking.cluster()
        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                               memory_limit=a.memory_limit, dashboard_address=":0",
                               local_directory=str(SPILL))
    client = Client(cluster)
    client.wait_for_workers(a.workers)
    setup = time.perf_counter() - t0
    start = client.run(_worker_stats)
    pids = {addr: st["pid"] for addr, st in start.items()}
    info: dict = {"setup_s": setup, "worker_pids_start": pids, "dashboard": client.dashboard_link,
                  "worker_rss_start": {a_: st["rss"] for a_, st in start.items()}}
    rss = _WorkerRSS(pids)

    def on_deadline() -> None:  # stalled: record what the cluster is doing, then stop
        info["stall"] = _diagnose(client, rss)
        info["error"] = f"did not finish within {a.deadline:.0f} s"
        js.write_text(json.dumps(info, default=str))
        os._exit(3)

    timer = None
    if a.deadline:
        timer = threading.Timer(a.deadline, on_deadline)
        timer.daemon = True
        timer.start()
    res = None
    held = _HeldSampler(client, a.held_every) if a.held_every > 0 else contextlib.nullcontext()
    with rss, held:
        t0 = time.perf_counter()
        try:
            res = dt.run(a.data, a.out, client=client, overwrite=True, tracks=a.tracks)
        except Exception as exc:
            info["error"] = repr(exc)
            info["failure"] = _diagnose(client, rss)
        run_s = time.perf_counter() - t0
    if a.held_every > 0:
        info["held_peak_by_prefix"] = dict(sorted(held.peak.items(),
                                                  key=lambda kv: -(kv[1]["mem"] + kv[1]["disk"]))[:12])
        info["held_timeline_mb"] = held.timeline
    if timer is not None:
        timer.cancel()
    end = client.run(_worker_stats)
    info.update({
        "run_s": run_s if res is not None else None,
        "flow_rows": getattr(res, "flow_rows", None),
        "tracks_rows": getattr(res, "tracks_rows", None),
        "worker_peak_rss": rss.peak,
        "worker_stats_end": end,
        # a nanny restarts a worker that passes 95% of its limit: the pids would change
        "workers_restarted": {st["pid"] for st in end.values()} != set(pids.values()),
    })
    js.write_text(json.dumps(info, default=str))
    try:
        client.close()
        cluster.close()
    except Exception:
        pass
    return 0 if res is not None else 2


def _compare(constrained: Path, reference: Path, n_frames: int) -> dict:
    """Flow rows, reassigned volumes and voxel matches of the first ``n_frames`` frames."""
    import numpy as np
    import zarr

    from dask_tracking.flow.table import FlowTable
    from dask_tracking.io.output import read_voxel_matches

    a = zarr.open_group(str(constrained), mode="r")
    b = zarr.open_group(str(reference), mode="r")
    fa, fb = FlowTable.from_zarr(a), FlowTable.from_zarr(b)
    import dask

    pa = dask.compute(*fa.pairs[: n_frames - 1], scheduler="threads")
    pb = dask.compute(*fb.pairs[: n_frames - 1], scheduler="threads")
    flow_equal = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(pa, pb))
    res = {"frames_compared": n_frames, "flow_rows_compared": int(sum(len(x) for x in pb)),
           "flow_equal": bool(flow_equal)}
    for name in ("labels_reassigned", "branches_reassigned"):
        eq = True
        for t in range(n_frames):
            eq &= bool(np.array_equal(a[name][t], b[name][t]))
        res[f"{name}_equal"] = eq
    vm = True
    n_matches = 0
    for t in range(n_frames - 1):
        x, y = read_voxel_matches(a, t), read_voxel_matches(b, t)
        if x is None or y is None:
            vm &= x is None and y is None
        else:
            n_matches += len(y)
            vm &= bool(np.array_equal(x, y))
    res["voxel_matches_equal"] = vm
    res["voxel_matches_compared"] = n_matches
    res["labelled_voxels_compared"] = int(sum(int(np.count_nonzero(b["labels_reassigned"][t]))
                                              for t in range(n_frames)))
    res["equal"] = all(v for k, v in res.items() if k.endswith("_equal"))
    return res


def _check(path: Path, out: Path, n_frames: int, tracks: bool) -> dict:
    """``dask_tracking.run`` on the first ``n_frames`` frames, threads, no limit; compare."""
    import dask_tracking as dt

    ref = OUT / "larger_than_memory_check.zarr"
    shutil.rmtree(ref, ignore_errors=True)
    ds = dt.open_dataset(str(path))
    n = ds.n_frames if n_frames <= 0 else min(n_frames, ds.n_frames)
    t0 = time.perf_counter()
    dt.run(ds.isel(t=slice(0, n)), ref, client=None, overwrite=True, tracks=False)
    s = time.perf_counter() - t0
    res = _compare(out, ref, n)
    res["unconstrained_run_s"] = s
    res["scheduler"] = "threads (no distributed client, no memory limit)"
    shutil.rmtree(ref, ignore_errors=True)
    return res


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--inner":
        return _inner(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=(16, 768, 768))
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--objects", type=int, default=None,
                   help="synthetic objects (default: the density of the synthetic default movie)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="1GB", help="per worker")
    p.add_argument("--tracks", action="store_true")
    p.add_argument("--check-frames", default="4",
                   help="frames of the unconstrained comparison run ('all': the whole movie; 0: none)")
    p.add_argument("--timeout", type=float, default=1500,
                   help="seconds before a stalled run is diagnosed and stopped")
    p.add_argument("--keep", action="store_true", help="keep the output store")
    p.add_argument("--held-every", type=float, default=0,
                   help="every S seconds, record which task results the workers hold (by task prefix)")
    p.add_argument("--result", default=str(RESULTS / "larger_than_memory.json"), help="result JSON")
    a = p.parse_args(argv)
    import numpy as np

    import dask_tracking.datasets as dsets

    z, y, x = a.shape
    objects = a.objects or max(6, int(round(6 * (y * x) / (96 * 128))))
    path = DATA / f"synthetic_{z}x{y}x{x}_t{a.frames}_o{objects}.zarr"
    t0 = time.perf_counter()
    generated = not (path / "zarr.json").exists()
    if generated:
        DATA.mkdir(parents=True, exist_ok=True)
        dsets.write_synthetic_zarr(path, a.frames, (z, y, x), overwrite=True, n_objects=objects,
                                   chunks=(min(z, 16), 256, 256), num_workers=2, seed=7)
    gen_s = time.perf_counter() - t0 if generated else None
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
    mach = machine()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--inner", "--data", str(path), "--out",
           str(out), "--workers", str(a.workers), "--memory-limit", a.memory_limit, "--json", str(js),
           "--deadline", str(a.timeout)]
    if a.tracks:
        cmd.append("--tracks")
    if a.held_every:
        cmd += ["--held-every", str(a.held_every)]
    m = run_measured(cmd, timeout=a.timeout + 120)
    inner = json.loads(js.read_text()) if js.exists() else {}
    ok = m.rc == 0 and not m.timed_out and inner.get("run_s") is not None
    run_s = inner.get("run_s")
    cmd_line = (f"python benchmarks/bench_larger_than_memory.py --shape {z} {y} {x} --frames {a.frames}"
                f" --workers {a.workers} --memory-limit {a.memory_limit} --check-frames {a.check_frames}"
                + (" --tracks" if a.tracks else ""))
    end = inner.get("worker_stats_end") or {}
    spill_w = sum(int(v.get("spill_written_bytes", 0)) for v in end.values()) if end else None
    peaks = inner.get("worker_peak_rss") or {}
    check = None
    if ok and a.check_frames not in ("0", 0):
        nf = 0 if a.check_frames == "all" else int(a.check_frames)
        check = _check(path, out, nf, a.tracks)
    res = {
        "what": "dask_tracking.run (default mode: flow + reassignment + outputs written"
                + (", tracks" if a.tracks else ", no tracks") + ") on a LocalCluster with a memory limit per worker",
        "completed": ok, "shape": list(ds.shape), "voxels": voxels, "input_bytes": input_bytes,
        "input_gb": input_bytes / 1e9, "objects": objects, "generate_s": gen_s,
        "workers": a.workers, "threads_per_worker": 1, "memory_limit": a.memory_limit,
        "total_worker_memory_bytes": total_mem, "input_over_worker_memory": input_bytes / total_mem,
        "tracks": a.tracks, "timed_out": m.timed_out or "stall" in inner, "rc": m.rc,
        "run_s": run_s, "wall_s": m.wall_s, "cpu_s": m.cpu_s, "setup_s": inner.get("setup_s"),
        "mb_per_s": input_bytes / 1e6 / run_s if ok and run_s else None,
        "voxels_per_s": voxels / run_s if ok and run_s else None,
        "peak_rss_tree_mb": round(m.peak_rss / 2**20, 1), "peak_anon_tree_mb": round(m.peak_anon / 2**20, 1),
        "peak_single_process_mb": round(m.peak_single / 2**20, 1), "processes": m.peak_procs,
        "peak_worker_rss_mb": round(max(peaks.values()) / 2**20, 1) if peaks else None,
        "peak_worker_rss_over_limit": max(peaks.values()) / _parse_bytes(a.memory_limit) if peaks else None,
        "worker_rss_at_start_mb": {k: round(v / 2**20, 1) for k, v in (inner.get("worker_rss_start") or {}).items()},
        "spill_written_bytes": spill_w, "workers_restarted": inner.get("workers_restarted"),
        "flow_rows": inner.get("flow_rows"), "check": check,
        "held_peak_by_prefix": inner.get("held_peak_by_prefix"),
        "held_timeline_mb": inner.get("held_timeline_mb"),
        "error": inner.get("error"), "stall": inner.get("stall"), "failure": inner.get("failure"),
        "command": cmd_line, "machine": mach, "tail": "" if ok else m.tail[-3000:],
    }
    Path(a.result).parent.mkdir(parents=True, exist_ok=True)
    Path(a.result).write_text(json.dumps(res, indent=1, default=str))
    brief = {k: v for k, v in res.items() if k not in ("machine", "tail", "stall", "failure")}
    print(json.dumps(brief, indent=1, default=str))
    if not ok:
        print(m.tail[-3000:])
    shutil.rmtree(SPILL, ignore_errors=True)
    if not a.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if ok and (check is None or check["equal"]) else 1


if __name__ == "__main__":
    sys.exit(main())
