"""Peak memory of the whole run against the number of frames, one graph against windows of frames.

One command::

    python benchmarks/bench_frames_memory.py [--frames 8 16 30] [--windows one auto 8]

Each point runs ``dask_tracking.run`` (default mode, flow + reassignment + object vote, every
output written; dask's threaded scheduler, 2 threads) in a fresh process on the first N
frames of the yeast sample tiled 2 x 2 and stored in small chunks (17 x 64 x 64: 54 blocks a
frame, the block count of the 8 x 8 tiles), and samples its peak memory. ``one`` computes the
label chains as one graph over all frames (``window_frames=N``, what ``run`` did before
windows); ``auto`` uses ``run``'s default windows (about 2,048 frame-blocks: 38 frames here);
a number is that many frames per window. Every point checks that its reassigned labels and
branches equal those of the ``one`` run of the same frames.

Inputs: ``benchmarks/work/data/yeast_x2_t30_c64.zarr`` (made from the 2 x 2 tiles of
``make_inputs.py`` when missing). Results: ``benchmarks/results/frames_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _measure import run_measured  # noqa: E402
from bench_side_by_side import OUT, RESULTS, machine  # noqa: E402

CHUNKS = (17, 64, 64)

INNER = textwrap.dedent("""
    import json, sys, time
    import dask_tracking as dt
    data, out, n, window, js = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    ds = dt.open_dataset(data).isel(t=slice(0, n))
    w = None if window == "auto" else n if window == "one" else int(window)
    t0 = time.perf_counter()
    res = dt.run(ds, out, overwrite=True, window_frames=w)
    json.dump({"run_s": time.perf_counter() - t0, "frames": n, "shape": list(ds.shape),
               "blocks": [len(c) for c in ds.labels.chunks[1:]]}, open(js, "w"))
""")


def data_path() -> Path:
    """The 2 x 2 tiles, 30 frames, in 17 x 64 x 64 chunks (written once)."""
    import make_inputs

    path = make_inputs.DATA / "yeast_x2_t30_c64.zarr"
    if not (path / "zarr.json").exists():
        import dask_tracking as dt
        from dask_tracking.io.zarr_layout import write_tracking_zarr

        src = make_inputs.make(2, 30, layouts=("zarr",))["zarr"]
        write_tracking_zarr(dt.open_dataset(src).rechunk(CHUNKS), path, overwrite=True)
    return path


def same_output(a: Path, b: Path) -> bool:
    import numpy as np
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    return all(np.array_equal(ga[k][...], gb[k][...]) for k in ("labels_reassigned", "branches_reassigned"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 30])
    p.add_argument("--windows", nargs="+", default=["one", "auto", "8"],
                   help="'one' (one graph), 'auto' (run's default) or frames per window")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--result", default=str(RESULTS / "frames_memory.json"))
    a = p.parse_args(argv)
    data = data_path()
    OUT.mkdir(parents=True, exist_ok=True)
    inner = OUT / "frames_memory_inner.py"
    inner.write_text(INNER)
    cmd_line = "python benchmarks/bench_frames_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    points = []
    for n in a.frames:
        for w in a.windows:
            out = OUT / f"frames_memory_t{n}_{w}.zarr"
            js = OUT / f"frames_memory_t{n}_{w}.json"
            js.unlink(missing_ok=True)
            m = run_measured([sys.executable, str(inner), str(data), str(out), str(n), w, str(js)],
                             timeout=a.timeout, inner_json=js)
            ok = m.rc == 0 and not m.timed_out and bool(m.inner)
            pt = {"frames": n, "window": w, "ok": ok, "run_s": m.inner.get("run_s"), "wall_s": m.wall_s,
                  "peak_rss_mb": round(m.peak_rss / 2**20, 1), "blocks": m.inner.get("blocks"),
                  "shape": m.inner.get("shape"), "tail": "" if ok else m.tail[-2000:]}
            if ok and w != "one" and "one" in a.windows:
                pt["same_as_one_graph"] = same_output(out, OUT / f"frames_memory_t{n}_one.zarr")
            points.append(pt)
            print(f"frames={n} window={w}: ok={ok} run={pt['run_s'] and round(pt['run_s'], 1)} s "
                  f"peak={pt['peak_rss_mb']} MB same={pt.get('same_as_one_graph')}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(a.result).write_text(json.dumps({"command": cmd_line, "data": str(data), "chunks": CHUNKS,
                                          "scheduler": "threads (2)", "machine": machine(),
                                          "points": points}, indent=1))
    return 0 if all(p["ok"] and p.get("same_as_one_graph", True) for p in points) else 1


if __name__ == "__main__":
    raise SystemExit(main())
