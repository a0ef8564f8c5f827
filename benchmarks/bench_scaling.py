"""Scaling of dask_tracking: time against frames, voxels per frame and workers; cost per voxel.

One command::

    python benchmarks/bench_scaling.py [--series frames voxels workers] [--compat default]

Each point runs flow, reassignment and tracks of all labels in one fresh process on one
cluster (``_ours_stage.py --stage all``) and, separately, the read floor (every chunk of
the six inputs read once). Series:

``frames``   the yeast sample tiled 2 x 2, first 5, 10, 20, 30 frames
``voxels``   tiled 1 x 1, 2 x 2, 4 x 4 (and 8 x 8 with ``--max-tiles 8``), 8 frames
``workers``  tiled 2 x 2, 10 frames: dask's threaded scheduler (2 threads, "0 workers") and a
             LocalCluster of 1 and 2 worker processes (and one per core where there are more)

``frames`` and ``voxels`` run on ``--workers`` (default 0: the threaded scheduler).

Inputs come from ``make_inputs.py`` (generated when missing). Results:
``benchmarks/results/scaling_<series>_x{n}_t{T}_w{w}.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_inputs  # noqa: E402
from _measure import run_measured  # noqa: E402
from bench_side_by_side import OUT, RESULTS, machine  # noqa: E402


def data_for(n: int, frames: int) -> Path:
    """An existing input with >= ``frames`` frames (our layout only), else generate one."""
    for p in sorted(make_inputs.DATA.glob(f"yeast_x{n}_t*.zarr")):
        t = int(p.stem.split("_t")[-1])
        if t >= frames and (p / "zarr.json").exists():
            return p
    return make_inputs.make(n, frames, layouts=("zarr",))["zarr"]


def point(series: str, n: int, frames: int, workers: int, *, compat: str, memory_limit: str,
          timeout: float, cmd_line: str) -> dict:
    data = data_for(n, frames)
    tag = f"{series}_x{n}_t{frames}_w{workers}"
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"scaling_{tag}.zarr"
    base = [sys.executable, str(HERE / "_ours_stage.py"), "--data", str(data), "--out", str(out),
            "--compat", compat, "--workers", str(workers), "--memory-limit", memory_limit,
            "--frames", str(frames)]
    js = OUT / f"scaling_{tag}.json"
    js.unlink(missing_ok=True)
    m = run_measured(base + ["--stage", "all", "--json", str(js)], timeout=timeout, inner_json=js)
    jr = OUT / f"scaling_{tag}_read.json"
    jr.unlink(missing_ok=True)
    r = run_measured(base + ["--stage", "read", "--json", str(jr)], timeout=timeout, inner_json=jr)
    inner = m.inner
    res = {
        "series": series, "tiles": n, "frames": frames, "workers": workers, "compat": compat,
        "shape": inner.get("shape") or r.inner.get("shape"),
        "ok": m.rc == 0 and not m.timed_out and bool(inner), "timed_out": m.timed_out,
        "run_s": inner.get("run_s"), "stages_s": inner.get("stages_s", {}),
        "setup_s": inner.get("setup_s"), "wall_s": m.wall_s,
        "peak_rss_mb": round(m.peak_rss / 2**20, 1), "peak_anon_mb": round(m.peak_anon / 2**20, 1),
        "peak_single_process_mb": round(m.peak_single / 2**20, 1),
        "read_floor_s": r.inner.get("run_s"), "read_bytes": r.inner.get("bytes_read"),
        "command": cmd_line, "machine": machine(), "subprocess": " ".join(m.cmd),
        "tail": "" if m.rc == 0 else m.tail[-2000:],
    }
    shape = res["shape"] or [frames]
    vox = 1
    for s in shape:
        vox *= int(s)
    res["voxels"] = vox
    if res["ok"] and res["run_s"]:
        res["ns_per_voxel"] = res["run_s"] / vox * 1e9
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scaling_{tag}.json").write_text(json.dumps(res, indent=1))
    st = res["stages_s"]
    print(f"{tag}: ok={res['ok']} run={res['run_s']} stages={ {k: round(v, 2) for k, v in st.items()} } "
          f"read={res['read_floor_s']} peak={res['peak_rss_mb']} MB", flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", nargs="+", default=["frames", "voxels", "workers"],
                   choices=["frames", "voxels", "workers"])
    p.add_argument("--compat", default="default", choices=["default", "nellie"])
    p.add_argument("--memory-limit", default="4GB")
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--max-tiles", type=int, default=4, help="largest n x n for the voxels series")
    p.add_argument("--workers", type=int, default=0, help="for the frames and voxels series")
    a = p.parse_args(argv)
    kw = dict(compat=a.compat, memory_limit=a.memory_limit, timeout=a.timeout)
    extra = f" --compat {a.compat}" if a.compat != "default" else ""
    if "frames" in a.series:
        for t in (5, 10, 20, 30):
            point("frames", 2, t, a.workers, cmd_line=f"python benchmarks/bench_scaling.py --series frames"
                  f" --workers {a.workers}{extra}", **kw)
    if "voxels" in a.series:
        for n in (1, 2, 4, 8):
            if n > a.max_tiles:
                continue
            point("voxels", n, 8, a.workers, cmd_line=f"python benchmarks/bench_scaling.py --series voxels"
                  f" --max-tiles {a.max_tiles} --workers {a.workers}{extra}", **kw)
    if "workers" in a.series:
        ws = sorted({0, 1, 2, os.cpu_count() or 2})
        for w in ws:
            point("workers", 2, 10, w, cmd_line=f"python benchmarks/bench_scaling.py --series workers{extra}", **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
