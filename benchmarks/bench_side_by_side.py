"""Side by side with Nellie 1.0.4: flow, reassignment and tracks of all labels, per size.

One command (creates the Nellie venv and the inputs when missing)::

    python benchmarks/bench_side_by_side.py --tiles 1 2 4 8 --frames 30 --frames-8 8

For every size (the yeast sample tiled n x n in Y and X, see ``make_inputs.py``) and
every stage, it runs in a fresh process each and measures wall time and the peak
memory of the whole process tree (dask workers included, see ``_measure.py``):

* Nellie 1.0.4 (its own venv, ``device="cpu"``, defaults): ``HuMomentTracking``,
  ``VoxelReassigner``, ``LabelTracks.run(label_num=None, start_frame=0)``;
* dask_tracking with ``compat="nellie"`` and with the default (fixed) mode:
  ``estimate_flow``, ``reassign_labels``, ``write_label_tracks(label=None, start_frame=0)``,
  each writing its output to zarr (tracks: ``tracks`` of the OUT store, written by the tasks);
* the read floor: reading every input chunk of a stage once, on the same scheduler;

then checks parity in the same run: compat flow rows == Nellie's flow rows (same
order), reassigned object and branch labels identical, tracks identical as row sets.
Results: ``benchmarks/results/side_by_side_x{n}_t{T}.json``; ``report.py`` turns them
into the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_inputs  # noqa: E402
import nellie_env  # noqa: E402
from _measure import run_measured  # noqa: E402
from _ours_stage import STAGE_INPUTS, read_tracks_rows, tracks_path  # noqa: E402

RESULTS = HERE / "results"
OUT = HERE / "work" / "out"
STAGES = ("flow", "reassign", "tracks")


def machine() -> dict:
    """Where the numbers were taken."""
    import psutil

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                                capture_output=True).stdout.strip()
    except OSError:
        commit = "?"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "commit": commit, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg_at_start": load}


def _mb(b: int) -> float:
    return round(b / 2**20, 1)


_DISPATCH_PROBE = (
    "from numpy._core._multiarray_umath import __cpu_features__ as F, __cpu_dispatch__ as D\n"
    "print(' '.join(f for f in D if F.get(f) and (f == 'X86_V4' or f.startswith('AVX512'))))")


def nellie_env_vars(cpu_features: str) -> tuple[dict, str]:
    """Environment of the Nellie runs and the ``NPY_DISABLE_CPU_FEATURES`` value used.

    NumPy's AVX-512 (SVML) ``log10``/``power`` differ from the C library in the last bit for
    a few inputs, so Nellie 1.0.4's flow costs depend on the CPU. Nellie's reference outputs
    (``../shared/data``) were made without AVX-512 dispatch, and ``compat="nellie"`` gives those
    bits on any CPU. ``cpu_features="no-avx512"`` (default) runs Nellie with NumPy's AVX-512
    dispatch turned off so that the parity check compares against the bits of the reference;
    ``"native"`` runs it as NumPy chooses on this CPU.
    """
    env = dict(os.environ)
    if cpu_features == "native":
        env.pop("NPY_DISABLE_CPU_FEATURES", None)
        return env, ""
    r = subprocess.run([str(nellie_env.python()), "-c", _DISPATCH_PROBE], capture_output=True, text=True)
    off = r.stdout.strip()
    if off:
        env["NPY_DISABLE_CPU_FEATURES"] = off
    return env, off


def run_nellie(paths: dict, stage: str, timeout: float, cpu_features: str = "no-avx512") -> dict:
    js = OUT / f"nellie_{paths['stem']}_{stage}.json"
    js.unlink(missing_ok=True)
    cmd = [str(nellie_env.python()), str(HERE / "_nellie_stage.py"), "--raw",
           str(paths["nellie_raw"]), "--stage", stage, "--json", str(js)]
    env, off = nellie_env_vars(cpu_features)
    m = run_measured(cmd, timeout=timeout, inner_json=js, env=env)
    d = _summary(m)
    d["npy_disable_cpu_features"] = off
    if off:
        d["cmd"] = f"NPY_DISABLE_CPU_FEATURES='{off}' " + d["cmd"]
    return d


def run_ours(paths: dict, stage: str, compat: str, workers: int, memory_limit: str,
             timeout: float, volumes=None) -> dict:
    tag = f"{paths['zarr'].stem}_{compat}_w{workers}"
    out = OUT / f"{tag}.zarr"
    js = OUT / f"ours_{tag}_{stage}.json"
    js.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "_ours_stage.py"), "--data", str(paths["zarr"]), "--out",
           str(out), "--stage", stage, "--compat", compat, "--workers", str(workers),
           "--memory-limit", memory_limit, "--json", str(js)]
    if volumes:
        cmd += ["--volumes", *volumes]
    m = run_measured(cmd, timeout=timeout, inner_json=js)
    d = _summary(m)
    d["out"] = str(out)
    return d


def _summary(m) -> dict:
    inner = m.inner
    ok = not m.timed_out and bool(inner) and "run_s" in inner
    return {"ok": ok, "timed_out": m.timed_out, "rc": m.rc, "wall_s": round(m.wall_s, 3),
            "cpu_s": round(m.cpu_s, 3),
            "run_s": round(inner.get("run_s", float("nan")), 3) if ok else None,
            "setup_s": round(inner.get("setup_s", 0.0) + inner.get("import_s", 0.0), 3) if ok else None,
            "peak_rss_mb": _mb(m.peak_rss), "peak_anon_mb": _mb(m.peak_anon),
            "processes": m.peak_procs, "cmd": " ".join(m.cmd), "inner": inner,
            "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "tail": "" if ok else m.tail[-3000:]}


# ------------------------------------------------------------------ parity
def _sorted_rows(a: np.ndarray) -> np.ndarray:
    if len(a) == 0:
        return a
    return a[np.lexsort(a.T[::-1])]


def parity_flow(nellie_npy: str, ours_zarr: str) -> dict:
    import zarr

    a = np.load(nellie_npy)
    g = zarr.open_group(ours_zarr, mode="r")
    b = np.asarray(g["flow"][...]) if "flow" in g else np.zeros((0, a.shape[1]))
    same = a.shape == b.shape and np.array_equal(a, b)
    d = {"equal": bool(same), "rows_nellie": int(len(a)), "rows_ours": int(len(b))}
    if not same and a.shape == b.shape:
        d["equal_as_row_sets"] = bool(np.array_equal(_sorted_rows(a), _sorted_rows(b)))
        diff = np.abs(a - b)
        d["rows_differing"] = int((diff > 0).any(axis=1).sum())
        d["max_abs_diff_per_column"] = diff.max(axis=0).tolist()
    return d


def parity_labels(nellie_tif: str, ours_zarr: str, name: str) -> dict:
    import tifffile
    import zarr

    a = tifffile.memmap(nellie_tif, mode="r")
    g = zarr.open_group(ours_zarr, mode="r")
    if name not in g:
        return {"equal": False, "error": f"{name} missing in {ours_zarr}"}
    b = g[name]
    if tuple(a.shape) != tuple(b.shape):
        return {"equal": False, "shape_nellie": list(a.shape), "shape_ours": list(b.shape)}
    n_diff = 0
    frames_diff = []
    for t in range(a.shape[0]):
        k = int(np.count_nonzero(np.asarray(a[t]) != np.asarray(b[t])))
        if k:
            n_diff += k
            frames_diff.append(t)
    return {"equal": n_diff == 0, "voxels_differing": n_diff, "frames_differing": frames_diff[:20]}


def parity_tracks(nellie_npy: str, ours_out: str) -> dict:
    """Nellie's rows against ours (``tracks`` of our OUT.zarr, or an older run's .npy), as row sets."""
    a = np.load(nellie_npy)
    b = read_tracks_rows(Path(ours_out))
    if b is None:
        return {"equal": False, "error": f"no tracks in {ours_out} (nor {tracks_path(Path(ours_out))})"}
    d = {"rows_nellie": int(len(a)), "rows_ours": int(len(b))}
    if a.shape != b.shape:
        d["equal"] = False
        return d
    sa, sb = _sorted_rows(a), _sorted_rows(b)
    d["equal"] = bool(np.array_equal(sa, sb))
    if not d["equal"]:
        d["rows_differing_after_sort"] = int((sa != sb).any(axis=1).sum())
    return d


def parity(paths: dict, nellie: dict, ours: dict) -> dict:
    res = {}
    nf = nellie.get("flow", {})
    if nf.get("ok") and ours.get("flow", {}).get("ok"):
        res["flow"] = parity_flow(nf["inner"]["outputs"]["flow"], ours["flow"]["out"])
    nr = nellie.get("reassign", {})
    if nr.get("ok") and ours.get("reassign", {}).get("ok"):
        o = nr["inner"]["outputs"]
        res["labels_reassigned"] = parity_labels(o["labels_reassigned"], ours["reassign"]["out"],
                                                 "labels_reassigned")
        res["branches_reassigned"] = parity_labels(o["branches_reassigned"], ours["reassign"]["out"],
                                                   "branches_reassigned")
    nt = nellie.get("tracks", {})
    if nt.get("ok") and ours.get("tracks", {}).get("ok"):
        res["tracks"] = parity_tracks(nt["inner"]["outputs"]["tracks"], ours["tracks"]["out"])
    res["all_equal"] = bool(res) and all(v.get("equal") for v in res.values() if isinstance(v, dict)) \
        and len([k for k in res if k != "all_equal"]) == 4
    return res


# ------------------------------------------------------------------ driver
def earlier_nellie(path: Path) -> tuple[dict, dict] | None:
    """Nellie's figures of an earlier result file of the same size, and where they come from.

    Used when a size is re-run without Nellie (``--modes compat``): Nellie's stages at
    8x8 tiles take more than 20 minutes, so its earlier run is kept, marked as such.
    """
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    if not old.get("nellie"):
        return None
    src = old.get("nellie_earlier") or {
        "commit": old.get("machine", {}).get("commit"), "date_utc": old.get("machine", {}).get("date_utc"),
        "loadavg_at_start": old.get("machine", {}).get("loadavg_at_start"), "command": old.get("command")}
    return old["nellie"], src


def bench_size(n: int, frames: int, *, workers: int, memory_limit: str, timeout: float,
               modes=("nellie", "compat", "default"), chunks=(17, 256, 256),
               nellie_cpu_features: str = "no-avx512", keep_nellie: bool = True) -> dict:
    paths = make_inputs.make(n, frames, chunks=chunks)
    suffix = "" if nellie_cpu_features == "no-avx512" else f"_{nellie_cpu_features}"
    res_path = RESULTS / f"side_by_side_x{n}_t{frames}_w{workers}{suffix}.json"
    earlier = earlier_nellie(res_path) if ("nellie" not in modes and keep_nellie) else None
    OUT.mkdir(parents=True, exist_ok=True)
    z = paths["zarr"]
    import zarr

    shape = list(zarr.open_group(str(z), mode="r")["labels"].shape)
    result = {"size": f"x{n}", "tiles": n, "frames": frames, "shape": shape,
              "voxels": int(np.prod(shape)), "voxels_per_frame": int(np.prod(shape[1:])),
              "workers": workers, "memory_limit": memory_limit, "machine": machine(),
              "nellie_cpu_features": nellie_cpu_features,
              "command": f"python benchmarks/bench_side_by_side.py --tiles {n} --frames {frames}"
                         f" --workers {workers}"
                         + ("" if set(modes) == {"nellie", "compat", "default"} else
                            " --modes " + " ".join(modes))
                         + ("" if nellie_cpu_features == "no-avx512" else
                            f" --nellie-cpu-features {nellie_cpu_features}")}
    for tag in ("compat", "default"):
        shutil.rmtree(OUT / f"{z.stem}_{'nellie' if tag == 'compat' else 'default'}_w{workers}.zarr",
                      ignore_errors=True)
    if earlier is not None:
        result["nellie"], result["nellie_earlier"] = earlier
        print(f"  x{n} nellie  kept from the earlier run of {earlier[1].get('date_utc')} "
              f"(commit {earlier[1].get('commit')})", flush=True)
    if "nellie" in modes:
        nellie_env.ensure()
        result["nellie"] = {}
        for s in STAGES:
            r = run_nellie(paths, s, timeout, nellie_cpu_features)
            result["nellie"][s] = r
            print(f"  x{n} nellie  {s:9s} {_fmt(r)}", flush=True)
            if not r["ok"] and s == "flow":  # the other stages read the flow
                break
    for tag, compat in (("compat", "nellie"), ("default", "default")):
        if tag not in modes:
            continue
        result[tag] = {}
        for s in STAGES:
            r = run_ours(paths, s, compat, workers, memory_limit, timeout)
            result[tag][s] = r
            print(f"  x{n} {tag:7s} {s:9s} {_fmt(r)}", flush=True)
            if not r["ok"] and s == "flow":
                break
    result["read_floor"] = {}
    for s in STAGES:
        r = run_ours(paths, "read", "default", workers, memory_limit, timeout,
                     volumes=STAGE_INPUTS[s])
        result["read_floor"][s] = r
        print(f"  x{n} read    {s:9s} {_fmt(r)}", flush=True)
    if "nellie" in result and "compat" in result:
        # with an earlier Nellie run: against its outputs still on disk (the same inputs)
        result["parity"] = parity(paths, result["nellie"], result["compat"])
        print(f"  x{n} parity  {json.dumps(result['parity'])[:400]}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = res_path
    out.write_text(json.dumps(result, indent=1))
    return result


def _fmt(r: dict) -> str:
    if r["timed_out"]:
        return f"TIMEOUT after {r['wall_s']:.0f} s"
    if not r["ok"]:
        return f"FAILED rc={r['rc']}: {r['tail'][-300:]!r}"
    return (f"run {r['run_s']:8.2f} s  wall {r['wall_s']:8.2f} s  cpu {r.get('cpu_s', float('nan')):8.2f} s  "
            f"peak rss {r['peak_rss_mb']:8.1f} MB")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--frames-8", type=int, default=None, help="frames for the 8x8 size only")
    p.add_argument("--workers", type=int, default=2, help="dask workers (0: threaded scheduler)")
    p.add_argument("--memory-limit", default="4GB", help="per dask worker")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per stage run")
    p.add_argument("--modes", nargs="+", default=["nellie", "compat", "default"],
                   choices=["nellie", "compat", "default"])
    p.add_argument("--nellie-cpu-features", default="no-avx512", choices=["no-avx512", "native"],
                   help="NumPy dispatch of the Nellie runs (see nellie_env_vars)")
    p.add_argument("--no-keep-nellie", action="store_true",
                   help="without 'nellie' in --modes, drop Nellie's figures of the earlier result file "
                        "(default: keep them, marked as an earlier run)")
    a = p.parse_args(argv)
    for n in a.tiles:
        frames = a.frames_8 if (n == 8 and a.frames_8) else a.frames
        print(f"size x{n}, {frames} frames", flush=True)
        bench_size(n, frames, workers=a.workers, memory_limit=a.memory_limit, timeout=a.timeout,
                   modes=tuple(a.modes), nellie_cpu_features=a.nellie_cpu_features,
                   keep_nellie=not a.no_keep_nellie)
    return 0


if __name__ == "__main__":
    sys.exit(main())
