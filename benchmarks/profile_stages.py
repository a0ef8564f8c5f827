"""Profile the hot spots of dask_tracking's stages with cProfile (single-threaded scheduler).

One command::

    python benchmarks/profile_stages.py --tiles 2 --frames 10 [--compat nellie]

Runs flow, reassignment and tracks of all labels with ``scheduler="sync"`` so that every
task runs in this process under the profiler, and writes for each stage the functions with
the largest own time to ``benchmarks/results/profile_<stage>_x{n}_t{T}_<compat>.json``
(and the full ``pstats`` dump to ``benchmarks/work/out/``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scaling import data_for  # noqa: E402
from bench_side_by_side import OUT, RESULTS, machine  # noqa: E402
import _ours_stage as ours  # noqa: E402


def _top(prof: cProfile.Profile, n: int) -> list[dict]:
    st = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():
        short = file.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append({"func": f"{short}:{line}({func})", "ncalls": nc, "tottime": tt, "cumtime": ct})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    return rows[:n]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=2)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--compat", default="default", choices=["default", "nellie"])
    p.add_argument("--stages", nargs="+", default=["flow", "reassign", "tracks"])
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)

    import dask

    import dask_tracking as dt

    data = data_for(a.tiles, a.frames)
    ds = dt.open_dataset(str(data)).isel(t=slice(0, a.frames))
    compat = "nellie" if a.compat == "nellie" else None
    out = OUT / f"profile_x{a.tiles}_t{a.frames}_{a.compat}.zarr"
    OUT.mkdir(parents=True, exist_ok=True)
    ckw = {"scheduler": "sync"}
    cmd = (f"python benchmarks/profile_stages.py --tiles {a.tiles} --frames {a.frames}"
           + (f" --compat {a.compat}" if a.compat != "default" else ""))
    flow = None
    for stage in ("flow", "reassign", "tracks"):
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        with dask.config.set(scheduler="sync"):
            prof.enable()
            if stage == "flow":
                flow = ours.run_flow(ds, out, compat, ckw)
            elif stage == "reassign":
                ours.run_reassign(ds, flow, out, compat, ckw)
            else:
                ours.run_tracks(ds, flow, out, compat, ckw)
            prof.disable()
        wall = time.perf_counter() - t0
        if stage not in a.stages:
            continue
        prof.dump_stats(str(OUT / f"profile_{stage}_x{a.tiles}_t{a.frames}_{a.compat}.pstats"))
        top = _top(prof, a.top)
        res = {"stage": stage, "tiles": a.tiles, "frames": a.frames, "compat": a.compat,
               "shape": list(ds.shape), "wall_s": wall, "top": top, "command": cmd,
               "machine": machine()}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"profile_{stage}_x{a.tiles}_t{a.frames}_{a.compat}.json").write_text(
            json.dumps(res, indent=1))
        print(f"== {stage}: {wall:.2f} s (sync scheduler, under cProfile)")
        for r in top[:15]:
            print(f"  {r['tottime']:8.2f} {r['cumtime']:8.2f} {r['ncalls']:>9} {r['func']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
