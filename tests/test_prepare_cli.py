"""``dask-tracking prepare RAW -o INPUTS.zarr`` on a real OME-TIFF, through a real scheduler."""

from __future__ import annotations

import dask
import numpy as np
import tifffile
import zarr
from click.testing import CliRunner

import dask_tracking as dt
from dask_tracking.cli import main

SCALE = {"T": 3.0, "Z": 0.25, "Y": 0.0655, "X": 0.0655}


def _movie():
    rng = np.random.default_rng(5)
    m = rng.normal(100, 4, size=(2, 12, 64, 64))
    zz, yy, xx = np.mgrid[0:12, 0:64, 0:64]
    for t in range(2):
        d2 = ((zz - 6) / 0.8) ** 2 + ((yy - 32 - t) / 2.5) ** 2  # a tube along X
        m[t] += 180 * np.exp(-0.5 * d2) * (np.abs(xx - 32) < 24)
    return np.clip(m, 0, 65535).astype(np.uint16)


def test_prepare_command_writes_our_layout(tmp_path, local_cluster_client):
    movie = _movie()
    tif = tmp_path / "movie.ome.tif"
    tifffile.imwrite(tif, movie, metadata={"axes": "TZYX", "PhysicalSizeX": SCALE["X"],
                                           "PhysicalSizeY": SCALE["Y"], "PhysicalSizeZ": SCALE["Z"],
                                           "TimeIncrement": SCALE["T"]})
    out = tmp_path / "inputs.zarr"
    res = CliRunner().invoke(main, ["prepare", str(tif), "-o", str(out), "--compat", "nellie",
                                    "--scheduler", local_cluster_client.scheduler.address])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    ds = dt.open_dataset(out)
    assert ds.scale == dt.Scale.coerce(SCALE) and ds.axes == "TZYX"
    want = dt.prepare(movie, SCALE, compat="nellie", return_extras=True)
    names = list(ds.arrays())
    got = dask.compute(*[ds.arrays()[n] for n in names], scheduler="sync")
    exp = dask.compute(*[want.dataset.arrays()[n] for n in names], scheduler="sync")
    for n, a, b in zip(names, got, exp):
        np.testing.assert_array_equal(a, b, err_msg=n)
    assert exp[names.index("labels")].max() >= 1
    g = zarr.open_group(str(out / "prepare"), mode="r")
    np.testing.assert_array_equal(g["pixel_class"][:], want.pixel_class.compute(scheduler="sync"))
    # a second run refuses to overwrite
    again = CliRunner().invoke(main, ["prepare", str(tif), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_prepare_command_errors(tmp_path):
    tif = tmp_path / "noscale.ome.tif"
    tifffile.imwrite(tif, _movie(), metadata={"axes": "TZYX"})
    res = CliRunner().invoke(main, ["prepare", str(tif), "-o", str(tmp_path / "o.zarr")])
    assert res.exit_code == 2 and "pass scale=" in res.output
    res = CliRunner().invoke(main, ["prepare", str(tif), "-o", str(tmp_path / "o.zarr"),
                                    "--scale", "3,0.25,0.0655,0.0655", "--option", "filter_bogus=1"])
    assert res.exit_code == 2 and "unknown preparation option 'filter_bogus'" in res.output
    assert not (tmp_path / "o.zarr").exists()
