"""Bad input to ``dask-tracking run`` / ``dask_tracking.run``: a clear message, a non-zero exit,
nothing computed and nothing already written changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import dask_tracking as dt
from dask_tracking.cli import main
from dask_tracking.dataset import VOLUMES, InputError


def _inputs(path: Path, *, drop=(), shape_of=None, dtype_of=None, scale=True) -> Path:
    """A small real input store in our zarr layout (3 frames of 4 x 16 x 16)."""
    rng = np.random.default_rng(0)
    shape = (3, 4, 16, 16)
    g = zarr.open_group(str(path), mode="w")
    if scale:
        g.attrs.update({"axes": "TZYX", "scale": {"T": 1.0, "Z": 0.25, "Y": 0.1, "X": 0.1}})
    dtypes = {"raw": "uint16", "preprocessed": "float32", "distance": "float32", "markers": "uint8",
              "labels": "int32", "branches": "uint32"}
    for name in VOLUMES:
        if name in drop:
            continue
        shp = shape_of[1] if shape_of and shape_of[0] == name else shape
        dtp = dtype_of[1] if dtype_of and dtype_of[0] == name else dtypes[name]
        a = g.create_array(name, shape=shp, dtype=dtp, chunks=(1,) + shp[1:])
        a[...] = (rng.random(shp) * 3).astype(dtp)
    return path


def _snapshot(path: Path) -> dict:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture()
def existing_output(tmp_path):
    """An existing output store with content, to check it is left untouched."""
    out = tmp_path / "out.zarr"
    g = zarr.open_group(str(out), mode="w")
    g.attrs.update({"format": "dask-tracking-output/1", "status": "complete"})
    g.create_array("labels_reassigned", shape=(3, 4, 16, 16), dtype="int32", chunks=(1, 4, 16, 16))[...] = 7
    return out


def _run(args, env=None):
    return CliRunner().invoke(main, args, env=env)


@pytest.mark.parametrize("kind, kwargs, message", [
    ("missing", {"drop": ("branches",)}, r"missing arrays: branches|holds neither the six arrays"),
    ("shape", {"shape_of": ("labels", (3, 4, 16, 15))}, r"'labels' has shape \(3, 4, 16, 15\)"),
    ("dtype", {"dtype_of": ("labels", "float32")}, r"'labels' has dtype float32; allowed: an integer"),
    ("noscale", {"scale": False}, r"has no 'scale' attribute"),
])
def test_bad_inputs_fail_before_work(tmp_path, existing_output, kind, kwargs, message):
    src = _inputs(tmp_path / "in.zarr", **kwargs)
    before = _snapshot(existing_output)
    res = _run(["run", str(src), "-o", str(existing_output), "--overwrite", "--no-progress"])
    assert res.exit_code != 0
    assert "error:" in res.output
    import re

    assert re.search(message, res.output), res.output
    assert _snapshot(existing_output) == before
    with pytest.raises(InputError, match=message):
        dt.run(str(src), existing_output, overwrite=True)
    assert _snapshot(existing_output) == before


def test_missing_arrays_fail_before_work(tmp_path, existing_output):
    arrays = {n: np.zeros((3, 4, 8, 8), dtype="int32") for n in VOLUMES if n != "branches"}
    before = _snapshot(existing_output)
    with pytest.raises(InputError, match="missing input arrays: branches"):
        dt.run(arrays, existing_output, overwrite=True, scale={"T": 1, "Z": 1, "Y": 1, "X": 1})
    assert _snapshot(existing_output) == before


def test_existing_output_is_never_touched_without_resume_or_overwrite(tmp_path, existing_output):
    src = _inputs(tmp_path / "in.zarr")
    before = _snapshot(existing_output)
    res = _run(["run", str(src), "-o", str(existing_output)])
    assert res.exit_code != 0
    assert "already exists; pass --resume" in res.output
    with pytest.raises(InputError, match="already exists; pass --resume"):
        dt.run(str(src), existing_output)
    res = _run(["run", str(src), "-o", str(existing_output), "--resume", "--overwrite"])
    assert res.exit_code != 0 and "exclude each other" in res.output
    assert _snapshot(existing_output) == before


def test_overwrite_refuses_foreign_folders_and_resume_needs_a_run_output(tmp_path):
    src = _inputs(tmp_path / "in.zarr")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not a zarr store")
    before = _snapshot(foreign)
    with pytest.raises(InputError, match="is not a dask-tracking output store; refusing to overwrite"):
        dt.run(str(src), foreign, overwrite=True)
    with pytest.raises(InputError, match="nothing to resume"):
        dt.run(str(src), foreign, resume=True)
    assert _snapshot(foreign) == before


def test_unwritable_output_fails_before_work(tmp_path):
    src = _inputs(tmp_path / "in.zarr")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = _run(["run", str(src), "-o", str(blocker / "out.zarr")])
    assert res.exit_code != 0 and "does not exist" in res.output
    res = _run(["run", str(src), "-o", str(tmp_path / "no" / "such" / "out.zarr")])
    assert res.exit_code != 0 and "the folder" in res.output
    with pytest.raises(InputError, match="refusing to overwrite"):
        dt.run(str(src), blocker, overwrite=True)
    assert blocker.read_text() == "x"
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(InputError, match="not writable"):
            dt.run(str(src), ro / "out.zarr")


def test_unreachable_scheduler_fails_with_a_clear_message(tmp_path):
    src = _inputs(tmp_path / "in.zarr")
    out = tmp_path / "out.zarr"
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        res = _run(["run", str(src), "-o", str(out), "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code != 0
    assert "scheduler 'tcp://127.0.0.1:9' cannot be reached" in res.output
    assert not out.exists()


def test_bad_arguments_name_the_argument(tmp_path):
    src = _inputs(tmp_path / "in.zarr")
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError, match="compat must be None .* got 'nelly'"):
        dt.run(str(src), out, compat="nelly")
    with pytest.raises(InputError, match="max_distance_um must be a positive number"):
        dt.run(str(src), out, max_distance_um=-1)
    with pytest.raises(InputError, match="memory_limit must be a size like"):
        dt.cluster(memory_limit="lots")
    with pytest.raises(InputError, match="n_workers must be a positive integer, got 0"):
        dt.cluster(n_workers=0)
    with pytest.raises(InputError, match="kind must be 'local' or 'gpu', got 'tpu'"):
        dt.cluster("tpu")
    assert not out.exists()


def test_checks_read_no_data_on_a_huge_lazy_input(tmp_path, existing_output):
    """A 10 TB lazy movie: every check runs in well under a second without computing anything."""
    import time

    import dask.array as da

    shape, chunks = (1000, 500, 4096, 4096), (1, 64, 512, 512)
    arrays = {n: da.zeros(shape, chunks=chunks, dtype="uint16" if n != "distance" else "float32")
              for n in VOLUMES}
    arrays["labels"] = da.zeros(shape, chunks=chunks, dtype="float32")  # wrong dtype
    ds_scale = {"T": 1, "Z": 0.25, "Y": 0.1, "X": 0.1}
    start = time.perf_counter()
    with pytest.raises(InputError, match="'labels' has dtype float32"):
        dt.run(arrays, tmp_path / "new.zarr", scale=ds_scale)
    arrays["labels"] = da.zeros(shape, chunks=chunks, dtype="int32")
    with pytest.raises(InputError, match="already exists; pass --resume"):
        dt.run(arrays, existing_output, scale=ds_scale)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "new.zarr").exists()


@pytest.mark.parametrize("args, message", [
    (["--accuracy", "faster"], r"--accuracy 'faster': accuracy must be True, False or names from"),
    (["--compat", "nellie", "--accuracy", "all"], r"--accuracy 'all': accuracy options .* cannot be used "
                                                   r"with compat='nellie'"),
])
def test_cli_bad_accuracy_fails_before_a_cluster_starts(tmp_path, args, message):
    import re

    src = _inputs(tmp_path / "in.zarr")
    out = tmp_path / "out.zarr"
    res = CliRunner().invoke(main, ["run", str(src), "-o", str(out), *args])
    assert res.exit_code == 2
    assert re.search(message, res.output), res.output
    assert "cluster:" not in res.output and "dashboard" not in res.output
    assert not out.exists()


def test_bad_window_frames_fails_before_work(tmp_path, existing_output):
    src = _inputs(tmp_path / "in.zarr")
    before = _snapshot(existing_output)
    for bad in ("1", "0", "-4"):
        res = _run(["run", str(src), "-o", str(existing_output), "--overwrite", "--no-progress",
                    "--window-frames", bad])
        assert res.exit_code != 0
        assert f"--window-frames: window_frames must be an integer >= 2 (frames per window) or None, got {bad}" \
            in res.output, res.output
    assert _snapshot(existing_output) == before
