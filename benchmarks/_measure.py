"""Run a command and measure its wall time and the peak memory of its whole process tree.

Peak memory is sampled every ``interval`` seconds as the sum over the process and all
its descendants (dask nannies and workers included) of

* ``rss``: resident set size (counts file pages a process has mapped and touched,
  e.g. Nellie's TIFF memory maps), and
* ``anon``: ``rss - shared`` (private memory: what cannot be dropped without swap).

Sampling can miss a spike shorter than ``interval``; 20 ms by default.

``cpu_s`` is the CPU time (user + system) of the command and every descendant it
waited for (``getrusage(RUSAGE_CHILDREN)``): unlike the wall time it hardly changes
with the load other work puts on a shared machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


@dataclass
class Measured:
    """What :func:`run_measured` returns (seconds and bytes)."""

    cmd: list[str]
    rc: int
    wall_s: float
    peak_rss: int
    peak_anon: int
    peak_procs: int
    peak_single: int
    timed_out: bool
    tail: str = ""
    cpu_s: float = float("nan")
    inner: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _tree_memory(proc: psutil.Process) -> tuple[int, int, int, int]:
    rss = anon = n = single = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0, 0, 0
    for p in procs:
        try:
            mi = p.memory_info()
        except psutil.Error:
            continue
        rss += mi.rss
        single = max(single, mi.rss)
        anon += max(mi.rss - getattr(mi, "shared", 0), 0)
        n += 1
    return rss, anon, n, single


#: glibc arenas for every measured command (unless the environment sets it): without a cap
#: each scheduler thread gets its own heap that keeps memory freed in it, which inflates the
#: peak resident set of threaded runs (measured: +25-50% at 8 x 8 tiles).
MALLOC_ARENA_MAX = "2"


def run_measured(cmd: list[str], *, timeout: float | None = None, interval: float = 0.02,
                 env: dict | None = None, cwd: str | Path | None = None,
                 inner_json: str | Path | None = None) -> Measured:
    """Run ``cmd``; sample the process tree's memory until it exits or ``timeout`` passes.

    ``cmd`` runs with ``MALLOC_ARENA_MAX`` (:data:`MALLOC_ARENA_MAX`) added to its
    environment unless it is set there. On timeout the whole tree is killed and ``timed_out`` is True. If ``inner_json``
    names a file the command writes, its content is returned as ``inner``.
    """
    env = dict(os.environ if env is None else env)
    env.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)
    peak = {"rss": 0, "anon": 0, "n": 0, "single": 0}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=cwd, text=True)
    ps = psutil.Process(proc.pid)
    stop = threading.Event()
    out_lines: list[str] = []

    def sample() -> None:
        while not stop.is_set():
            rss, anon, n, single = _tree_memory(ps)
            peak["single"] = max(peak["single"], single)
            peak["rss"] = max(peak["rss"], rss)
            peak["anon"] = max(peak["anon"], anon)
            peak["n"] = max(peak["n"], n)
            stop.wait(interval)

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out_lines.append(line)
            if len(out_lines) > 400:
                del out_lines[:200]

    ts = threading.Thread(target=sample, daemon=True)
    td = threading.Thread(target=drain, daemon=True)
    ts.start()
    td.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            kids = ps.children(recursive=True)
        except psutil.Error:
            kids = []
        for p in kids + [ps]:
            try:
                p.kill()
            except psutil.Error:
                pass
        proc.wait()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    stop.set()
    ts.join()
    td.join(timeout=5)
    inner = {}
    if inner_json is not None and Path(inner_json).exists() and not timed_out:
        try:
            inner = json.loads(Path(inner_json).read_text())
        except ValueError:
            inner = {}
    return Measured(cmd=[str(c) for c in cmd], rc=proc.returncode, wall_s=wall,
                    peak_rss=peak["rss"], peak_anon=peak["anon"], peak_procs=peak["n"], peak_single=peak["single"],
                    timed_out=timed_out, tail="".join(out_lines[-30:]), inner=inner, cpu_s=cpu)
