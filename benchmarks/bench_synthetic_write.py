"""Write a synthetic movie larger than memory to zarr and measure time and peak memory.

The movie is rendered lazily (one dask task per frame) and stored frame by frame
with :func:`dask_tracking.datasets.write_synthetic_zarr`; nothing holds more than
a few frames. Peak memory is the largest resident set size of this process and
all its children, sampled every 50 ms with psutil, cross-checked with
``resource.getrusage`` (the kernel's exact peak of this process).

Usage::

    python benchmarks/bench_synthetic_write.py --out /tmp/synthetic_32gb.zarr --target-gb 32

writes ``benchmarks/results/synthetic_write.json`` and deletes the store unless
``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
BYTES_PER_VOXEL = 2 + 4 + 4 + 1 + 4 + 4      # raw u16, preprocessed f32, distance f32, markers u8,
#                                              labels i32, branches u32


class PeakMemory:
    """Samples the RSS of this process tree in a background thread."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._proc = psutil.Process(os.getpid())

    def _sample(self) -> int:
        total = 0
        for p in [self._proc] + self._proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="zarr store to write (deleted afterwards unless --keep)")
    ap.add_argument("--target-gb", type=float, default=32.0,
                    help="minimum uncompressed size of the six volumes, GB (1e9 bytes)")
    ap.add_argument("--shape", default="32,512,512", help="spatial shape Z,Y,X (or Y,X)")
    ap.add_argument("--n-objects", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="threads of the local scheduler")
    ap.add_argument("--json", default=str(HERE / "results" / "synthetic_write.json"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    from dask_tracking import __version__
    from dask_tracking.datasets import synthetic, write_synthetic_zarr
    from dask_tracking.io.open import open_dataset

    shape = tuple(int(v) for v in args.shape.split(","))
    frame_bytes = math.prod(shape) * BYTES_PER_VOXEL
    n_frames = max(2, math.ceil(args.target_gb * 1e9 / frame_bytes))
    out = Path(args.out)
    kwargs = {"n_objects": args.n_objects, "seed": 0}

    t0 = time.perf_counter()
    with PeakMemory() as mem:
        ds = write_synthetic_zarr(out, n_frames, shape, overwrite=args.overwrite,
                                  num_workers=args.workers, **kwargs)
    wall = time.perf_counter() - t0
    ru_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB
    nbytes = {n: int(a.nbytes) for n, a in ds.arrays().items()}
    total = sum(nbytes.values())
    on_disk = _disk_bytes(out)

    # check: first and last frame equal a fresh render
    back = open_dataset(out)
    ref = synthetic(len(shape), n_frames, shape=shape, **kwargs)
    verified = all(
        bool((getattr(back, n)[t] == getattr(ref, n)[t]).all().compute())
        for n in ("raw", "labels", "markers") for t in (0, n_frames - 1)
    )
    result = {
        "what": "write_synthetic_zarr: a synthetic 3D+t movie written frame by frame to zarr v3",
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:])),
        "n_frames": n_frames,
        "spatial_shape": list(shape),
        "n_objects": args.n_objects,
        "workers": args.workers,
        "uncompressed_bytes": total,
        "uncompressed_gb": round(total / 1e9, 3),
        "uncompressed_bytes_per_volume": nbytes,
        "on_disk_bytes": on_disk,
        "on_disk_gb": round(on_disk / 1e9, 3),
        "wall_s": round(wall, 1),
        "throughput_gb_per_s": round(total / 1e9 / wall, 3),
        "frames_per_s": round(n_frames / wall, 3),
        "peak_rss_tree_bytes": mem.peak,
        "peak_rss_tree_gb": round(mem.peak / 1e9, 3),
        "peak_rss_kernel_bytes": ru_peak,
        "peak_rss_kernel_gb": round(ru_peak / 1e9, 3),
        "under_2gb": max(mem.peak, ru_peak) < 2e9,
        "verified_frames": verified,
        "machine": {"cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
                    "python": platform.python_version(), "platform": platform.platform()},
        "dask_tracking": __version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not args.keep:
        shutil.rmtree(out)
        result["deleted"] = True
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
