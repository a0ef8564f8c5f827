"""A worker process killed (SIGKILL) part way through a run does not change the result."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import zarr

import dask_tracking as dt

N = 5


def test_killing_a_worker_mid_run_gives_identical_output(tmp_path, yeast, yeast_reference):
    from distributed import Client, LocalCluster

    ref = np.asarray(yeast_reference["flow_vector_array"][...])
    flow = dt.FlowTable.from_numpy(ref[ref[:, 0] < N - 1], n_frames=N)
    out = tmp_path / "out.zarr"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="3GiB",
                           dashboard_address=None)
    client = Client(cluster)
    try:
        pids = client.run(os.getpid)
        result, error = {}, []

        def job():
            try:
                result["r"] = dt.run(yeast.isel(t=slice(0, N)), out, compat="nellie", client=client, flow=flow)
            except Exception as exc:  # pragma: no cover - reported below
                error.append(exc)

        th = threading.Thread(target=job)
        th.start()
        done_dir = out / "frames_done" / "c"
        deadline = time.monotonic() + 120
        while th.is_alive() and time.monotonic() < deadline:
            if done_dir.is_dir() and len(list(done_dir.iterdir())) >= 1:
                break
            time.sleep(0.02)
        n_done = len(list(done_dir.iterdir())) if done_dir.is_dir() else 0
        assert th.is_alive() and n_done < N, "the run ended before a worker could be killed"
        victim_addr, victim = sorted(pids.items())[0]
        os.kill(victim, signal.SIGKILL)
        th.join(300)
        assert not th.is_alive()
        assert not error, error
        # the worker really died (the nanny started a new process)
        assert victim not in client.run(os.getpid).values()
    finally:
        client.close()
        cluster.close()
    g = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(g["flow"][...], ref[ref[:, 0] < N - 1])
    for name in ("labels_reassigned", "branches_reassigned"):
        np.testing.assert_array_equal(g[name][...], yeast_reference[name][:N], err_msg=name)
    assert np.asarray(g["frames_done"][...]).all() and g.attrs["status"] == "complete"
    assert sorted(int(k) for k in g["voxel_matches"].array_keys()) == list(range(N - 1))
    assert list(result["r"].labelled_voxels) == [int((g["labels_reassigned"][t] > 0).sum()) for t in range(N)]
