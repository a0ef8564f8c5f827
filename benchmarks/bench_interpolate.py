"""Flow interpolation and label tracks, dask_tracking vs Nellie 1.0.4, on the same inputs.

One command (after ``bench_side_by_side.py`` made the inputs and the Nellie venv)::

    python benchmarks/bench_interpolate.py --tiles 1 --frame 10

For the tiled yeast input (``make_inputs.py``) it takes Nellie's own
``flow_vector_array.npy`` and every labelled voxel of frame ``--frame``, then times

* Nellie: ``FlowInterpolator(im_info, forward=F).interpolate_coord(coords, t)`` (forward
  and backward; the call only, the constructor that loads the flow is not timed) and ``LabelTracks(im_info).run(label_num=None, start_frame=0)``, in
  the Nellie venv (a separate process);
* ours, in this process: ``interpolate_flow`` (NumPy coords, and dask coords on the
  threaded scheduler) in both modes, and ``label_tracks(label=None, start_frame=0)``
  in both modes;

checks that compat results equal Nellie's (NaN in the same places, values within
1e-9; tracks as row sets) and writes ``benchmarks/results/interpolate_x{n}.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

NELLIE_SCRIPT = r'''
import json, sys, time, os
import numpy as np
from nellie.im_info.verifier import FileInfo, ImInfo
from nellie.tracking.flow_interpolation import FlowInterpolator
from nellie.tracking.all_tracks_for_label import LabelTracks
raw, coords_path, t, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fi = FileInfo(raw, output_dir=os.path.join(os.path.dirname(raw), "nellie_output"), output_naming="stable")
fi.find_metadata(); fi.load_metadata(); im_info = ImInfo(fi)
coords = np.load(coords_path)
res = {}
for fw in (True, False):
    fint = FlowInterpolator(im_info, forward=fw)
    t0 = time.perf_counter()
    v = fint.interpolate_coord(coords.copy(), t)
    res["interp_forward" if fw else "interp_backward"] = time.perf_counter() - t0
    np.save(out + ("_fw.npy" if fw else "_bw.npy"), v)
t0 = time.perf_counter()
lt = LabelTracks(im_info); lt.initialize()
tracks, props = lt.run(label_num=None, start_frame=0)
res["tracks"] = time.perf_counter() - t0
np.save(out + "_tracks.npy", np.asarray(tracks, dtype=np.float64))
json.dump(res, open(out + ".json", "w"))
'''


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[np.lexsort(a.T[::-1])]


def main(argv=None) -> int:
    import dask
    import dask.array as da
    import dask_tracking as dt
    import nellie_env
    from bench_side_by_side import machine

    p = argparse.ArgumentParser()
    p.add_argument("--tiles", type=int, default=1)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--frame", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3, help="our timings: best of N")
    a = p.parse_args(argv)

    data = HERE / "work" / "data"
    ours_zarr = data / f"yeast_x{a.tiles}_t{a.frames}.zarr"
    nellie_raw = data / f"yeast_x{a.tiles}_t{a.frames}_nellie" / f"yeast_x{a.tiles}.tif"
    flow_npy = nellie_raw.parent / "nellie_output" / "nellie_necessities" / f"yeast_x{a.tiles}-flow_vector_array.npy"
    if not (ours_zarr.exists() and flow_npy.exists()):
        raise SystemExit(f"inputs missing ({ours_zarr}, {flow_npy}): run bench_side_by_side.py --tiles {a.tiles} first")

    ds = dt.open_dataset(ours_zarr)
    flow = np.load(flow_npy)
    coords = np.argwhere(np.asarray(ds.labels[a.frame].compute()) > 0).astype(np.float64)
    result = {"command": "python benchmarks/bench_interpolate.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine(), "shape": list(ds.shape), "frame": a.frame, "n_coords": len(coords),
              "flow_rows": len(flow)}

    with tempfile.TemporaryDirectory() as tmp:
        cpath = Path(tmp) / "coords.npy"
        np.save(cpath, coords)
        out = str(Path(tmp) / "nellie")
        script = Path(tmp) / "run_nellie.py"
        script.write_text(NELLIE_SCRIPT)
        t0 = time.perf_counter()
        subprocess.run([str(nellie_env.python()), str(script), str(nellie_raw), str(cpath), str(a.frame), out],
                       check=True)
        result["nellie_process_s"] = time.perf_counter() - t0
        nellie = json.load(open(out + ".json"))
        n_fw, n_bw = np.load(out + "_fw.npy"), np.load(out + "_bw.npy")
        n_tracks = np.load(out + "_tracks.npy")
    result["nellie"] = nellie

    def best(fn):
        times, val = [], None
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            val = fn()
            times.append(time.perf_counter() - t0)
        return min(times), val

    ours, parity = {}, {}
    kw = dict(spacing=ds.spacing, dt=ds.dt)
    for fw, ref in ((True, n_fw), (False, n_bw)):
        name = "interp_forward" if fw else "interp_backward"
        s, v = best(lambda: dt.interpolate_flow(flow, coords, a.frame, forward=fw, compat="nellie", **kw))
        ours[f"{name}_compat_numpy"] = s
        parity[name] = bool(v.shape == ref.shape and np.array_equal(np.isnan(v), np.isnan(ref))
                            and np.nanmax(np.abs(v - ref), initial=0) <= 1e-9)
        dc = da.from_array(coords, chunks=(max(len(coords) // 8, 1), ds.ndim))
        s, v2 = best(lambda: dt.interpolate_flow(flow, dc, a.frame, forward=fw, compat="nellie", **kw).compute())
        ours[f"{name}_compat_dask8"] = s
        parity[name + "_dask8"] = bool(np.array_equal(v2, v, equal_nan=True))
        s, _ = best(lambda: dt.interpolate_flow(flow, coords, a.frame, forward=fw, **kw))
        ours[f"{name}_default_numpy"] = s
    with dask.config.set(scheduler="threads"):
        s, tr = best(lambda: dt.label_tracks(ds, flow, compat="nellie"))
        ours["tracks_compat"] = s
        parity["tracks"] = bool(tr.data.shape == n_tracks.shape
                                and np.allclose(_rows(tr.data), _rows(n_tracks), rtol=0, atol=1e-9))
        s, trd = best(lambda: dt.label_tracks(ds, flow))
        ours["tracks_default"] = s
    result.update(ours=ours, parity=parity, tracks_rows={"nellie": len(n_tracks), "compat": len(tr.data),
                                                         "default": len(trd.data)})
    result["speedup"] = {
        "interp_forward": nellie["interp_forward"] / ours["interp_forward_compat_numpy"],
        "interp_backward": nellie["interp_backward"] / ours["interp_backward_compat_numpy"],
        "tracks": nellie["tracks"] / ours["tracks_compat"],
    }
    dest = HERE / "results" / f"interpolate_x{a.tiles}.json"
    dest.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("n_coords", "nellie", "ours", "parity", "speedup")}, indent=1))
    return 0 if all(parity.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
