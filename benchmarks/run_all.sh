#!/usr/bin/env bash
# Every benchmark, in the order they were run for the README table (about 1.5 h on 2 cores).
#   bash benchmarks/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/nellie_env.py
python benchmarks/make_inputs.py --tiles 1 2 --frames 30
python benchmarks/make_inputs.py --tiles 4 8 --frames 8
python benchmarks/bench_side_by_side.py --tiles 8 --frames 8 --workers 0 --modes nellie compat
python benchmarks/bench_side_by_side.py --tiles 1 2 --frames 30 --workers 0
python benchmarks/bench_side_by_side.py --tiles 4 --frames 8 --workers 0 --modes nellie compat
python benchmarks/bench_larger_than_memory.py --shape 16 768 768 --frames 40 --workers 2 --memory-limit 1GB --check-frames all
python benchmarks/bench_scaling.py --series frames workers
python benchmarks/profile_stages.py --tiles 1 --frames 30 --compat nellie
python benchmarks/report.py
