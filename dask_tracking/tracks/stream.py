"""``write_label_tracks``: label tracks written to a zarr store by the tasks themselves.

:func:`~dask_tracking.label_tracks` brings every row to the client; its size grows with
frames x labelled voxels. Here no process holds more than one seed chunk's rows (plus
one frame's label bits, 1/32 of an int32 frame):

1. each step of each piece of the walk (forward and backward, as :func:`walk_lazy`) writes
   its rows in the same task, with a flag "inside a label" looked up in the frame's bits
   (:mod:`.frame_mask`), to a part file ``_<name>_parts/<key>.npy`` inside the store
   folder (written once, read once, deleted: plain .npy, not zarr arrays);
2. one task per seed chunk reads its step parts back, orders and filters them as
   :func:`label_tracks` does (chunks hold contiguous track ids) and writes one
   segment (``compat="nellie"``: the backward rows of the chunk; its forward step parts
   are segments as written, already filtered);
3. a task takes the segments' row counts, creates ``<name>`` (K, 2+d) float64 and
   ``<name>_properties/<prop>`` (K,) at their final size, and one task per segment
   copies every output chunk whose first row lies in that segment (so each zarr chunk
   has one writer); a last task deletes the parts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import dask
import numpy as np

from ..config import resolve_compat
from ..dataset import InputError, TrackingDataset
from ..io.output import jsonable
from ..reads import after
from .frame_mask import FrameMask, frame_mask_lazy
from .label import default_rows, track_plan
from .walk import Emission, WalkParams, _advance, _listed, _piece_bounds, _reduce, _split, _stats

__all__ = ["write_label_tracks", "AUTO_CHUNK_ROWS", "AUTO_MIN_SEEDS", "OUTPUT_CHUNK_ROWS"]

#: ``chunk_size="auto"``: about this many rows per seed chunk. The default mode sorts a chunk's
#: rows in one task (its memory); compat writes its forward rows as they come (a chunk task
#: only sorts the backward rows), and fewer, larger chunks make its per-step global
#: reduction cheaper.
AUTO_CHUNK_ROWS = {"default": 1 << 17, "nellie": 1 << 20}

#: ``chunk_size="auto"``: at least this many seeds per chunk, so a long walk does not
#: multiply the chunks (the graph holds a task per chunk and step; at 40 frames and 2**17
#: rows a chunk would have 3,196 seeds, and the client's scheduler twice the tasks).
AUTO_MIN_SEEDS = 6144

#: Rows per chunk of the output arrays (as :func:`dask_tracking.io.output.write_rows`).
OUTPUT_CHUNK_ROWS = 1 << 16


def write_label_tracks(
    dataset: TrackingDataset,
    flow: Any,
    store: Any,
    *,
    name: str = "tracks",
    label: int | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
    min_track_num: int = 0,
    skip_coords: int = 1,
    max_distance_um: float = 0.5,
    compat: Any = None,
    labels: Any = None,
    chunk_size: Any = "auto",
    fallback_radius_um: Any = "auto",
    keep_outside: bool | None = None,
    compute: bool = True,
    **compute_kwargs: Any,
) -> Any:
    """Compute :func:`~dask_tracking.label_tracks` and write the rows to a zarr store, in bounded memory.

    The rows never come to the client: tasks write them. The store gets the layout of
    :func:`dask_tracking.run` (``tracks=True``): array ``<name>`` (K, 2+d) float64 rows
    ``track_id, t, (z), y, x`` (attrs ``columns``, ``units``, ``description``,
    ``parameters``) and one (K,) array per property in the group ``<name>_properties``.

    Parameters
    ----------
    dataset, flow, label, start_frame, end_frame, min_track_num, skip_coords, max_distance_um, \
compat, labels, fallback_radius_um, keep_outside
        As :func:`~dask_tracking.label_tracks`.
    store : str or Path
        A zarr v3 group on the local file system (created if missing; e.g. a run's
        output store). Existing arrays of the same names are replaced.
    name : str
        Name of the rows array (properties go to ``<name>_properties``).
    chunk_size : int or "auto"
        Seeds per chunk; ``"auto"``: :data:`AUTO_CHUNK_ROWS` // (frames walked + 1)
        seeds (2**17 rows in the default mode, 2**20 with compat), so a task holds
        a bounded number of rows whatever the number of frames, and at least
        :data:`AUTO_MIN_SEEDS` (6,144), so a long walk does not multiply the tasks.
    compute : bool
        False: return a Delayed (computing it writes and gives the number of rows).
    **compute_kwargs
        Passed to :func:`dask.compute` (e.g. ``scheduler=``).

    Returns
    -------
    int or Delayed
        The number of rows written.

    Notes
    -----
    The default mode gives exactly :func:`label_tracks`' arrays (rows sorted by track,
    t). ``compat="nellie"`` gives the same rows in the same order except inside a track's
    backward rows: Nellie sorts them by track id with an unstable sort; here each seed
    chunk sorts its own (the same order as :func:`label_tracks` when one chunk holds all
    the seeds). The forward rows keep Nellie's order (by step, then by seed).
    """
    path = _store_path(store)
    if not isinstance(name, str) or not name or "/" in name or name.startswith((".", "__")):
        raise InputError(f"name must be a non-empty array name without '/' (e.g. 'tracks'), got {name!r}")
    plan = track_plan(dataset, flow, label=label, start_frame=start_frame, end_frame=end_frame,
                      min_track_num=min_track_num, skip_coords=skip_coords,
                      max_distance_um=max_distance_um, compat=compat, labels=labels, chunk_size=chunk_size,
                      fallback_radius_um=fallback_radius_um, keep_outside=keep_outside,
                      rows_per_chunk=AUTO_CHUNK_ROWS["nellie" if resolve_compat(compat) else "default"],
                      min_seeds=AUTO_MIN_SEEDS)
    d, mode = plan.ndim, plan.mode
    parts = f"_{name}_parts"
    columns = ["track_id", "t", *dataset.axes[1:].lower()]
    props: list[tuple[str, str]] = [("frame_num", "int64")]
    if mode is None:
        props.append(("label", "int64"))
        if plan.default_kwargs()["reasons"]:
            props += [("outside", "int8"), ("end_reason", "int8")]
    prep = dask.delayed(_prepare, pure=False)(path, parts)

    masks: dict[int, Any] = {}

    def mask(t: int, gate: Any = None) -> Any:
        """Frame t's mask; the first request's ``gate`` (a Delayed) orders its reads."""
        if not 0 <= t < plan.lab.shape[0]:   # a step past the last frame: no row is inside
            return None
        if t not in masks:
            masks[t] = frame_mask_lazy(plan.lab, t, gate)
        return masks[t]

    # each chunk's seeds enter the graph once (the walk's pieces and the chunk task refer to it)
    seed_chunks = [dask.delayed(np.asarray(c, dtype=np.float64)) for c in plan.chunks]
    seg_keys: list[str] = []
    seg_counts: list[Any] = []
    chunk_steps: dict[str, list[list[tuple[str, Any]]]] = {}   # per direction, per chunk: (key, count)
    walk_order: dict[str, list[tuple[str, Any]]] = {}            # per direction: by step, then by seed
    if len(plan.seeds):
        for direction, frames, anchors, params in (("fw", plan.fw_frames, plan.fw_anchors, plan.fw_params),
                                                   ("bw", plan.bw_frames, plan.bw_anchors, plan.bw_params)):
            filtered = mode == "nellie" and direction == "fw"   # final segments as written
            per_chunk: list[list[tuple[str, Any]]] = [[] for _ in plan.chunks]
            walk_order[direction] = []
            for c, key, n in _walk_writing(plan, seed_chunks, frames, anchors, params, mask, path, parts,
                                           direction, filtered, prep):
                per_chunk[c].append((key, n))
                walk_order[direction].append((key, n))
            chunk_steps[direction] = per_chunk
        if mode == "nellie":
            for c in range(len(plan.chunks)):
                if chunk_steps["bw"][c]:
                    n = dask.delayed(_write_chunk_nellie_bw, pure=False)(
                        path, parts, f"chunk_{c}", [k for k, _ in chunk_steps["bw"][c]], d,
                        _listed(n for _, n in chunk_steps["bw"][c]))
                    seg_keys.append(f"chunk_{c}")
                    seg_counts.append(n)
            for key, n in walk_order["fw"]:   # Nellie's forward order: by step, then by seed
                seg_keys.append(key)
                seg_counts.append(n)
        else:
            kw = plan.default_kwargs()
            for c, seeds in enumerate(plan.chunks):
                off = plan.offsets[c]
                keys = [k for k, _ in chunk_steps["fw"][c] + chunk_steps["bw"][c]]
                deps = _listed(n for _, n in chunk_steps["fw"][c] + chunk_steps["bw"][c])
                n = dask.delayed(_write_chunk_default, pure=False)(
                    path, parts, f"chunk_{c}", keys, seed_chunks[c],
                    plan.seed_labels[off:off + len(seeds)], off + plan.min_track_num, plan.start, d, kw,
                    deps, prep)
                seg_keys.append(f"chunk_{c}")
                seg_counts.append(n)
    attrs = {"columns": columns, "units": {"track_id": "id", "t": "frame", "position": "voxel"},
             "description": "napari tracks layer rows", "parameters": jsonable(plan.attrs)}
    layout = dask.delayed(_layout, pure=False)(path, name, _listed(seg_counts), d, props, attrs, prep)
    copies = [dask.delayed(_copy_segment, pure=False)(path, parts, name, i, seg_keys, layout, d, props)
              for i in range(len(seg_keys))]
    done = dask.delayed(_finish, pure=False)(path, parts, layout, _listed(copies))
    if not compute:
        return done
    return int(dask.compute(done, **compute_kwargs)[0])


def _walk_writing(plan: Any, seed_chunks: list[Any], frames: list[int], anchors: dict[int, Any],
                  params: WalkParams, mask: Any, path: str, parts: str, direction: str, filtered: bool,
                  prep: Any):
    """The walk of :func:`~dask_tracking.tracks.walk.walk_lazy`, each step writing its rows itself.

    Yields ``(chunk, part key, Delayed row count)`` per step and piece, by step then by piece
    (pieces as ``walk_lazy``'s, in seed order). The emission never leaves the task that computes it, so
    the scheduler never holds more than the walking positions of each piece.
    """
    bounds = _piece_bounds(plan.chunks)
    pieces = [(c, a, b) for c, bd in enumerate(bounds) for a, b in zip(bd[:-1], bd[1:])]
    state: list[Any] = [dask.delayed(_rows, pure=True)(seed_chunks[c], a, b) for c, a, b in pieces]
    starts = [plan.offsets[c] + a for c, a, _ in pieces]     # global index of each piece's first seed
    d = plan.ndim
    for s, t in enumerate(frames):
        nxt = t + 1 if params.forward else t - 1
        first = mask(frames[0]) if (params.compat == "nellie" and s == 0) else None
        # the mask of the frame this step moves into waits for every piece's previous step: the
        # pieces advance together and about two masks are alive, not one per frame walked
        gate = dask.delayed(after, pure=True)(*state) if s else None
        ahead = mask(nxt, gate)
        glob = None
        stats = [None] * len(state)
        if params.compat == "nellie":   # per-step global stats shared by every piece (Q-A / Q-B)
            stats = [dask.delayed(_stats, pure=True)(anchors[t], p, params) for p in state]
            glob = dask.delayed(_reduce, pure=True)(*stats)
        emit_start = params.compat == "nellie" and s == 0
        new_state = []
        for i, ((c, _, _), p, off, st) in enumerate(zip(pieces, state, starts, stats)):
            key = f"{direction}_{s}_{i}"
            # every Delayed is a top-level argument: dask.delayed re-optimises the whole graph of
            # a Delayed nested in a container, which made building this graph quadratic in the steps
            r = dask.delayed(_step_and_write, pure=False)(
                p, anchors[t], params, glob, off, emit_start, st, ahead, first, prep,
                (path, f"{parts}/{key}", off + plan.min_track_num, nxt, frames[0], d, filtered))
            new_state.append(dask.delayed(_split, pure=True)(r, 0))
            yield c, key, dask.delayed(_split, pure=True)(r, 1)
        state = new_state


def _rows(a: np.ndarray, start: int, stop: int) -> np.ndarray:
    return a[start:stop]


def _step_and_write(pos: np.ndarray, anchors: Any, params: WalkParams, glob: Any, offset: int,
                    emit_start: bool, stats: Any, mask_next: Any, mask_first: Any, prep: Any,
                    write: tuple) -> tuple[np.ndarray, int]:
    """One step of one piece (:func:`~dask_tracking.tracks.walk._advance`), its rows written at once.

    ``write``: (path, part key, first track id, next frame, first frame, d, filtered).
    """
    new, em = _advance(pos, anchors, params, glob, offset, emit_start, stats)
    path, key, gid0, nxt, first_frame, d, filtered = write
    return new, _write_step(path, key, em, gid0, nxt, first_frame, mask_next, mask_first, d, filtered, prep)


# ----------------------------------------------------------------- checks
def _store_path(store: Any) -> str:
    if isinstance(store, (str, os.PathLike)) and str(store).strip():
        p = Path(os.fspath(store)).expanduser().absolute()
        if not p.parent.is_dir():
            raise InputError(f"store {str(store)!r}: the folder {str(p.parent)!r} does not exist")
        if p.exists() and not p.is_dir():
            raise InputError(f"store {str(store)!r} is a file, not a zarr store (a folder)")
        return str(p)
    raise InputError(f"store must be a path to a zarr store (e.g. 'out.zarr'), got {store!r}")


# ----------------------------------------------------------------- tasks
def _open(path: str, mode: str = "a") -> Any:
    import zarr

    return zarr.open_group(path, mode=mode, zarr_format=3 if mode in ("a", "w") else None)


def _prepare(path: str, parts: str) -> str:
    """Create the store if missing and an empty parts folder inside it."""
    _open(path)
    folder = os.path.join(path, parts)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return parts


def _part_file(path: str, key: str) -> str:
    return os.path.join(path, key + ".npy")


def _put(path: str, key: str, rows: np.ndarray) -> int:
    """Write one part (a plain .npy file: parts are written once, read once, then deleted)."""
    np.save(_part_file(path, key), rows, allow_pickle=False)
    return int(len(rows))


def _get(path: str, key: str, mmap: bool = False) -> np.ndarray:
    return np.load(_part_file(path, key), mmap_mode="r" if mmap else None, allow_pickle=False)


def _drop(path: str, parts: str, keys: list[str]) -> None:
    for k in keys:
        try:
            os.remove(_part_file(path, f"{parts}/{k}"))
        except FileNotFoundError:
            pass


def _write_step(path: str, key: str, em: Emission, gid0: int, nxt: int, first_frame: int,
                mask_next: FrameMask | None, mask_first: FrameMask | None, d: int, filtered: bool,
                _prep: Any) -> int:
    """Write the rows of one step of one piece of a seed chunk; return how many were written.

    Rows as :func:`~dask_tracking.tracks.label.emission_rows` (per point: its start row
    when the step emits one, then its moved row). ``filtered``: only the rows inside a
    label, (m, 2+d); else every row with an inside flag as last column, (m, 3+d).
    """
    m = len(em.index)
    gid = (em.index + gid0).astype(np.float64)
    moved = np.column_stack([gid, np.full(m, float(nxt)), em.moved]) if m else np.zeros((0, 2 + d))
    inside = _lookup(mask_next, em.moved)
    if m and em.start is not None:
        first = np.column_stack([gid, np.full(m, float(first_frame)), em.start])
        rows = np.stack([first, moved], axis=1).reshape(-1, 2 + d)
        inside = np.stack([_lookup(mask_first, em.start), inside], axis=1).ravel()
    else:
        rows = moved
    if filtered:
        out = rows[inside]
    else:
        out = np.column_stack([rows, inside.astype(np.float64)])
    return _put(path, key, np.ascontiguousarray(out, dtype=np.float64))


def _lookup(mask: FrameMask | None, pos: np.ndarray) -> np.ndarray:
    return np.zeros(len(pos), bool) if mask is None else mask.lookup(pos)


def _read_steps(path: str, parts: str, keys: list[str], d: int) -> np.ndarray:
    arrs = [_get(path, f"{parts}/{k}") for k in keys]
    return np.concatenate(arrs + [np.zeros((0, 3 + d))])


def _write_chunk_nellie_bw(path: str, parts: str, key: str, keys: list[str], d: int, _deps: Any) -> int:
    """compat: a chunk's backward rows reversed, sorted by track id (Nellie's sort), filtered."""
    rows = _read_steps(path, parts, keys, d)[::-1]
    order = np.argsort(rows[:, 0].astype(np.int64))  # Nellie's (unstable) sort by track id
    rows = rows[order]
    n = _put(path, f"{parts}/{key}", np.ascontiguousarray(rows[rows[:, -1] > 0, :2 + d]))
    _drop(path, parts, keys)
    return n


def _write_chunk_default(path: str, parts: str, key: str, keys: list[str], seeds: np.ndarray,
                         seed_labels: np.ndarray, gid0: int, start: int, d: int, kw: dict,
                         _deps: Any, _prep: Any) -> int:
    """Default mode: a chunk's seeds and walked rows sorted by (track, t), filtered, with properties."""
    ids = np.arange(len(seeds), dtype=np.float64) + gid0
    first = np.column_stack([ids, np.full(len(seeds), float(start)), seeds,
                             (seed_labels > 0).astype(np.float64)])
    data = np.concatenate([first, _read_steps(path, parts, keys, d)])
    walked = data[np.lexsort((data[:, 1], data[:, 0]))]
    del data
    inside = walked[:, -1] > 0
    walked = np.ascontiguousarray(walked[:, :2 + d])
    rows, props = default_rows(walked, inside, seed_labels, gid0, **kw)
    del walked, inside
    cols = [rows] + [props[k].astype(np.float64)[:, None] for k in props if k != "frame_num"]
    n = _put(path, f"{parts}/{key}", np.ascontiguousarray(np.concatenate(cols, axis=1)))
    _drop(path, parts, keys)
    return n


def _layout(path: str, name: str, counts: list[int], d: int, props: list[tuple[str, str]], attrs: dict,
            _prep: Any) -> tuple[list[int], int, int]:
    """Create the output arrays at their final size; return (segment offsets, rows, rows per chunk)."""
    offsets = [0] + [int(x) for x in np.cumsum([int(c) for c in counts])]
    total = offsets[-1]
    rows_per_chunk = max(min(total, OUTPUT_CHUNK_ROWS), 1)
    g = _open(path)
    z = g.create_array(name, shape=(total, 2 + d), dtype="float64", chunks=(rows_per_chunk, 2 + d),
                       overwrite=True)
    z.attrs.update(attrs)
    if f"{name}_properties" in g:   # properties of an earlier run must not linger
        del g[f"{name}_properties"]
    pg = g.create_group(f"{name}_properties")
    for prop, dtype in props:
        pg.create_array(prop, shape=(total,), dtype=dtype, chunks=(rows_per_chunk,), overwrite=True)
    pg.attrs["description"] = "one array per property of the tracks rows"
    return offsets, total, rows_per_chunk


def _copy_segment(path: str, parts: str, name: str, i: int, seg_keys: list[str],
                  layout: tuple[list[int], int, int], d: int, props: list[tuple[str, str]]) -> int:
    """Write every output chunk whose first row lies in segment ``i`` (reading on into later segments)."""
    import zarr

    offsets, total, step = layout
    lo, hi = offsets[i], offsets[i + 1]
    first_chunk = -(-lo // step)
    written = 0
    out = prop_arrays = None
    for k in range(first_chunk, total // step + 1):
        a = k * step
        if a >= hi or a >= total:
            break
        b = min(a + step, total)
        pieces = []
        j = i
        while offsets[j] < b:
            s0, s1 = max(a, offsets[j]), min(b, offsets[j + 1])
            if s1 > s0:
                part = _get(path, f"{parts}/{seg_keys[j]}", mmap=True)
                pieces.append(np.array(part[s0 - offsets[j]:s1 - offsets[j]]))
                del part
            j += 1
        block = np.concatenate(pieces)
        if out is None:
            out = zarr.open_array(path, path=name, mode="r+")
            prop_arrays = {p: zarr.open_array(path, path=f"{name}_properties/{p}", mode="r+") for p, _ in props}
        out[a:b] = block[:, :2 + d]
        for col, (p, dtype) in enumerate(props):
            v = block[:, 1] if p == "frame_num" else block[:, 2 + d + col - 1]
            prop_arrays[p][a:b] = v.astype(dtype)
        written += b - a
    return written


def _finish(path: str, parts: str, layout: tuple[list[int], int, int], copies: list[int]) -> int:
    shutil.rmtree(os.path.join(path, parts), ignore_errors=True)
    total = layout[1]
    if sum(copies) != total:   # pragma: no cover - a bug, never user input
        raise RuntimeError(f"wrote {sum(copies)} track rows of {total}")
    return int(total)
