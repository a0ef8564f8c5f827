"""The search floor of compat mode: the cKDTree work Nellie's answer itself requires.

One command::

    python benchmarks/bench_search_floor.py --tiles 8 --frames 8

``compat="nellie"`` reproduces Nellie 1.0.4 bit for bit, and part of Nellie's answer is
the order in which SciPy's ``cKDTree`` returns equally distant neighbours: the flow
interpolation sums its neighbours in the order of ``tree.query(points, k=K)`` with the
batch-wide neighbour maximum ``K`` (found by a ball query), and the nearest labelled voxel
is the one ``cKDTree(all labelled voxels of the frame).query(k=1)`` picks. None of these
calls can be replaced by a cheaper search without changing the output bits (see
``docs/performance.md``). This script times exactly those calls, and nothing else, on the
benchmark inputs:

* reassignment, per pair (t, t+1): the frame trees of t and t+1 (each built once), the
  ball counts and the ``k=K`` queries of frame t's labelled voxels (forward) and of frame
  t+1's (backward), and the ``k=1`` nearest-voxel queries of the forward and backward
  predictions;
* tracks of all labels from frame 0: per step, the ball counts and the ``k=K`` query of
  the tracked points.

The inputs of each call (voxel lists, anchors, predictions) are prepared first, untimed,
with dask_tracking's own compat kernel. The calls then run on a pool of ``--threads``
threads (cKDTree releases the GIL), like the threaded scheduler of the side-by-side
benchmark. The result is a lower bound on each compat stage's time on this machine, to set
against the read floor (``bench_side_by_side.py``) and the 3x target.

Writes ``benchmarks/results/search_floor_x{n}_t{T}.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scaling import data_for  # noqa: E402
from bench_side_by_side import OUT, RESULTS, machine  # noqa: E402


def _flow_rows(n: int, frames: int, data: Path) -> np.ndarray:
    """Compat flow rows (M, 2d+2) of the side-by-side run, else computed here."""
    import zarr

    import dask_tracking as dt

    out = OUT / f"{data.stem}_nellie_w0.zarr"
    try:
        g = zarr.open_group(str(out), mode="r")
        rows = np.asarray(g["flow"][...], dtype=np.float64)
        if len(rows) and rows[:, 0].max() >= frames - 2:
            return rows[rows[:, 0] < frames - 1]
    except Exception:  # no earlier run: compute it
        pass
    ds = dt.open_dataset(str(data)).isel(t=slice(0, frames))
    return np.asarray(dt.estimate_flow(ds, compat="nellie").to_numpy(scheduler="threads"))


def _timed(fn):
    def run():
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        return time.thread_time() - c0, time.perf_counter() - w0
    return run


def _run(jobs: list, threads: int) -> dict:
    w0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        res = list(pool.map(lambda j: j(), jobs))
    return {"calls": len(jobs), "cpu_s": round(sum(r[0] for r in res), 3),
            "wall_s": round(time.perf_counter() - w0, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--result", default=None, help="JSON path (default: results/search_floor_x{n}_t{T}.json)")
    a = p.parse_args(argv)

    from scipy.spatial import cKDTree

    import dask_tracking as dt
    from dask_tracking.config import gate_radius_um
    from dask_tracking.interpolate.kernel import frame_anchors, interpolate_points, neighbour_counts
    from dask_tracking.reassign.candidates import scaled

    data = data_for(a.tiles, a.frames)
    ds = dt.open_dataset(str(data)).isel(t=slice(0, a.frames))
    T, nd = ds.labels.shape[0], ds.labels.ndim - 1
    sp = np.asarray(ds.scale.spatial, dtype=np.float64)
    r = gate_radius_um(0.5, ds.scale.t)
    rows = _flow_rows(a.tiles, a.frames, data)
    print(f"x{a.tiles}: {T} frames of {ds.labels.shape[1:]}, {len(rows)} flow rows, r = {r:.3f} um", flush=True)

    # --- untimed preparation: voxel lists, anchors, predictions (dask_tracking's compat kernel)
    vox, seeds = [], None
    for t in range(T):
        lab = np.asarray(ds.labels[t].compute())
        br = np.asarray(ds.branches[t].compute())
        vox.append(np.argwhere((lab > 0) | (br > 0)).astype(np.float64))
        if t == 0:
            seeds = np.argwhere(lab > 0).astype(np.float64)
        del lab, br
    fw = [frame_anchors(rows[rows[:, 0] == t], nd, True) for t in range(T - 1)]
    bw = [frame_anchors(rows[rows[:, 0] == t], nd, False) for t in range(T - 1)]
    jobs_re, jobs_tr = [], []
    trees: dict = {}

    def tree_job(t):
        def build():
            trees[t] = cKDTree(scaled(vox[t], sp))
        return _timed(build)

    for t in range(T):
        jobs_re.append(tree_job(t))
    nn_inputs = []
    for t in range(T - 1):
        for anchors, pts, back in ((fw[t], vox[t], False), (bw[t], vox[t + 1], True)):
            if len(anchors) == 0 or len(pts) == 0:
                continue
            k = neighbour_counts(anchors, pts, sp, r)
            K = int(k.max())
            tree, q = anchors.tree(sp), pts * sp
            jobs_re.append(_timed(lambda tree=tree, q=q: tree.query_ball_point(q, r, return_length=True)))
            if K > 0:
                jobs_re.append(_timed(lambda tree=tree, q=q, K=K: tree.query(q, k=K)))
            v = np.asarray(interpolate_points(anchors, pts, sp, r, compat="nellie"))
            ok = ~np.isnan(v).any(axis=1)
            pred = pts[ok] - v[ok] if back else pts[ok] + v[ok]
            nn_inputs.append((t if back else t + 1, scaled(pred, sp)))
    # the nearest-voxel queries need the frame trees: run them after the builds, as a second batch
    pos = seeds.copy()
    for t in range(T - 1):
        live = pos[~np.isnan(pos[:, 0])]
        if len(fw[t]) == 0 or len(live) == 0:
            break
        k = neighbour_counts(fw[t], live, sp, r)
        K = int(k.max())
        tree, q = fw[t].tree(sp), live * sp
        jobs_tr.append(_timed(lambda tree=tree, q=q: tree.query_ball_point(q, r, return_length=True)))
        if K > 0:
            jobs_tr.append(_timed(lambda tree=tree, q=q, K=K: tree.query(q, k=K)))
        v = np.asarray(interpolate_points(fw[t], pos, sp, r, compat="nellie"))
        pos = pos + v  # rows without a vector become NaN and stay so

    print("prepared; timing the searches", flush=True)
    re1 = _run(jobs_re, a.threads)
    re2 = _run([_timed(lambda t=t, q=q: trees[t].query(q, k=1)) for t, q in nn_inputs], a.threads)
    tr = _run(jobs_tr, a.threads)
    reassign = {"calls": re1["calls"] + re2["calls"], "cpu_s": round(re1["cpu_s"] + re2["cpu_s"], 3),
                "wall_s": round(re1["wall_s"] + re2["wall_s"], 3)}
    result = {
        "size": f"x{a.tiles}", "tiles": a.tiles, "frames": T, "shape": list(ds.labels.shape),
        "threads": a.threads, "radius_um": r, "flow_rows": int(len(rows)),
        "labelled_voxels_per_frame": [int(len(v)) for v in vox], "seeds": int(len(seeds)),
        "machine": machine(),
        "command": f"python benchmarks/bench_search_floor.py --tiles {a.tiles} --frames {a.frames}"
                   + ("" if a.threads == 2 else f" --threads {a.threads}"),
        "reassign": reassign, "tracks": tr,
    }
    sbs = RESULTS / f"side_by_side_x{a.tiles}_t{a.frames}_w0.json"
    if sbs.exists():
        s = json.loads(sbs.read_text())
        floor = {k: v.get("run_s") for k, v in s.get("read_floor", {}).items()}
        ours = {k: v.get("run_s") for k, v in s.get("compat", {}).items()}
        result["side_by_side"] = {"read_floor_s": floor, "compat_s": ours, "file": sbs.name}
        if all(floor.get(k) is not None for k in ("flow", "reassign", "tracks")):
            read = sum(floor[k] for k in ("flow", "reassign", "tracks"))
            # reading every input once plus the searches, each already on all threads
            lower = read + reassign["wall_s"] + tr["wall_s"]
            result["floor"] = {"read_s": round(read, 3), "target_3x_s": round(3 * read, 3),
                               "compat_lower_bound_s": round(lower, 3),
                               "compat_lower_bound_x_read": round(lower / read, 2)}
    path = Path(a.result) if a.result else RESULTS / f"search_floor_x{a.tiles}_t{T}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("reassign", "tracks")}), flush=True)
    if "floor" in result:
        print(json.dumps(result["floor"]), flush=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
