"""Shared fixtures: the real yeast sample (skipped with a reason where absent) and clusters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# ../shared/data beside the checkout; DASK_TRACKING_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("DASK_TRACKING_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
YEAST = SHARED_DATA / "nellie_yeast.zarr"


def yeast_or_skip() -> Path:
    if not (YEAST / "zarr.json").exists():
        pytest.skip(
            f"the Nellie yeast sample is not at {YEAST} (it lives in ../shared/data beside the "
            "checkout; set DASK_TRACKING_SHARED_DATA to its folder)"
        )
    return YEAST


@pytest.fixture(scope="session")
def yeast_path() -> Path:
    """Path of ../shared/data/nellie_yeast.zarr, or skip with the reason."""
    return yeast_or_skip()


@pytest.fixture(scope="session")
def yeast(yeast_path):
    """The yeast sample as a TrackingDataset (whole-frame chunks)."""
    import dask_tracking as dt

    return dt.open_dataset(yeast_path)


@pytest.fixture(scope="session")
def yeast_reference(yeast_path):
    """The reference/ group of the yeast sample (Nellie 1.0.4's outputs)."""
    import zarr

    return zarr.open_group(str(yeast_path / "reference"), mode="r")


@pytest.fixture(scope="session")
def local_cluster_client():
    """A real 2-worker distributed LocalCluster in processes (shared by the session)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, memory_limit="3GiB")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def traced_peak():
    """``traced_peak(fn, *args, **kwargs) -> (result, peak bytes)``: the largest memory that
    Python and NumPy allocations held at once while ``fn`` ran (``tracemalloc``)."""
    import tracemalloc

    def run(fn, *args, **kwargs):
        tracemalloc.start()
        try:
            out = fn(*args, **kwargs)
            return out, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    return run
