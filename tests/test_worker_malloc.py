"""Local workers start with malloc settings that keep array temporaries off fresh mmaps."""

from __future__ import annotations

import os

import dask

from dask_tracking.cluster import WORKER_MALLOC_ENV, WORKER_PRELOAD, cluster, worker_config, worker_environ


def _env() -> tuple:
    return os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_worker_environ_replaces_distributed_default_and_keeps_user_values():
    key = "distributed.nanny.pre-spawn-environ"
    env = worker_environ()[key]
    assert env["MALLOC_MMAP_THRESHOLD_"] == WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert env["MALLOC_TRIM_THRESHOLD_"] == WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]
    assert env["OMP_NUM_THREADS"] == dask.config.get(key)["OMP_NUM_THREADS"]  # others untouched
    with dask.config.set({key: {"MALLOC_TRIM_THRESHOLD_": 12345, "MALLOC_MMAP_THRESHOLD_": 4096}}):
        env = worker_environ()[key]
    assert env["MALLOC_TRIM_THRESHOLD_"] == 12345 and env["MALLOC_MMAP_THRESHOLD_"] == 4096


def test_local_cluster_workers_get_the_malloc_settings(tmp_path):
    with cluster(n_workers=1, memory_limit="1GB", local_directory=str(tmp_path),
                 dashboard_address=None) as session:
        seen = list(session.client.run(_env).values())
    want = (str(WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]), str(WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]))
    assert seen == [want]
    # the setting is scoped to the cluster start, not left in the global config
    assert "MALLOC_MMAP_THRESHOLD_" not in dask.config.get("distributed.nanny.pre-spawn-environ")


def _loaded() -> bool:
    import sys

    return "dask_tracking.worker_imports" in sys.modules and "dask_tracking.reassign.graph" in sys.modules


def test_local_cluster_workers_preload_the_kernels(tmp_path):
    key = "distributed.worker.preload"
    with dask.config.set({key: ["json"]}):
        assert worker_config()[key] == ["json", WORKER_PRELOAD]  # the user's preloads are kept
    with cluster(n_workers=1, memory_limit="1GB", local_directory=str(tmp_path),
                 dashboard_address=None) as session:
        assert list(session.client.run(_loaded).values()) == [True]
    assert WORKER_PRELOAD not in (dask.config.get(key, []) or [])


def test_settings_apply_after_a_cluster_with_distributed_defaults(tmp_path, monkeypatch):
    """A plain LocalCluster's Nanny leaves MALLOC_TRIM_THRESHOLD_=65536 in this process's
    os.environ, which the next Nanny prefers over the config."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what that earlier cluster leaves
    with cluster(n_workers=1, memory_limit="1GB", local_directory=str(tmp_path),
                 dashboard_address=None) as session:
        seen = list(session.client.run(_env).values())
    assert seen == [(str(WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]),
                     str(WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]))]
