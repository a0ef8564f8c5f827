"""Accuracy of compat ("nellie") against the default mode plus the accuracy options, on known motion.

Usage::

    python benchmarks/bench_accuracy.py [--frames 20] [--pairs 2] [--shape 10,96,160] [--seed 1]
        [--scenario hard|easy] [--out benchmarks/results/accuracy_hard.json]

Runs, on the same synthetic movie: ``run(compat="nellie")``; ``run(accuracy=False)``
("fixed": Nellie's method with its bugs fixed, no accuracy option); and ``run()``
("default": every accuracy option on: refined one-to-one flow with the affine polish,
object vote, living tracks; see :mod:`dask_tracking.accuracy`), all with ``tracks=True``. Each is scored by
``dask_tracking.evaluate`` and the table is printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import dask

import dask_tracking as dt
from dask_tracking.datasets import synthetic, synthetic_hard
from dask_tracking.evaluate import evaluate


def _row(rep) -> dict:
    return {
        "flow_rows": rep.flow["rows"],
        "epe_median_um": rep.flow["epe_median_um"],
        "epe_p90_um": rep.flow["epe_p90_um"],
        "wrong_object_share": rep.flow["wrong_object_share"],
        "identity_last": rep.last("labels", "identity_accuracy"),
        "coverage_min": min(rep.labels["coverage"]),
        "tracks_alive_last": rep.last("tracks", "alive_share"),
        "track_error_last_um": rep.last("tracks", "position_error_median_um"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="hard", choices=["hard", "easy"])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--shape", default="10,96,160")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-distance-um", type=float, default=1.0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dask.config.set(scheduler="threads", num_workers=2)
    shape = tuple(int(v) for v in a.shape.split(","))
    if a.scenario == "hard":
        kw = dict(n_frames=a.frames, n_pairs=a.pairs, shape=shape, seed=a.seed)
        make = synthetic_hard
    else:
        kw = dict(ndim=len(shape), n_frames=a.frames, shape=shape, seed=a.seed)
        make = synthetic
    ds = make(**kw)
    ds = ds.replace(**{n: v.persist() for n, v in ds.arrays().items()})
    work = Path(tempfile.mkdtemp(prefix="bench_accuracy_"))
    table = {}
    try:
        for name in ("compat", "fixed", "default"):
            t0 = time.perf_counter()
            out = work / f"{name}.zarr"
            if name == "compat":
                dt.run(ds, out, compat="nellie", tracks=True, max_distance_um=a.max_distance_um)
            elif name == "fixed":        # the reference method with its bugs fixed, no accuracy option
                dt.run(ds, out, tracks=True, max_distance_um=a.max_distance_um, accuracy=False)
            else:                        # the default: every accuracy option on
                dt.run(ds, out, tracks=True, max_distance_um=a.max_distance_um)
            rep = evaluate(out, ds)
            row = _row(rep)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            table[name] = row
            print(name, json.dumps(row))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"scenario": a.scenario, "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
              "max_distance_um": a.max_distance_um, "modes": table}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
