"""Where the work runs: a LocalCluster, a LocalCUDACluster, or an existing scheduler.

:func:`cluster` returns a :class:`ClusterSession`, a context manager holding a
``distributed.Client`` and, when it started one, the cluster it closes on exit.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .dataset import InputError

__all__ = ["ClusterSession", "cluster", "default_workers", "parse_memory", "worker_environ",
           "worker_config", "WORKER_MALLOC_ENV", "WORKER_PRELOAD"]

log = logging.getLogger(__name__)

#: Share of the machine's memory that all local workers together may use.
MEMORY_FRACTION = 0.75

#: Environment variable naming an existing scheduler.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"

#: glibc malloc settings of local worker processes. distributed starts workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536``; setting any malloc variable also freezes glibc's
#: mmap threshold at 128 KiB, so every array temporary above 128 KiB is a fresh,
#: page-faulting ``mmap`` (measured: the reassignment and track kernels ran about 2x
#: slower in workers than in threads). Arrays up to 32 MiB (glibc's largest mmap
#: threshold) come from the heap instead, and up to 128 MiB of freed heap per worker
#: is kept for reuse before it is returned to the OS.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 128 * 2**20}


def worker_environ() -> dict:
    """Dask config for local workers' environment: ``distributed.nanny.pre-spawn-environ``
    with :data:`WORKER_MALLOC_ENV` added (values the user configured are kept).

    Use as ``with dask.config.set(worker_environ()): LocalCluster(...)``; :func:`cluster`
    does this (with :func:`worker_config`) for the clusters it starts.
    """
    import dask
    import distributed  # noqa: F401  (loads distributed's config defaults first)

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    for name, value in WORKER_MALLOC_ENV.items():
        current = env.get(name)
        # distributed's own default trim threshold is replaced; a value the user set is kept
        if current is None or (name == "MALLOC_TRIM_THRESHOLD_" and str(current) == "65536"):
            env[name] = value
            # A Nanny copies its pre-spawn variables into this process's os.environ and the
            # next Nanny prefers os.environ over the config: drop distributed's default left
            # there by an earlier cluster of this process, so the value above applies.
            if name == "MALLOC_TRIM_THRESHOLD_" and os.environ.get(name) == "65536":
                del os.environ[name]
    return {"distributed.nanny.pre-spawn-environ": env}


#: Module each local worker imports at start (the stages' kernels and SciPy).
WORKER_PRELOAD = "dask_tracking.worker_imports"


def worker_config() -> dict:
    """Dask config for starting local workers: :func:`worker_environ` plus
    :data:`WORKER_PRELOAD` added to ``distributed.worker.preload``, so the first task of a
    stage does not pay the imports. Use as ``with dask.config.set(worker_config()): ...``.
    """
    import dask

    preload = list(dask.config.get("distributed.worker.preload", []) or [])
    if WORKER_PRELOAD not in preload:
        preload.append(WORKER_PRELOAD)
    return {**worker_environ(), "distributed.worker.preload": preload}


@dataclass
class ClusterSession:
    """A client and (when started here) its cluster; closes what it started.

    Attributes
    ----------
    client : distributed.Client
    cluster : distributed.deploy.Cluster or None
        ``None`` when connected to an existing scheduler (left running on close).
    kind : {"local", "gpu", "existing"}
    """

    client: Any
    cluster: Any = None
    kind: str = "local"
    description: str = field(default="")

    @property
    def dashboard_link(self) -> str | None:
        """URL of the Dask dashboard, or None if it has none."""
        try:
            return self.client.dashboard_link
        except Exception:  # pragma: no cover - no dashboard
            return None

    def close(self) -> None:
        """Close the client, and the cluster if this session started it."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> "ClusterSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_memory(value: Any, argument: str = "memory_limit") -> int | None:
    """Bytes from ``"4GiB"``, ``"500MB"``, ``"2e9"`` or a number; None stays None.

    Raises
    ------
    InputError
        If the text is not a size or the size is not positive.
    """
    if value is None:
        return None
    from dask.utils import parse_bytes

    try:
        n = int(parse_bytes(value)) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise InputError(
            f"{argument} must be a size like '4GiB', '500MB' or a number of bytes, got {value!r}"
        ) from None
    if n <= 0:
        raise InputError(f"{argument} must be a positive size, got {value!r}")
    return n


def default_workers() -> int:
    """Number of local worker processes: one per CPU core the process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def _total_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def cluster(
    kind: str = "local",
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: Any = None,
    scheduler: str | None = None,
    local_directory: str | None = None,
    dashboard_address: str | None = ":0",
    timeout: float | None = None,
    rmm_pool_size: Any = "auto",
) -> ClusterSession:
    """Start (or connect to) the Dask cluster a run uses.

    Parameters
    ----------
    kind : {"local", "gpu"}
        ``"local"``: a ``distributed.LocalCluster`` of worker processes;
        ``"gpu"``: a ``dask_cuda.LocalCUDACluster``, one worker per GPU, with an
        RMM memory pool and device-to-host spilling. Ignored with ``scheduler``.
    n_workers : int, optional
        Worker processes (local only). Default: one per CPU core.
    threads_per_worker : int
        Threads per local worker (default 1: the tasks release little of the GIL).
    memory_limit : str or int, optional
        Memory limit per worker, e.g. ``"4GiB"``. Default: 75% of the machine's
        RAM divided by the number of workers. Workers spill to ``local_directory``
        beyond it.
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``); default
        ``$DASK_SCHEDULER_ADDRESS`` when set. Nothing is started then.
    local_directory : str, optional
        Spill folder of local workers (default: a ``dask-tracking-spill`` folder
        in the system temp directory).
    dashboard_address : str or None
        Where local clusters serve the dashboard (``":0"``: any free port; None: off).
    timeout : float, optional
        Seconds to wait for an existing scheduler (default dask's
        ``distributed.comm.timeouts.connect``, 30 s unless configured).
    rmm_pool_size : str or int
        RMM pool per GPU for ``kind="gpu"`` (``"auto"``: 80% of the device memory).

    Returns
    -------
    ClusterSession
        Use as a context manager; ``.client`` is the ``distributed.Client``.

    Raises
    ------
    InputError
        Unknown ``kind``, bad sizes, or a scheduler that cannot be reached.
    ImportError
        ``kind="gpu"`` without dask-cuda (names the ``gpu`` extra).
    """
    from distributed import Client

    if kind not in ("local", "gpu"):
        raise InputError(f"kind must be 'local' or 'gpu', got {kind!r}")
    if n_workers is not None and (not isinstance(n_workers, int) or isinstance(n_workers, bool)
                                  or n_workers < 1):
        raise InputError(f"n_workers must be a positive integer, got {n_workers!r}")
    limit = parse_memory(memory_limit)
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if address:
        if timeout is None:
            import dask
            from dask.utils import parse_timedelta

            timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect", "30s"))
        log.info("connecting to the scheduler at %s", address)
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"scheduler {address!r} cannot be reached within {timeout:g} s ({exc}); check the "
                f"address (--scheduler / ${SCHEDULER_ENV}) and that `dask scheduler` runs there"
            ) from None
        n = len(client.scheduler_info().get("workers", {}))
        return ClusterSession(client, None, "existing", f"existing scheduler {address} ({n} workers)")

    spill = local_directory or os.path.join(tempfile.gettempdir(), "dask-tracking-spill")
    os.makedirs(spill, exist_ok=True)
    if kind == "gpu":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise ImportError(
                "kind='gpu' (--gpu) needs dask-cuda and cupy: install the gpu extra, "
                f"pip install 'dask-tracking[gpu]'; import failed with: {exc}"
            ) from exc
        pool = None if rmm_pool_size in (None, 0, "0") else (
            _gpu_pool_size() if rmm_pool_size == "auto" else rmm_pool_size)
        log.info("starting a LocalCUDACluster (one worker per GPU, RMM pool %s)", pool)
        import dask

        with dask.config.set(worker_config()):
            cl = LocalCUDACluster(
                rmm_pool_size=pool,
                device_memory_limit=0.8,
                memory_limit=limit or "auto",
                local_directory=spill,
                dashboard_address=dashboard_address,
            )
        client = Client(cl)
        n = len(cl.workers)
        return ClusterSession(client, cl, "gpu", f"LocalCUDACluster ({n} GPU workers)")

    from distributed import LocalCluster

    n = n_workers or default_workers()
    if limit is None:
        limit = int(_total_memory() * MEMORY_FRACTION / n)
    log.info("starting a LocalCluster: %d worker processes x %d thread(s), %.2f GiB each, spill to %s",
             n, threads_per_worker, limit / 2**30, spill)
    import dask

    with dask.config.set(worker_config()):
        cl = LocalCluster(
            n_workers=n,
            threads_per_worker=threads_per_worker,
            processes=True,
            memory_limit=limit,
            local_directory=spill,
            dashboard_address=dashboard_address,
        )
    client = Client(cl)
    return ClusterSession(client, cl, "local",
                          f"LocalCluster ({n} workers x {threads_per_worker} thread(s), "
                          f"{limit / 2**30:.2f} GiB each)")


def _gpu_pool_size() -> int | None:  # pragma: no cover - needs a GPU
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
        return int(total * 0.8) // 256 * 256
    except Exception:
        return None


class _CallableModule(__import__("types").ModuleType):
    """``dask_tracking.cluster`` is both this module and the function: importing the
    submodule sets the package attribute to the module, so the module calls :func:`cluster`."""

    def __call__(self, *args: Any, **kwargs: Any) -> ClusterSession:
        return cluster(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
