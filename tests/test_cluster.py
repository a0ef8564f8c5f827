"""The run on real distributed clusters: a 2-worker LocalCluster, and a ``dask scheduler`` with
two ``dask worker`` processes on 127.0.0.1 that the CLI connects to by address. Both give
Nellie's reference output (first frames of the yeast sample, compat mode, flow estimated)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import dask_tracking as dt
from dask_tracking.cli import main

N = 4


def assert_reference(out: Path, ref, n: int = N) -> None:
    g = zarr.open_group(str(out), mode="r")
    flow = np.asarray(ref["flow_vector_array"][...])
    np.testing.assert_array_equal(g["flow"][...], flow[flow[:, 0] < n - 1])
    for name in ("labels_reassigned", "branches_reassigned"):
        np.testing.assert_array_equal(g[name][...], ref[name][:n], err_msg=name)
    assert np.asarray(g["frames_done"][...]).all()
    assert g.attrs["status"] == "complete" and g.attrs["compat"] == "nellie"
    assert g.attrs["input"]["shape"][0] == n


def test_local_cluster_gives_the_reference(tmp_path, yeast, yeast_reference, local_cluster_client):
    out = tmp_path / "out.zarr"
    res = dt.run(yeast.isel(t=slice(0, N)), out, compat="nellie", client=local_cluster_client)
    assert res.n_frames == N and res.flow_rows > 0
    assert_reference(out, yeast_reference)
    g = zarr.open_group(str(out), mode="r")
    assert list(res.labelled_voxels) == [int((g["labels_reassigned"][t] > 0).sum()) for t in range(N)]
    assert g.attrs["version"] == dt.__version__
    assert g.attrs["parameters"]["max_distance_um"] == 1.0
    assert g["labels_reassigned"].attrs["axes"] == "TZYX"
    assert g["flow"].attrs["columns"] == ["t", "z", "y", "x", "dz", "dy", "dx", "cost"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def scheduler_and_workers(tmp_path):
    """`dask scheduler` + two `dask worker` processes on 127.0.0.1 (real subprocesses)."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    dask_cli = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen(dask_cli + ["--host", "127.0.0.1", "--port", str(port),
                                          "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", addr, "--nthreads", "1",
                 "--memory-limit", "3GiB", "--local-directory", str(tmp_path / f"w{i}"),
                 "--no-dashboard"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(addr, timeout=60) as c:
            c.wait_for_workers(2, timeout=90)
        yield addr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def test_cli_connects_to_an_existing_scheduler(tmp_path, yeast, yeast_reference, scheduler_and_workers,
                                               monkeypatch):
    src = tmp_path / "in.zarr"
    dt.write_tracking_zarr(yeast.isel(t=slice(0, N)), src)
    out = tmp_path / "out.zarr"
    res = CliRunner().invoke(main, ["run", str(src), "-o", str(out), "--compat", "nellie",
                                    "--scheduler", scheduler_and_workers, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"existing scheduler {scheduler_and_workers} (2 workers)" in res.output
    assert "flow rows:" in res.output
    assert_reference(out, yeast_reference)
    # the scheduler keeps running after the run: the CLI closes only what it started
    from distributed import Client

    with Client(scheduler_and_workers, timeout=10) as c:
        assert len(c.scheduler_info()["workers"]) == 2
    # $DASK_SCHEDULER_ADDRESS is used when no address is given; nothing is started then
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", scheduler_and_workers)
    with dt.cluster(n_workers=5) as session:
        assert session.kind == "existing" and session.cluster is None
        assert len(session.client.scheduler_info()["workers"]) == 2


def test_cluster_sizes_local_workers_under_the_memory_budget():
    from dask_tracking import cluster as cluster_mod

    with dt.cluster(n_workers=2, dashboard_address=None) as session:
        assert session.kind == "local"
        workers = session.client.scheduler_info()["workers"].values()
        limits = [w["memory_limit"] for w in workers]
        assert len(limits) == 2
        assert sum(limits) <= cluster_mod.MEMORY_FRACTION * cluster_mod._total_memory() + 2
        assert all(w["nthreads"] == 1 for w in workers)
        assert session.client.submit(sum, [1, 2, 3]).result() == 6
    assert session.client.status == "closed"


def test_gpu_cluster_without_dask_cuda_names_the_extra():
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"install the gpu extra, pip install 'dask-tracking\[gpu\]'"):
            dt.cluster("gpu")
    else:  # pragma: no cover - a GPU machine
        pytest.skip("dask_cuda is installed: the GPU tests in tests/gpu cover kind='gpu'")
