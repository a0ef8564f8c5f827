"""Write the benchmark tables of the README from ``benchmarks/results/*.json``.

One command::

    python benchmarks/report.py            # writes docs/benchmarks.md

Every row names the command that produced it; numbers are copied from the JSON files
as they are (nothing is re-measured here).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "benchmarks.md"
STAGES = ("flow", "reassign", "tracks")
STAGE_NAMES = {"flow": "flow (HuMomentTracking)", "reassign": "reassignment (VoxelReassigner)",
               "tracks": "tracks, all labels (LabelTracks)", "total": "**whole tracking stage**"}


def _load(pattern: str) -> list[dict]:
    out = []
    for p in sorted(RESULTS.glob(pattern)):
        try:
            d = json.loads(p.read_text())
        except ValueError:
            continue
        d["_file"] = p.name
        out.append(d)
    return out


def _num(x, fmt="{:.2f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def _run(d: dict | None) -> float | None:
    if not d or not d.get("ok"):
        return None
    return d.get("run_s")


def _cell_time(d: dict | None) -> str:
    if d is None:
        return "not run"
    if d.get("timed_out"):
        extra = f", {' and '.join(d['missing'])} not run" if d.get("missing") else ""
        return f"> {d['wall_s']:.0f} s (time-out{extra})"
    if not d.get("ok"):
        return "failed"
    return _num(d["run_s"])


def _cell_mem(d: dict | None) -> str:
    if not d or (not d.get("ok") and not d.get("timed_out")):
        return "–"
    return _num(d.get("peak_rss_mb"), "{:.0f}")


def _total(side: dict | None) -> dict | None:
    """Sum of stage times, max of stage peaks (each stage is its own process)."""
    if not side:
        return None
    parts = [side.get(s) for s in STAGES]
    if any(p is not None and p.get("timed_out") for p in parts):
        # a lower bound: the stages that ran plus the time-out of the ones that did not finish
        lower = sum(p["run_s"] if p.get("ok") else p.get("wall_s", 0) for p in parts if p is not None)
        missing = [s for s, p in zip(STAGES, parts) if p is None]
        return {"ok": False, "timed_out": True, "wall_s": lower, "lower_bound": True,
                "missing": missing,
                "peak_rss_mb": max(p.get("peak_rss_mb", 0) for p in parts if p is not None)}
    if any(p is None for p in parts):
        return None
    if not all(p.get("ok") for p in parts):
        bad = next(p for p in parts if not p.get("ok"))
        return {"ok": False, "timed_out": bad.get("timed_out"), "wall_s": bad.get("wall_s", 0)}
    cpu = [p.get("cpu_s") for p in parts]
    return {"ok": True, "run_s": sum(p["run_s"] for p in parts),
            "peak_rss_mb": max(p["peak_rss_mb"] for p in parts),
            "cpu_s": sum(cpu) if all(c is not None for c in cpu) else None}


def _ratio(a, b, fmt="{:.1f}x") -> str:
    if a is None or b is None or b == 0:
        return "–"
    return fmt.format(a / b)


def _speedup(nl: dict | None, cp: dict | None) -> str:
    if nl and nl.get("timed_out") and _run(cp):
        return f"> {nl['wall_s'] / _run(cp):.1f}x"
    return _ratio(_run(nl), _run(cp))


def _parity_cell(par: dict | None, stage: str) -> str:
    if not par:
        return "–"
    keys = {"flow": ["flow"], "reassign": ["labels_reassigned", "branches_reassigned"],
            "tracks": ["tracks"], "total": ["flow", "labels_reassigned", "branches_reassigned", "tracks"]}[stage]
    vals = [par.get(k) for k in keys]
    if any(v is None for v in vals):
        return "not checked"
    return "identical" if all(v.get("equal") for v in vals) else "**differs**"


def _cpu_cell(nl: dict | None, cp: dict | None) -> str:
    a = nl.get("cpu_s") if nl and nl.get("ok") else None
    b = cp.get("cpu_s") if cp and cp.get("ok") else None
    if a is None and b is None:
        return "–"
    out = f"{_num(a, '{:.1f}')} / {_num(b, '{:.1f}')}"
    return out + (f" ({a / b:.1f}x)" if a and b else "")


def side_by_side_table(rows: list[dict]) -> list[str]:
    out = ["| size (T x Z x Y x X) | stage | Nellie 1.0.4 s | Nellie peak MB | compat s | compat peak MB "
           "| default s | default peak MB | speed-up (Nellie / compat) | memory (compat / Nellie) "
           "| read floor s | compat / floor | compat ns per voxel | CPU s, Nellie / compat (user + system, "
           "with start-up) | parity (compat == Nellie) | command |",
           "|" + "---|" * 16]
    rows = sorted(rows, key=lambda d: (d["tiles"], d["frames"]))
    for d in rows:
        shape = " x ".join(str(s) for s in d["shape"])
        shape += "; ours: " + (f"LocalCluster {d['workers']} x 1 thread" if d.get("workers")
                               else "threaded scheduler, 2 threads")
        if d.get("nellie_earlier"):
            e = d["nellie_earlier"]
            shape += f"; Nellie: earlier run, {e.get('date_utc')}, load {_load_str(e.get('loadavg_at_start'))}"
        for stage in STAGES + ("total",):
            if stage == "total":
                nl, cp, df = _total(d.get("nellie")), _total(d.get("compat")), _total(d.get("default"))
                floors = [_run(d.get("read_floor", {}).get(s)) for s in STAGES]
                floor = sum(floors) if all(f is not None for f in floors) else None
            else:
                nl = d.get("nellie", {}).get(stage)
                cp = d.get("compat", {}).get(stage)
                df = d.get("default", {}).get(stage)
                floor = _run(d.get("read_floor", {}).get(stage))
            mem_ratio = "–"
            if nl and cp and nl.get("ok") and cp.get("ok"):
                mem_ratio = _ratio(cp["peak_rss_mb"], nl["peak_rss_mb"], "{:.2f}")
            out.append(
                f"| x{d['tiles']} ({shape}) | {STAGE_NAMES[stage]} | {_cell_time(nl)} | {_cell_mem(nl)} "
                f"| {_cell_time(cp)} | {_cell_mem(cp)} | {_cell_time(df)} | {_cell_mem(df)} "
                f"| {_speedup(nl, cp)} | {mem_ratio} | {_num(floor)} "
                f"| {_ratio(_run(cp), floor)} "
                f"| {_num(_run(cp) * 1e9 / d['voxels'] if _run(cp) else None, '{:.0f}')} "
                f"| {_cpu_cell(nl, cp)} "
                f"| {_parity_cell(d.get('parity'), stage)} "
                f"| `{d['command']}` |")
    return out


def _load_str(load) -> str:
    return "–" if not load else "/".join(f"{x:.1f}" for x in load)


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, checked against the rows measured on the threaded scheduler."""
    rows = sorted([d for d in rows if not d.get("workers")], key=lambda d: d["tiles"])
    if not rows:
        return []
    out = ["Targets of the issue against these figures (rows on the threaded scheduler):", ""]
    par = []
    for d in rows:
        p = d.get("parity") or {}
        checked = [k for k in ("flow", "labels_reassigned", "branches_reassigned", "tracks") if k in p]
        same = all(p[k].get("equal") for k in checked)
        par.append(f"x{d['tiles']}: {'identical' if same else 'DIFFERS'} ({', '.join(checked) or 'nothing'} checked)")
    out.append("- compat == Nellie in the same run: " + "; ".join(par) + ".")
    sp, mem = [], []
    for d in rows:
        nl, cp = _total(d.get("nellie")), _total(d.get("compat"))
        sp.append(f"x{d['tiles']} {_speedup(nl, cp)}" + (" (Nellie: earlier run)" if d.get("nellie_earlier") else ""))
        if nl and cp and cp.get("ok") and nl.get("peak_rss_mb"):
            mem.append(f"x{d['tiles']} {cp['peak_rss_mb']:.0f} vs {nl['peak_rss_mb']:.0f} MB")
    out.append("- whole stage faster than Nellie (10x wanted at x4): " + ", ".join(sp) + ".")
    out.append("- load average (1/5/15 min) at the start of each size: " + ", ".join(
        f"x{d['tiles']} {_load_str(d.get('machine', {}).get('loadavg_at_start'))} "
        f"({d.get('machine', {}).get('date_utc')}, commit `{d.get('machine', {}).get('commit')}`)" for d in rows) + ".")
    out.append("- peak memory below Nellie's (ours vs Nellie, largest stage): " + ", ".join(mem) + ".")
    by = {d["tiles"]: d for d in rows}
    if 4 in by and 8 in by:
        a, b = _total(by[4].get("compat")), _total(by[8].get("compat"))
        if a and b and a.get("ok") and b.get("ok"):
            per = []
            for st in STAGES:
                pa, pb = by[4]["compat"].get(st, {}), by[8]["compat"].get(st, {})
                if pa.get("ok") and pb.get("ok"):
                    per.append(f"{STAGE_NAMES[st].split(' (')[0]} {pa['peak_rss_mb']:.0f} -> {pb['peak_rss_mb']:.0f} MB "
                               f"({(pb['peak_rss_mb'] / pa['peak_rss_mb'] - 1) * 100:+.0f}%)")
            da, db = _total(by[4].get("default")), _total(by[8].get("default"))
            dflt = (f"; default mode: {da['peak_rss_mb']:.0f} -> {db['peak_rss_mb']:.0f} MB "
                    f"({(db['peak_rss_mb'] / da['peak_rss_mb'] - 1) * 100:+.0f}%)"
                    if da and db and da.get("ok") and db.get("ok") else "")
            out.append(f"- memory flat from x4 to x8 (within 20% wanted): {a['peak_rss_mb']:.0f} -> "
                       f"{b['peak_rss_mb']:.0f} MB ({(b['peak_rss_mb'] / a['peak_rss_mb'] - 1) * 100:+.0f}%)"
                       + (f"; per stage: {', '.join(per)}" if per else "") + dflt + ".")
    if 8 in by:
        floors = [_run(by[8].get("read_floor", {}).get(s)) for s in STAGES]
        if all(f for f in floors):
            parts = []
            for tag in ("compat", "default"):
                tot = _total(by[8].get(tag))
                if tot and tot.get("ok"):
                    parts.append(f"{tag} {tot['run_s'] / sum(floors):.1f}x ({tot['run_s']:.0f} s)")
            if parts:
                out.append(f"- within 3x of the read floor at x8 ({sum(floors):.1f} s to read the inputs, "
                           f"{3 * sum(floors):.1f} s wanted): " + ", ".join(parts) + "."
                           + search_floor_line(by[8]["frames"]))
    out.append("")
    return out


def search_floor_line(frames: int) -> str:
    """The compat lower bound of ``bench_search_floor.py`` at x8, as a sentence (empty without a result)."""
    p = RESULTS / f"search_floor_x8_t{frames}.json"
    if not p.exists():
        return ""
    try:
        d = json.loads(p.read_text())
        f = d["floor"]
        return (f" Compat cannot go below {f['compat_lower_bound_s']:.1f} s "
                f"({f['compat_lower_bound_x_read']:.1f}x the read floor): the cKDTree calls whose tie order is "
                f"Nellie's answer take {d['reassign']['wall_s']:.1f} s (reassignment) + "
                f"{d['tracks']['wall_s']:.1f} s (tracks) on {d['threads']} threads by themselves "
                f"(`{d['command']}`, commit `{d['machine'].get('commit')}`).")
    except (ValueError, KeyError, TypeError):
        return ""


def scaling_table(rows: list[dict]) -> list[str]:
    out = ["| series | T x Z x Y x X | voxels | scheduler | flow s | reassign s | tracks s | total s "
           "| ns per voxel | read floor s | total / floor | peak MB | command |",
           "|" + "---|" * 13]
    for d in sorted(rows, key=lambda d: (d.get("series", ""), d["voxels"], d["workers"])):
        st = d.get("stages_s") or {}
        tot = sum(st.get(s, 0) for s in STAGES) if st and all(s in st for s in STAGES) else None
        ns = tot / d["voxels"] * 1e9 if tot else None
        floor = d.get("read_floor_s")
        shape = " x ".join(str(s) for s in d["shape"])
        status = "" if d.get("ok") else (" (timeout)" if d.get("timed_out") else " (failed)")
        on = f"LocalCluster {d['workers']}" if d["workers"] else "threads (2)"
        out.append(f"| {d.get('series', '')}{status} | {shape} | {d['voxels']:,} | {on} "
                   f"| {_num(st.get('flow'))} | {_num(st.get('reassign'))} | {_num(st.get('tracks'))} "
                   f"| {_num(tot)} | {_num(ns, '{:.0f}')} | {_num(floor)} | {_ratio(tot, floor)} "
                   f"| {_num(d.get('peak_rss_mb'), '{:.0f}')} | `{d['command']}` |")
    return out


def ltm_table(rows: list[dict]) -> list[str]:
    out = ["| movie | input size (uncompressed) | workers x memory limit | completed | time s "
           "| throughput MB/s | voxels/s | peak RSS MB (tree) | largest worker MB | spilled GB "
           "| output equal to an unconstrained run | command |",
           "|" + "---|" * 12]

    def first(d, *names):
        return next((d[n] for n in names if d.get(n) is not None), None)

    for d in rows:
        done = first(d, "completed", "ok")
        spilled = d.get("spill_written_bytes")
        check = d.get("check") or {}
        equal = ("–" if not check else
                 f"{'yes' if check.get('equal') else 'NO'} ({check.get('frames_compared', '?')} frames)")
        out.append(
            f"| {' x '.join(str(s) for s in d['shape'])}{', tracks included' if d.get('tracks') else ''} "
            f"| {d['input_gb']:.1f} GB "
            f"| {d['workers']} x {d['memory_limit']} | {'yes' if done else 'no'} "
            f"| {_num(d.get('run_s'))} | {_num(d.get('mb_per_s'), '{:.1f}')} "
            f"| {_num(d.get('voxels_per_s'), '{:.3g}')} "
            f"| {_num(first(d, 'peak_rss_tree_mb', 'peak_rss_mb'), '{:.0f}')} "
            f"| {_num(first(d, 'peak_worker_rss_mb', 'peak_worker_mb'), '{:.0f}')} "
            f"| {_num(None if spilled is None else spilled / 1e9, '{:.1f}')} | {equal} | `{d['command']}` |")
    notes = [f"- `{d['command']}`: {d['note']}." for d in rows if d.get("note")]
    return out + ([""] + notes if notes else [])


def machine_line(rows: list[dict]) -> str:
    for d in rows:
        m = d.get("machine")
        if m:
            return (f"Measured on {m['cpus']} CPU cores, {m['ram_gb']} GB RAM ({m['platform']}, Python "
                    f"{m['python']}), commit `{m['commit']}`, {m['date_utc']}; the machine was shared "
                    f"with other work (load average at start {m.get('loadavg_at_start')}).")
    return ""


def render() -> str:
    sbs = _load("side_by_side_*.json")
    sc = _load("scaling_*.json")
    ltm = _load("larger_than_memory*.json")
    prof = _load("profile_*.json")
    L = [
        "# Benchmarks",
        "",
        "Side by side with Nellie 1.0.4 on the same inputs, scaling, a larger-than-memory run and a",
        "read floor. Every figure below was produced by the command in its row and is copied from",
        "`benchmarks/results/*.json` by `python benchmarks/report.py`. Times are seconds of the stage",
        "itself (graph building, compute and writing its output; not interpreter start, imports or",
        "cluster start, which are in the JSON as `setup_s`). Peak memory is the peak resident set of the",
        "whole process tree (dask workers included), sampled every 20 ms; for Nellie it includes the",
        "pages of its TIFF memory maps that it touched. Every measured command (Nellie's and ours) runs",
        "with `MALLOC_ARENA_MAX=2` (set by `benchmarks/_measure.py` unless already set): without it",
        "glibc gives each scheduler thread its own heap and keeps memory freed there, which added up to",
        "~50% to our peaks at 8 x 8 tiles; Nellie runs one thread and is unaffected. Set it the same way",
        "for your own runs on the threaded scheduler (`MALLOC_ARENA_MAX=2 dask-tracking run ...`).",
        "",
        "## Setup (once)",
        "",
        "```bash",
        "python benchmarks/nellie_env.py          # benchmarks/work/nellie-venv: nellie==1.0.4 --no-deps + core deps",
        "python benchmarks/make_inputs.py --tiles 1 2 --frames 30   # inputs in both layouts",
        "python benchmarks/make_inputs.py --tiles 4 8 --frames 8",
        "```",
        "",
        "Inputs are the yeast sample (`../shared/data/nellie_yeast.zarr`) tiled n x n in Y and X, label",
        "and branch ids offset per tile, written to `benchmarks/work/data/` as our zarr layout (chunks",
        "1 x 17 x 256 x 256) and as Nellie's OME-TIFF files (`nellie_output/nellie_necessities/`).",
        "Nellie runs in its own venv with `device=\"cpu\"` and its defaults; ours runs on the",
        "scheduler named in the row (`--workers 0`: dask's threaded scheduler with 2 threads;",
        "`--workers N`: a `LocalCluster` of N worker processes x 1 thread).",
        "",
        "## Side by side with Nellie 1.0.4",
        "",
    ]
    if sbs:
        L.append(machine_line(sbs))
        L.append("")
        L += targets(sbs)
        L += side_by_side_table(sbs)
        L += ["", "*compat*: `compat=\"nellie\"` (bit for bit Nellie); *default*: the fixed method. "
              "*read floor*: reading and decompressing every input chunk of the stage once on the same "
              "scheduler. Parity is checked in the same run, on every size: flow rows in order, reassigned "
              "object and branch labels voxel for voxel, tracks as row sets.", ""]
    else:
        L += ["(no results yet: run `python benchmarks/bench_side_by_side.py`)", ""]
    L += ["## Scaling", ""]
    if sc:
        L += scaling_table(sc) + [""]
    else:
        L += ["(no results yet: run `python benchmarks/bench_scaling.py`)", ""]
    L += ["## Larger than memory", ""]
    if ltm:
        L += ltm_table(ltm) + [""]
    rm = RESULTS / "reassign_memory.json"
    if rm.exists():
        try:
            r = json.loads(rm.read_text())
            L += [f"The reassignment stage alone was run larger than memory by `bench_reassign_memory.py` "
                  f"(another part of this README): a {r['movie_uncompressed_gb']:.1f} GB movie on "
                  f"{r['workers']} x {r['memory_limit_per_worker_bytes'] / 1e9:.0f} GB workers "
                  f"({r['movie_over_workers_memory']:.1f}x their memory) in {r['reassign_constrained_s']:.0f} s, "
                  f"peak worker RSS {r['peak_worker_rss_gb']:.2f} GB, output identical to an unconstrained run "
                  f"(`{r['command']}`).", ""]
        except (ValueError, KeyError):
            pass
    else:
        L += ["(no results yet: run `python benchmarks/bench_larger_than_memory.py`)", ""]
    if prof:
        L += ["## Hot spots", ""]
        for d in prof:
            L.append(f"`{d['command']}`, {d['stage']} ({d['wall_s']:.1f} s on the synchronous scheduler "
                     "under cProfile; top functions by own time, import machinery left out):")
            L.append("")
            L.append("| stage | function | own s | cumulative s |")
            L.append("|---|---|---|---|")
            noise = ("marshal.loads", "builtins.compile", "_docscrape", "yaml/", "startswith",
                     "builtins.exec", "_io.BufferedReader")
            for r in [r for r in d.get("top", []) if not any(n in r["func"] for n in noise)][:8]:
                L.append(f"| {d.get('stage', '')} | `{r['func']}` | {r['tottime']:.2f} | {r['cumtime']:.2f} |")
            L.append("")
    L += [
        "## Notes on the method",
        "",
        "- **Parity and the CPU.** NumPy's AVX-512 (SVML) `log10`/`power` differ from the C library in",
        "  the last bit for a few inputs, so Nellie 1.0.4's own flow costs depend on the CPU it runs on:",
        "  on this machine (AVX-512) Nellie gives 8 of the 1,464 flow rows of the sample a cost one",
        "  float16 step away from Nellie's reference outputs in `../shared/data`, and its tracks then",
        "  differ too. With NumPy's AVX-512 dispatch turned off (`NPY_DISABLE_CPU_FEATURES`, set by the",
        "  benchmark for the Nellie runs and written in each row's JSON) Nellie reproduces its reference",
        "  exactly, and that is what `compat=\"nellie\"` reproduces on any CPU. The parity column compares",
        "  against exactly the Nellie run timed in the same row. `--nellie-cpu-features native` runs",
        "  Nellie as NumPy chooses instead.",
        "- **Time.** The stage call itself for both tools; interpreter start, imports, Nellie's `ImInfo`",
        "  and our cluster start are left out of the table and kept in the JSON (`setup_s`, `wall_s`).",
        "  Each stage runs in its own process, reading its inputs (and the flow of the stage before)",
        "  from disk, so the whole-stage row is the sum of the stage rows and its peak is the largest",
        "  stage peak.",
        "- **Memory.** Nellie memory-maps uncompressed OME-TIFFs, so its resident set includes the file",
        "  pages it touched; ours reads compressed zarr chunks. `peak_anon_mb` in the JSON leaves",
        "  shared/file pages out.",
        "- **Shared machine.** The 2-core machine was shared with other work while these ran; the load",
        "  average at the start of each size is in the JSON. Re-run on an idle machine for cleaner figures.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "bash benchmarks/run_all.sh     # everything below, in order (about 1.5 h on 2 cores)",
        "python benchmarks/bench_side_by_side.py --tiles 1 2 --frames 30 --workers 0",
        "python benchmarks/bench_side_by_side.py --tiles 4 8 --frames 8 --workers 0 --modes nellie compat",
        "python benchmarks/bench_scaling.py --series frames workers",
        "python benchmarks/bench_larger_than_memory.py --shape 16 768 768 --frames 40 --workers 2 --memory-limit 1GB --check-frames all",
        "python benchmarks/profile_stages.py --tiles 1 --frames 30 --compat nellie",
        "python benchmarks/bench_search_floor.py --tiles 8 --frames 8",
        "python benchmarks/report.py",
        "```",
        "",
    ]
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DOC))
    a = p.parse_args(argv)
    text = render()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
