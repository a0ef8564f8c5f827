"""Run one stage of dask_tracking (or the read floor) in a fresh process, for the benchmarks.

Called by the benchmark drivers through :mod:`benchmarks._measure` so that the peak memory
of the whole process tree (this process plus its dask workers) is measured::

    python benchmarks/_ours_stage.py --data DATA.zarr --out OUT.zarr --stage flow \\
        --compat nellie --workers 2 --json OUT.json

Stages:

``flow``       ``estimate_flow(ds, compat=...)`` written with ``FlowTable.to_zarr`` (``flow``)
``reassign``   ``reassign_labels(ds, flow, compat=...)``; ``labels_reassigned`` and
               ``branches_reassigned`` stored to OUT.zarr in one ``da.store``
``tracks``     ``write_label_tracks(ds, flow, OUT, label=None, start_frame=0, compat=...)``: the
               tasks write rows ``track_id, t, z, y, x`` to ``tracks`` of OUT.zarr (and
               ``tracks_properties/*``), the layout of ``dask_tracking.run(tracks=True)``
``read``       the floor: read (and decompress) every chunk of the volumes in ``--volumes`` once
``all``        flow, reassign and tracks in one process and one cluster

``--workers 0`` uses dask's threaded scheduler (2 threads) instead of a LocalCluster.
The JSON holds ``setup_s`` (imports + cluster start), ``run_s`` (graph building, compute
and writing of the outputs) and per-stage times for ``all``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

#: The volumes each stage reads (the read floor of that stage).
STAGE_INPUTS = {
    "flow": ("raw", "preprocessed", "distance", "markers"),
    "reassign": ("labels", "branches"),
    "tracks": ("labels",),
}


def _client(workers: int, memory_limit: str):
    if workers <= 0:
        return None
    import dask
    from distributed import Client, LocalCluster

    from dask_tracking.cluster import worker_config

    with dask.config.set(worker_config()):  # worker settings of dask_tracking.cluster()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               memory_limit=memory_limit, dashboard_address=":0",
                               local_directory=os.environ.get("DASK_TRACKING_BENCH_SPILL"))
    return Client(cluster)


def _compute_kwargs(client) -> dict:
    return {} if client is not None else {"scheduler": "threads", "num_workers": 2}


def _touch(block):
    import numpy as np

    return np.full((1,) * block.ndim, block.size, dtype=np.int64)


def read_floor(ds, volumes, ckw) -> int:
    """Read every chunk of ``volumes`` once; return the number of voxels read."""
    import dask

    parts = []
    for name in volumes:
        a = getattr(ds, name)
        parts.append(a.map_blocks(_touch, dtype="int64", chunks=tuple((1,) * len(c) for c in a.chunks)).sum())
    return int(sum(dask.compute(*parts, **ckw)))


def run_flow(ds, out: Path, compat, ckw):
    import dask_tracking as dt

    flow = dt.estimate_flow(ds, compat=compat)
    return flow.to_zarr(str(out), overwrite=True, **ckw)


def read_flow(out: Path):
    from dask_tracking.flow.table import FlowTable

    return FlowTable.from_zarr(str(out)).persist(scheduler="sync")


def run_reassign(ds, flow, out: Path, compat, ckw):
    import dask.array as da
    import zarr

    import dask_tracking as dt

    res = dt.reassign_labels(ds, flow, compat=compat)
    g = zarr.open_group(str(out), mode="a")
    sources, targets = [], []
    for name, arr in (("labels_reassigned", res.labels), ("branches_reassigned", res.branches)):
        arr = arr if isinstance(arr, da.Array) else da.from_array(arr)
        z = g.create_array(name, shape=arr.shape, dtype=arr.dtype,
                           chunks=tuple(c[0] for c in arr.chunks), overwrite=True)
        sources.append(arr)
        targets.append(z)
    da.store(sources, targets, lock=False, **ckw)


def run_tracks(ds, flow, out: Path, compat, ckw):
    """``write_label_tracks``: the tasks write the rows to ``tracks`` (and ``tracks_properties``)
    of OUT.zarr; no process holds more than one seed chunk's rows."""
    import dask_tracking as dt

    return int(dt.write_label_tracks(ds, flow, str(out), label=None, start_frame=0, compat=compat, **ckw))


def tracks_path(out: Path) -> Path:
    """Where earlier versions saved the rows as .npy (read by the parity check when OUT has no ``tracks``)."""
    return out.with_name(out.stem + "-tracks_labelall_start0.npy")


def read_tracks_rows(out: Path):
    """The (K, 2+d) rows of a tracks stage: ``tracks`` of OUT.zarr, else the older .npy beside it."""
    import numpy as np
    import zarr

    try:
        g = zarr.open_group(str(out), mode="r")
        if "tracks" in g:
            return np.asarray(g["tracks"][...], dtype=np.float64)
    except Exception:  # no store: fall back on the .npy
        pass
    p = tracks_path(out)
    return np.load(p) if p.exists() else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="input zarr (our layout)")
    p.add_argument("--out", required=True, help="output zarr group")
    p.add_argument("--stage", required=True, choices=["flow", "reassign", "tracks", "read", "all"])
    p.add_argument("--compat", default="default", choices=["nellie", "default"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="3GB", help="per worker")
    p.add_argument("--volumes", nargs="*", default=None, help="read stage: volumes to read")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--json", required=True)
    a = p.parse_args(argv)

    t0 = time.perf_counter()
    import dask_tracking as dt

    ds = dt.open_dataset(a.data)
    if a.frames:
        ds = ds.isel(t=slice(0, a.frames))
    client = _client(a.workers, a.memory_limit)
    ckw = _compute_kwargs(client)
    compat = "nellie" if a.compat == "nellie" else None
    out = Path(a.out)
    setup = time.perf_counter() - t0

    info: dict = {"stage": a.stage, "compat": a.compat, "workers": a.workers,
                  "memory_limit": a.memory_limit, "shape": list(ds.shape),
                  "chunks": [list(c[:1]) for c in ds.labels.chunks], "setup_s": setup,
                  "dask_tracking": getattr(dt, "__version__", "?")}
    t0 = time.perf_counter()
    stages = {}
    if a.stage == "read":
        vols = a.volumes or list(ds.arrays())
        info["voxels_read"] = read_floor(ds, vols, ckw)
        info["volumes"] = vols
        info["bytes_read"] = int(sum(getattr(ds, v).nbytes for v in vols))
    elif a.stage == "flow":
        run_flow(ds, out, compat, ckw)
    elif a.stage == "reassign":
        run_reassign(ds, read_flow(out), out, compat, ckw)
    elif a.stage == "tracks":
        info["track_rows"] = run_tracks(ds, read_flow(out), out, compat, ckw)
    else:
        s = time.perf_counter()
        flow = run_flow(ds, out, compat, ckw)
        stages["flow"] = time.perf_counter() - s
        s = time.perf_counter()
        run_reassign(ds, flow, out, compat, ckw)
        stages["reassign"] = time.perf_counter() - s
        s = time.perf_counter()
        info["track_rows"] = run_tracks(ds, flow, out, compat, ckw)
        stages["tracks"] = time.perf_counter() - s
    info["run_s"] = time.perf_counter() - t0
    info["stages_s"] = stages
    Path(a.json).write_text(json.dumps(info))
    if client is not None:
        cluster = client.cluster
        try:
            client.close()
            cluster.close()
        except Exception as exc:  # shutdown noise must not turn a finished run into a failure
            print(f"cluster shutdown: {exc!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
