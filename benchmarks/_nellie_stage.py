"""Run one stage of Nellie 1.0.4's tracking in *this* interpreter (the Nellie venv).

Called by ``bench_side_by_side.py`` with the venv's python; not imported by our package::

    benchmarks/work/nellie-venv/bin/python benchmarks/_nellie_stage.py \\
        --raw DIR/yeast_x1.tif --stage flow --json OUT.json

Stages (device="cpu", Nellie's defaults otherwise):

``flow``      HuMomentTracking(im_info, device="cpu").run() -> ``<stem>-flow_vector_array.npy``
``reassign``  VoxelReassigner(im_info, device="cpu").run() -> ``<stem>-im_{obj,branch}_label_reassigned.ome.tif``
``tracks``    LabelTracks(im_info).run(label_num=None, start_frame=0) (all labels, every voxel)
              -> ``<stem>-tracks_labelall_start0.npy`` rows (track_id, t, z, y, x)

The JSON holds the stage's own wall time (the ``run`` call, without imports and
``ImInfo`` set-up, which are timed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--raw", required=True, help="the raw OME-TIFF of a generated Nellie folder")
    p.add_argument("--stage", required=True, choices=["flow", "reassign", "tracks"])
    p.add_argument("--json", required=True)
    a = p.parse_args(argv)

    t0 = time.perf_counter()
    from nellie.im_info.verifier import FileInfo, ImInfo
    from nellie.tracking.all_tracks_for_label import LabelTracks
    from nellie.tracking.hu_tracking import HuMomentTracking
    from nellie.tracking.voxel_reassignment import VoxelReassigner
    import numpy as np

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_dir = os.path.join(os.path.dirname(os.path.abspath(a.raw)), "nellie_output")
    fi = FileInfo(a.raw, output_dir=out_dir, output_naming="stable")
    fi.find_metadata()
    fi.load_metadata()
    im_info = ImInfo(fi)
    t_setup = time.perf_counter() - t0

    t0 = time.perf_counter()
    outputs = {}
    if a.stage == "flow":
        HuMomentTracking(im_info, device="cpu").run()
        outputs["flow"] = im_info.pipeline_paths["flow_vector_array"]
    elif a.stage == "reassign":
        VoxelReassigner(im_info, device="cpu").run()
        outputs["labels_reassigned"] = im_info.pipeline_paths["im_obj_label_reassigned"]
        outputs["branches_reassigned"] = im_info.pipeline_paths["im_branch_label_reassigned"]
    else:
        lt = LabelTracks(im_info)
        lt.initialize()
        tracks, _props = lt.run(label_num=None, start_frame=0)
        rows = np.asarray(tracks, dtype=np.float64).reshape(-1, 2 + len(im_info.axes) - 1)
        path = im_info.pipeline_paths["flow_vector_array"].replace(
            "flow_vector_array", "tracks_labelall_start0")
        t_run = time.perf_counter() - t0
        np.save(path, rows)
        outputs["tracks"] = path
    t_run = locals().get("t_run", time.perf_counter() - t0)
    with open(a.json, "w") as f:
        json.dump({"stage": a.stage, "import_s": t_import, "setup_s": t_setup, "run_s": t_run,
                   "shape": list(im_info.shape), "outputs": outputs}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
