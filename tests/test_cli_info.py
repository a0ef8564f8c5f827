"""``dask-tracking info``: the summary of a source, and validation messages with a non-zero exit."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import zarr
from click.testing import CliRunner

from dask_tracking.cli import main
from dask_tracking.datasets import synthetic
from dask_tracking.io.zarr_layout import write_tracking_zarr


def test_info_on_the_yeast_sample(yeast_path):
    res = CliRunner().invoke(main, ["info", str(yeast_path)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "frames: 30 of 17 x 192 x 279 (ZYX)" in out
    assert "scale: T 4.5356 s, Z 0.25 um, Y 0.0655 um, X 0.0655 um" in out
    for name, dtype in (("raw", "uint16"), ("preprocessed", "float32"), ("distance", "float32"),
                        ("markers", "uint8"), ("labels", "int32"), ("branches", "uint32")):
        assert re.search(rf"^  {name}\s+{dtype}\s+shape=\(30, 17, 192, 279\) "
                         r"chunks=\(1, 17, 192, 279\)$", out, re.M), name
    # markers per frame, checked against the store read directly
    line = re.search(r"markers per frame: ([\d ]+)$", out, re.M).group(1)
    counts = [int(v) for v in line.split()]
    markers = zarr.open_group(str(yeast_path), mode="r")["markers"]
    assert counts == [int(np.count_nonzero(markers[t])) for t in range(30)]
    assert re.search(rf"markers: min {min(counts)}, max {max(counts)}, total {sum(counts)}$", out, re.M)


def test_info_no_markers_and_scale_override(tmp_path):
    ds = synthetic(2, 3, n_objects=2, shape=(48, 96), seed=1)
    write_tracking_zarr(ds, tmp_path / "s.zarr")
    res = CliRunner().invoke(main, ["info", str(tmp_path / "s.zarr"), "--no-markers",
                                    "--scale", '{"T": 3, "Y": 0.2, "X": 0.2}'])
    assert res.exit_code == 0, res.output
    assert "scale: T 3 s, Y 0.2 um, X 0.2 um" in res.output
    assert "frames: 3 of 48 x 96 (YX)" in res.output
    assert "markers per frame" not in res.output
    res = CliRunner().invoke(main, ["info", str(tmp_path / "s.zarr"), "--scale", "4,0.3,0.3"])
    assert res.exit_code == 0 and "scale: T 4 s, Y 0.3 um, X 0.3 um" in res.output


def test_info_bad_input_exits_non_zero_with_the_message(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["info", str(tmp_path / "nothing.zarr")])
    assert res.exit_code == 2
    assert re.search(r"error: source '.*nothing.zarr' does not exist", res.stderr)
    res = runner.invoke(main, ["info", str(tmp_path), "--scale", "{oops"])
    assert res.exit_code == 2 and "error: --scale is not valid JSON: '{oops'" in res.stderr
    res = runner.invoke(main, ["info", str(tmp_path), "--scale", "a,b"])
    assert res.exit_code == 2 and "error: --scale must be JSON like" in res.stderr
    # a store whose values break validation: negative distance
    ds = synthetic(2, 2, n_objects=1, shape=(48, 48))
    write_tracking_zarr(ds, tmp_path / "neg.zarr")
    g = zarr.open_group(str(tmp_path / "neg.zarr"), mode="r+")
    g["distance"][1, 5, 5] = -2.0
    res = runner.invoke(main, ["info", str(tmp_path / "neg.zarr")])
    assert res.exit_code == 2
    assert ("error: input array 'distance' has negative values (minimum -2.0); allowed: values >= 0"
            in res.stderr)
    # a structural error is reported before any data is read, even with --no-markers
    res = runner.invoke(main, ["info", str(tmp_path / "neg.zarr"), "--no-markers", "--scale", "1,0,1"])
    assert res.exit_code == 2 and "error: scale 'Y' must be a positive finite number, got 0" in res.stderr


def test_info_in_a_real_process(yeast_path, tmp_path):
    cmd = [sys.executable, "-m", "dask_tracking.cli", "info"]
    ok = subprocess.run(cmd + [str(yeast_path), "--no-markers"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "frames: 30 of 17 x 192 x 279" in ok.stdout and "T 4.5356 s" in ok.stdout
    bad = subprocess.run(cmd + [str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr and bad.stdout == ""
