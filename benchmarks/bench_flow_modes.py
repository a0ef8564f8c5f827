"""Time the flow stage's modes on one dataset (inputs persisted in memory, threaded scheduler).

Usage::

    python benchmarks/bench_flow_modes.py [--data ../shared/data/nellie_yeast.zarr] [--threads 2] [--repeat 2]

Modes: ``compat="nellie"``; the matching alone (``refine=False, one_to_one=False``); the
default without the affine polish (``refine_flow(..., affine=False)`` then ``one_to_one_flow``);
and the default (matching, refinement with the polish, one-to-one). Prints seconds and rows.
"""

from __future__ import annotations

import argparse
import json
import time

import dask

import dask_tracking as dt
from dask_tracking.flow.assignment import one_to_one_flow
from dask_tracking.flow.refine import refine_flow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/nellie_yeast.zarr")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    dask.config.set(scheduler="threads", num_workers=a.threads)
    ds = dt.open_dataset(a.data)
    ds = ds.replace(**{n: v.persist() for n, v in ds.arrays().items()})
    out: dict = {}
    for _ in range(a.repeat):
        for name in ("compat", "matching only", "default without polish", "default"):
            t0 = time.perf_counter()
            if name == "compat":
                f = dt.estimate_flow(ds, compat="nellie")
            elif name == "matching only":
                f = dt.estimate_flow(ds, refine=False, one_to_one=False)
            elif name == "default without polish":
                f = dt.estimate_flow(ds, refine=False, one_to_one=False)
                f = one_to_one_flow(refine_flow(f, ds.preprocessed, affine=False,
                                                max_length_um=f.attrs["gate_radius_um"]))
            else:
                f = dt.estimate_flow(ds)
            rows = f.to_numpy()
            s = time.perf_counter() - t0
            out.setdefault(name, {"rows": len(rows), "seconds": []})["seconds"].append(round(s, 2))
            print(f"{name}: {s:.2f} s, {len(rows)} rows", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
