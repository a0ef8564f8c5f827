"""Resume: a run whose process is SIGKILLed part way continues with ``resume=True`` and ends with
output identical to an uninterrupted run (real yeast data, Nellie compat, Nellie's own flow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import dask_tracking as dt
from dask_tracking.dataset import InputError

N = 6

SCRIPT = textwrap.dedent("""
    import sys, dask, numpy as np, zarr
    import dask_tracking as dt
    src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ds = dt.open_dataset(src).isel(t=slice(0, n))
    ref = np.asarray(zarr.open_group(src + "/reference", mode="r")["flow_vector_array"][...])
    flow = dt.FlowTable.from_numpy(ref[ref[:, 0] < n - 1], n_frames=n)
    with dask.config.set(scheduler="threads", num_workers=1):
        dt.run(ds, out, compat="nellie", flow=flow, resume=len(sys.argv) > 4)
""")


def reference_flow(yeast_reference, n):
    ref = np.asarray(yeast_reference["flow_vector_array"][...])
    return dt.FlowTable.from_numpy(ref[ref[:, 0] < n - 1], n_frames=n)


def assert_same_output(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for name in ("flow", "flow_index", "labels_reassigned", "branches_reassigned", "frames_done"):
        np.testing.assert_array_equal(ga[name][...], gb[name][...], err_msg=name)
    ka, kb = sorted(ga["voxel_matches"].array_keys()), sorted(gb["voxel_matches"].array_keys())
    assert ka == kb
    for k in ka:
        np.testing.assert_array_equal(ga[f"voxel_matches/{k}"][...], gb[f"voxel_matches/{k}"][...])
    assert ga.attrs["parameters"] == gb.attrs["parameters"]
    assert ga.attrs["status"] == gb.attrs["status"] == "complete"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, yeast, yeast_reference):
    import dask

    out = tmp_path_factory.mktemp("resume") / "full.zarr"
    with dask.config.set(scheduler="threads", num_workers=2):
        res = dt.run(yeast.isel(t=slice(0, N)), out, compat="nellie", flow=reference_flow(yeast_reference, N))
    assert res.frames_computed == tuple(range(N))
    g = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(g["labels_reassigned"][...], yeast_reference["labels_reassigned"][:N])
    np.testing.assert_array_equal(g["branches_reassigned"][...], yeast_reference["branches_reassigned"][:N])
    return out


def _done_frames(out: Path) -> int:
    d = out / "frames_done" / "c"
    return len(list(d.iterdir())) if d.is_dir() else 0


def test_killed_run_resumes_to_identical_output(tmp_path, yeast_path, uninterrupted):
    out = tmp_path / "killed.zarr"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(yeast_path), str(out), str(N)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:
        while _done_frames(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    g = zarr.open_group(str(out), mode="r")
    done = np.asarray(g["frames_done"][...]).astype(bool)
    assert 2 <= done.sum() < N, done
    assert g.attrs["status"] == "running"
    # an existing, interrupted output is refused without --resume / --overwrite
    with pytest.raises(InputError, match="already exists; pass --resume"):
        dt.run(yeast_path, out, compat="nellie")
    r = subprocess.run([sys.executable, str(script), str(yeast_path), str(out), str(N), "resume"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    g = zarr.open_group(str(out), mode="r")
    assert_same_output(out, uninterrupted)


def test_resume_skips_frames_already_written(tmp_path, yeast, yeast_reference, uninterrupted):
    import shutil

    import dask

    out = tmp_path / "partial.zarr"
    shutil.copytree(uninterrupted, out)
    g = zarr.open_group(str(out), mode="r+")
    # forget frames 4.. as if the run had stopped after frame 3; poison their content
    g["frames_done"][4:] = 0
    g["labels_reassigned"][4:] = -1
    g.attrs["status"] = "running"
    with dask.config.set(scheduler="threads", num_workers=2):
        res = dt.run(yeast.isel(t=slice(0, N)), out, compat="nellie", resume=True,
                     flow=reference_flow(yeast_reference, N))
    assert res.resumed and res.frames_computed == tuple(range(4, N))
    assert_same_output(out, uninterrupted)
    # nothing left to do: a second resume computes no frame and changes nothing
    with dask.config.set(scheduler="threads", num_workers=2):
        res = dt.run(yeast.isel(t=slice(0, N)), out, compat="nellie", resume=True,
                     flow=reference_flow(yeast_reference, N))
    assert res.frames_computed == ()
    assert_same_output(out, uninterrupted)


def test_resume_with_other_parameters_is_refused(tmp_path, yeast, yeast_reference, uninterrupted):
    import shutil

    out = tmp_path / "other.zarr"
    shutil.copytree(uninterrupted, out)
    with pytest.raises(InputError, match="written with other parameters .*compat: store has 'nellie'"):
        dt.run(yeast.isel(t=slice(0, N)), out, compat=None, resume=True,
               flow=reference_flow(yeast_reference, N))
    assert_same_output(out, uninterrupted)
