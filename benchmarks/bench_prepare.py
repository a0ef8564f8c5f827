"""Benchmark of the preparation stages (Filter, Label, Network, Markers): ours vs Nellie 1.0.4.

Usage (from the repository root)::

    python benchmarks/bench_prepare.py                       # yeast x1, 30 frames, parity + timing
    python benchmarks/bench_prepare.py --tiled-frames 4      # also the 4x4 tiled yeast, 4 frames
    python benchmarks/bench_prepare.py --chunks 17,64,64     # our run with (17, 64, 64) spatial chunks

What it does:

1. ``dask_tracking.prepare(raw, scale, compat="nellie")`` on the ``raw`` array of
   ``../shared/data/nellie_yeast.zarr``, written to a zarr store (inputs + extras) on a
   LocalCluster (``--workers`` processes x 1 thread, ``--memory-limit`` each); wall time.
2. Parity on every frame: equal voxels of ``preprocessed``, ``labels``, ``branches``,
   ``distance``, ``markers`` and ``reference/prepare/{skel,pixel_class,border}``.
3. If ``benchmarks/work/nellie-venv`` exists (``python benchmarks/nellie_env.py``): Nellie's
   Filter, Label, Network and Markers (device="cpu", defaults as in ``nellie.run``) on the
   same raw movie written as an OME-TIFF, each stage timed in the venv's interpreter.
4. With ``--tiled-frames N``: the first N frames tiled 4 x 4 in Y/X (17 x 768 x 1116), both sides.

Results are printed and written as JSON to ``benchmarks/work/prepare/bench_prepare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work" / "prepare"
VENV_PY = HERE / "work" / "nellie-venv" / "bin" / "python"
YEAST = Path(os.environ.get("DASK_TRACKING_SHARED_DATA", ROOT.parent / "shared" / "data")) / "nellie_yeast.zarr"
OUTPUTS = ("preprocessed", "labels", "branches", "distance", "markers")
EXTRAS = (("skeleton", "skel"), ("pixel_class", "pixel_class"), ("border", "border"))


# ------------------------------------------------------------------ Nellie side (venv)
def nellie_stages(raw_tif: str, out_json: str) -> int:
    """Run Nellie 1.0.4's four preparation stages on ``raw_tif`` (called with the venv python)."""
    t0 = time.perf_counter()
    from nellie.im_info.verifier import FileInfo, ImInfo
    from nellie.segmentation.filtering import Filter
    from nellie.segmentation.labelling import Label
    from nellie.segmentation.mocap_marking import Markers
    from nellie.segmentation.networking import Network

    t_import = time.perf_counter() - t0
    out_dir = os.path.join(os.path.dirname(os.path.abspath(raw_tif)), "nellie_output")
    fi = FileInfo(raw_tif, output_dir=out_dir, output_naming="stable")
    fi.find_metadata()
    fi.load_metadata()
    im_info = ImInfo(fi)
    times, cpu = {}, {}
    for name, make in (("filter", lambda: Filter(im_info, remove_edges=False, device="cpu", low_memory=False)),
                       ("label", lambda: Label(im_info, device="cpu", low_memory=False)),
                       ("network", lambda: Network(im_info, device="cpu")),
                       ("markers", lambda: Markers(im_info, device="cpu"))):
        t0, c0 = time.perf_counter(), time.process_time()
        make().run()
        times[name] = time.perf_counter() - t0
        cpu[name] = time.process_time() - c0
    with open(out_json, "w") as f:
        json.dump({"import_s": t_import, "stages_s": times, "total_s": sum(times.values()),
                   "stages_cpu_s": cpu, "total_cpu_s": sum(cpu.values()),
                   "shape": list(im_info.shape)}, f)
    return 0


def run_nellie(raw, scale, folder: Path) -> dict | None:
    if not VENV_PY.exists():
        print("Nellie venv not found (python benchmarks/nellie_env.py): Nellie side skipped")
        return None
    import tifffile

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tif = folder / f"{folder.name}.ome.tif"
    tifffile.imwrite(tif, raw, metadata={"axes": "TZYX", "PhysicalSizeX": scale["X"], "PhysicalSizeY": scale["Y"],
                                         "PhysicalSizeZ": scale["Z"], "TimeIncrement": scale["T"]})
    js = folder / "nellie_times.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    subprocess.run([str(VENV_PY), str(Path(__file__).resolve()), "--nellie-stages", str(tif), str(js)],
                   check=True, env=env, cwd=str(folder))
    wall = time.perf_counter() - t0
    out = json.loads(js.read_text())
    out["process_wall_s"] = wall
    return out


# ----------------------------------------------------------------------- our side
def run_ours(raw, scale, store: Path, *, chunks, workers: int, memory_limit: str) -> dict:
    """Our prepare + zarr write on a LocalCluster: wall time, and CPU seconds of workers + client."""
    import dask.array as da
    from distributed import Client, LocalCluster

    import dask_tracking as dt
    from dask_tracking.io.zarr_layout import write_tracking_zarr
    from dask_tracking.prepare.command import _store_extras

    if store.exists():
        shutil.rmtree(store)
    arr = da.from_array(raw, chunks=(1,) + tuple(chunks or raw.shape[1:]))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("dask_tracking.prepare.frangi"))  # warm imports, not timed

        def cpu_s():
            import psutil

            c = psutil.Process().cpu_times()
            return c.user + c.system

        cpu0 = sum(client.run(cpu_s).values()) + cpu_s()
        t0 = time.perf_counter()
        pm = dt.prepare(arr, scale, compat="nellie", return_extras=True)
        t_graph = time.perf_counter() - t0
        lazy = [write_tracking_zarr(pm.dataset, store, compute=False), _store_extras(pm, str(store))]
        t0 = time.perf_counter()
        client.compute(lazy, sync=True)
        wall = time.perf_counter() - t0
        cpu = sum(client.run(cpu_s).values()) + cpu_s() - cpu0
    return {"graph_s": t_graph, "compute_and_write_s": wall, "cpu_s": cpu, "workers": workers, "memory_limit": memory_limit,
            "chunks": list(arr.chunksize[1:])}


def _synthetic_frame(block_id=None, shape=(8, 128, 128)):
    """One raw frame of bright moving tubes on noise, generated inside the task (seeded by t)."""
    import numpy as np

    t = block_id[0]
    rng = np.random.default_rng(1000 + t)
    zz, yy, xx = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float32)
    img = rng.normal(100, 4, size=shape).astype(np.float32)
    for k in range(4):
        y0 = 20 + 28 * k + 3 * np.sin(0.1 * t + k)
        d2 = ((zz - shape[0] / 2) / 0.8) ** 2 + ((yy - y0) / 2.5) ** 2
        img += 180 * np.exp(-0.5 * d2) * (np.abs(xx - shape[2] / 2) < shape[2] / 3)
    return np.clip(img, 0, 65535).astype(np.uint16)[None]


def larger_than_memory(n_frames: int, workers: int, memory_limit: str, store: Path,
                       shape: tuple[int, int, int] = (8, 128, 128)) -> dict:
    """Prepare a lazily generated synthetic movie larger than all workers' memory together."""
    import threading

    import dask.array as da
    import numpy as np
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    import dask_tracking as dt
    from dask_tracking.io.zarr_layout import write_tracking_zarr

    shape = tuple(int(v) for v in shape)
    raw = da.map_blocks(_synthetic_frame, shape=shape, dtype=np.uint16,
                        chunks=((1,) * n_frames,) + tuple((s,) for s in shape), meta=np.empty((0, 0, 0, 0), np.uint16))
    if store.exists():
        shutil.rmtree(store)
    peak = {"rss": 0}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        stop = threading.Event()

        def rss():
            import psutil

            return psutil.Process().memory_info().rss

        def sample():
            while not stop.is_set():
                try:
                    for v in client.run(rss).values():
                        peak["rss"] = max(peak["rss"], int(v))
                except Exception:
                    pass
                stop.wait(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        before = set(client.run(rss))
        ds = dt.prepare(raw, {"T": 1.0, "Z": 0.25, "Y": 0.0655, "X": 0.0655})
        t0 = time.perf_counter()
        client.compute(write_tracking_zarr(ds, store, compute=False), sync=True)
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        after = set(client.run(rss))
    raw_bytes = raw.nbytes
    total_bytes = sum(a.nbytes for a in ds.arrays().values())
    return {"frames": n_frames, "frame_shape": list(shape), "raw_bytes": int(raw_bytes),
            "all_six_arrays_bytes": int(total_bytes), "workers": workers, "memory_limit": memory_limit,
            "workers_memory_total_bytes": int(workers * parse_bytes(memory_limit)),
            "peak_worker_rss_bytes": peak["rss"], "workers_restarted": before != after, "wall_s": wall}


def parity(store: Path, frames: slice) -> dict:
    import numpy as np
    import zarr

    ours = zarr.open_group(str(store), mode="r")
    ref = zarr.open_group(str(YEAST), mode="r")
    refp = zarr.open_group(str(YEAST / "reference" / "prepare"), mode="r")
    out = {}
    pairs = [(n, ours[n], ref[n]) for n in OUTPUTS] + [(n, ours["prepare"][n], refp[r]) for n, r in EXTRAS]
    for name, a, b in pairs:
        eq, n, frames_exact = 0, 0, 0
        for t in range(*frames.indices(b.shape[0])):
            x, y = a[t], b[t]
            e = int(np.count_nonzero(x == y))
            eq += e
            n += x.size
            frames_exact += int(e == x.size)
        out[name] = {"equal_fraction": eq / n, "frames_exact": frames_exact}
    return out


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--nellie-stages":
        return nellie_stages(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=30, help="frames of the yeast sample (default all 30)")
    p.add_argument("--chunks", default=None, help="our spatial chunks, e.g. 17,64,64 (default whole frames)")
    p.add_argument("--tiled-frames", type=int, default=0, help="also run the 4x4-tiled sample on N frames")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GiB")
    p.add_argument("--no-nellie", action="store_true", help="skip Nellie's side")
    p.add_argument("--no-yeast", action="store_true", help="skip the yeast runs")
    p.add_argument("--larger-than-memory", type=int, default=0, metavar="FRAMES",
                   help="prepare a synthetic movie of FRAMES x --ltm-shape under --ltm-memory-limit workers")
    p.add_argument("--ltm-shape", default="8,128,128", help="Z,Y,X of each frame of that movie")
    p.add_argument("--ltm-memory-limit", default="300MiB")
    a = p.parse_args(argv)
    import numpy as np
    import zarr

    g = zarr.open_group(str(YEAST), mode="r")
    scale = dict(g.attrs["scale"])
    raw = g["raw"][: a.frames]
    chunks = tuple(int(c) for c in a.chunks.split(",")) if a.chunks else None
    WORK.mkdir(parents=True, exist_ok=True)
    report = {"machine_cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}

    if a.larger_than_memory:
        report["larger_than_memory"] = larger_than_memory(a.larger_than_memory, a.workers, a.ltm_memory_limit,
                                                          WORK / "ltm.zarr",
                                                          tuple(int(v) for v in a.ltm_shape.split(",")))
        print(json.dumps(report["larger_than_memory"], indent=1))
    if a.no_yeast:
        (WORK / "bench_prepare_ltm.json").write_text(json.dumps(report, indent=1))
        return 0
    ours = run_ours(raw, scale, WORK / "yeast_x1.zarr", chunks=chunks, workers=a.workers,
                    memory_limit=a.memory_limit)
    ours["parity"] = parity(WORK / "yeast_x1.zarr", slice(0, a.frames))
    report["yeast_x1"] = {"frames": a.frames, "ours": ours}
    print(json.dumps(report["yeast_x1"], indent=1))
    if not a.no_nellie:
        nel = run_nellie(raw, scale, WORK / "nellie_x1")
        report["yeast_x1"]["nellie"] = nel
        if nel:
            report["yeast_x1"]["ratio_nellie_over_ours"] = nel["total_s"] / ours["compute_and_write_s"]
            if "total_cpu_s" in nel:
                report["yeast_x1"]["cpu_ratio_nellie_over_ours"] = nel["total_cpu_s"] / ours["cpu_s"]
            print(json.dumps(nel, indent=1))
    if a.tiled_frames:
        tiled = np.tile(g["raw"][: a.tiled_frames], (1, 1, 4, 4))
        ours4 = run_ours(tiled, scale, WORK / "yeast_x4.zarr", chunks=chunks, workers=a.workers,
                         memory_limit=a.memory_limit)
        report["yeast_x4"] = {"frames": a.tiled_frames, "shape": list(tiled.shape), "ours": ours4}
        if not a.no_nellie:
            nel4 = run_nellie(tiled, scale, WORK / "nellie_x4")
            report["yeast_x4"]["nellie"] = nel4
            if nel4:
                report["yeast_x4"]["ratio_nellie_over_ours"] = nel4["total_s"] / ours4["compute_and_write_s"]
                if "total_cpu_s" in nel4:
                    report["yeast_x4"]["cpu_ratio_nellie_over_ours"] = nel4["total_cpu_s"] / ours4["cpu_s"]
        print(json.dumps(report["yeast_x4"], indent=1))
    report["loadavg_end"] = os.getloadavg()
    (WORK / "bench_prepare.json").write_text(json.dumps(report, indent=1))
    print(f"written {WORK / 'bench_prepare.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
