"""Small-scale version of benchmarks/bench_reassign_memory.py: tight worker memory, same output."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_reassign_memory.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_reassign_memory", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tight_worker_memory_gives_the_unconstrained_result(tmp_path):
    r = _bench().run_benchmark(tmp_path / "run", frames=8, shape=(16, 96, 128), chunks=(16, 48, 64),
                               workers=2, memory_limit="400MiB", n_objects=12, seed=1)
    assert r["equal"], r["differences"]
    assert r["reassigned_voxels"] > 5000
    assert not r["workers_restarted"]
    assert r["peak_worker_rss_over_limit"] < 0.9
    assert not (tmp_path / "run").exists()  # the stores are removed
