"""``run``: the whole tracking job as one lazy graph, written to one output store.

Order of work:

1. checks (arguments, dataset structure, output location) before anything is
   computed or written;
2. the flow table: computed and persisted first (small, and reassignment's halo
   depends on its largest displacement), one graph per window of frames (each pair
   needs only its two frames), written to ``flow``;
3. optionally the tracks (their tasks write the rows);
4. the label chains, one ``compute`` per window of frames (:mod:`dask_tracking.windows`:
   the graph of a window does not grow with the movie): per frame, the reassigned
   labels and branches and the voxel matches of the pair ending at that frame, then
   the frame's done marker; at the end of a window, the chains' state.

A resumed run reads the stored flow, restarts the chains from the end of the last
finished window (from frame 0 when none finished), and writes only the frames not
marked done.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import dask
from dask.base import tokenize
import dask.array as da
import numpy as np

from .config import gate_radius_um, resolve_compat
from .dataset import InputError, TrackingDataset, validate
from .flow.table import FlowTable
from .io import output as out_store
from .reads import after
from .windows import ChainState, drop_old_ghosts, ghosts_path
from .windows import window_frames as _frames_per_window

__all__ = ["RunResult", "run", "open_source"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a run wrote.

    Attributes
    ----------
    output : Path
        The output zarr store.
    n_frames : int
        Frames of the movie (T).
    flow_rows : int
        Rows of the flow table.
    labelled_voxels : tuple of int
        Per frame, voxels with a reassigned object label (> 0); frames not
        computed by this call are read back from the store.
    frames_computed : tuple of int
        Frames written by this call (all of them unless resumed).
    tracks_rows : int or None
        Rows of the tracks table, None without ``tracks=True``.
    resumed : bool
    seconds : float
        Wall time of the call.
    """

    output: Path
    n_frames: int
    flow_rows: int
    labelled_voxels: tuple[int, ...]
    frames_computed: tuple[int, ...]
    tracks_rows: int | None = None
    resumed: bool = False
    seconds: float = 0.0
    compat: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def summary(self) -> str:
        """A few lines for a terminal."""
        lv = self.labelled_voxels
        lines = [
            f"output: {self.output}",
            f"frames: {self.n_frames} ({len(self.frames_computed)} computed"
            f"{', resumed' if self.resumed else ''})",
            f"flow rows: {self.flow_rows}",
            f"labelled voxels (reassigned): frame 0 {lv[0] if lv else 0}, last frame "
            f"{lv[-1] if lv else 0}, total {sum(lv)}",
        ]
        if self.tracks_rows is not None:
            lines.append(f"track rows: {self.tracks_rows}")
        lines.append(f"time: {self.seconds:.1f} s, compat={self.compat or 'fixed'}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- inputs
def open_source(source: Any, scale: Any = None, *, compat: str | None = None) -> TrackingDataset:
    """A TrackingDataset from a dataset, a zarr/OME-Zarr/Nellie source, or a raw movie.

    A raw movie (as recognised by ``dask_tracking.io.raw.is_raw_source``) goes
    through :func:`dask_tracking.prepare` first.
    """
    if isinstance(source, TrackingDataset):
        return source if scale is None else source.replace(scale=source.scale.coerce(scale, source.axes))
    from .io.open import open_dataset

    if isinstance(source, (str, os.PathLike)):
        try:
            from .io.raw import is_raw_source
        except ImportError:
            is_raw_source = None
        if is_raw_source is not None and is_raw_source(source) and not _partial_tracking_zarr(source):
            from . import prepare

            log.info("preparing the raw movie %s (compat=%s)", source, compat or "fixed")
            return prepare(source, scale, compat=compat)
    return open_dataset(source, scale)


def _partial_tracking_zarr(path: Any) -> bool:
    """True for a zarr group holding some tracking volume besides ``raw`` (a broken dataset, not a movie)."""
    from pathlib import Path

    from .dataset import VOLUMES

    p = Path(os.fspath(path))
    if not (p.is_dir() and (p / "zarr.json").exists()):
        return False
    try:
        import zarr

        names = set(zarr.open_group(str(p), mode="r").array_keys())
    except Exception:
        return False
    return bool(names & (set(VOLUMES) - {"raw"}))


def _check_distance(max_distance_um: Any) -> float:
    gate_radius_um(max_distance_um, 1.0)
    return float(max_distance_um)


def _parameters(ds: TrackingDataset, compat: str | None, max_distance_um: float, tracks: bool,
                track_label: Any, track_start_frame: int, flow_mode: str) -> dict:
    return {
        "compat": compat or "fixed",
        "max_distance_um": max_distance_um,
        "flow_mode": flow_mode,
        "shape": list(ds.shape),
        "axes": ds.axes,
        "scale": ds.scale.as_dict(),
        "tracks": bool(tracks),
        "track_label": track_label,
        "track_start_frame": int(track_start_frame),
        "reassign": {"max_distance_um": 0.5, "note": "FlowInterpolator default, as Nellie's VoxelReassigner"},
    }


def _attrs(ds: TrackingDataset, params: dict) -> dict:
    import dask as _dask
    import zarr

    from . import __version__

    return {
        "format": out_store.OUTPUT_FORMAT,
        "producer": "dask-tracking",
        "version": __version__,
        "parameters": params,
        "compat": params["compat"],
        "input": {
            "source": str(ds.source) if ds.source is not None else None,
            "shape": list(ds.shape),
            "axes": ds.axes,
            "scale": ds.scale.as_dict(),
            "dtypes": {n: str(a.dtype) for n, a in ds.arrays().items()},
        },
        "software": {"dask": _dask.__version__, "zarr": zarr.__version__, "numpy": np.__version__},
        "status": "running",
    }


# ------------------------------------------------------------------------ execution
def _client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _compute(objs: Sequence[Any], client: Any, progress: bool) -> list:
    """Compute ``objs`` together: on ``client`` when given, else dask's current scheduler."""
    objs = list(objs)
    if not objs:
        return []
    if client is not None:
        futures = client.compute(objs)
        if progress:
            from distributed import progress as show_progress

            show_progress(futures, notebook=False)
        return client.gather(futures)
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(dt=1.0):
            return list(dask.compute(*objs))
    return list(dask.compute(*objs))


# ------------------------------------------------------------------------ task bodies
def _write_matches(path: str, t: int, matches: Any, stopped: Any = False) -> int:
    import zarr

    from .backend import to_host

    m = np.asarray(to_host(matches))
    g = zarr.open_group(str(path), path="voxel_matches", mode="a")
    z = g.create_array(str(int(t)), shape=m.shape, dtype=m.dtype,
                       chunks=(max(min(m.shape[0], 1 << 18), 1),) + tuple(m.shape[1:]), overwrite=True)
    if m.size:
        z[...] = m
    z.attrs.update({"pair": [int(t), int(t) + 1], "columns": ["source", "target"],
                    "stopped": bool(stopped)})
    return int(m.shape[0])


def _frame_writes(path: str, group: Any, frames: list[int], labels: da.Array, reassigned: Any,
                  offset: int = 0) -> list:
    """One Delayed per frame: write its reassigned labels, branches and voxel matches, then mark it done.

    ``frames`` index the arrays (a window of the movie); frame ``t`` is written as frame
    ``offset + t`` of the store.

    The arrays are optimised together once, and the write tasks refer to their chunk keys, so
    the reassignment chain (frame t needs frame t-1) runs once for all frames. Wrapping each
    frame's slice in its own ``da.store``/``delayed`` call would optimise each slice on its own,
    with fused (renamed) keys, and rerun the chain up to every frame.
    """
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    arrays = {}
    for name, arr in (("labels_reassigned", labels), ("branches_reassigned", reassigned.branches)):
        target = group[name]
        arrays[name] = arr.astype(np.int32).rechunk((1,) + tuple(target.chunks[1:]))
    spatial = tuple(range(1, labels.ndim))
    counts = da.count_nonzero(labels.rechunk({0: 1}), axis=spatial)
    names = list(arrays)
    optimized = dask.optimize(*[arrays[n] for n in names], counts)
    opt = dict(zip(names, optimized[:-1]))
    counts = optimized[-1]
    tok = tokenize(path, [a.name for a in optimized], frames, offset)
    write_n, done_n = f"write-frame-{tok}", f"finish-frame-{tok}"
    deps: list[Any] = list(optimized)
    dsk: dict = {}
    stopped = getattr(reassigned, "stopped", None)
    blocks = {}     # per array: (block index, its spatial region) of every block of a frame
    for name in names:
        bounds = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in opt[name].chunks[1:]]
        blocks[name] = [(idx, tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, idx)))
                        for idx in np.ndindex(*opt[name].numblocks[1:])]
    for t in frames:
        keys = []
        g = offset + t
        for name in names:
            arr = opt[name]
            for idx, spatial_region in blocks[name]:
                region = (slice(g, g + 1),) + spatial_region
                key = (write_n, name, t, *idx)
                dsk[key] = (_store_block, path, name, region, (arr.name, t, *idx))
                keys.append(key)
        if t >= 1:
            m = reassigned.matches[t - 1]
            deps.append(m)
            stop = stopped[t - 1] if stopped is not None else False
            if isinstance(stop, Delayed):
                deps.append(stop)
                stop = stop.key
            key = (write_n, "voxel_matches", t)
            dsk[key] = (_write_matches, path, g - 1, m.key, stop)
            keys.append(key)
        dsk[(done_n, t)] = (_finish_frame, path, g, (counts.name, t), keys)
    layers = HighLevelGraph.from_collections(done_n, dsk, dependencies=deps)
    return [Delayed((done_n, t), layers, layer=done_n) for t in frames]


def _store_block(path: str, name: str, region: tuple, block: Any) -> None:
    """Write one block of a (T, ...) output array into ``path/name`` at ``region``."""
    import zarr

    from .backend import to_host

    z = zarr.open_array(str(path), path=name, mode="r+")
    z[region] = np.asarray(to_host(block))


def _finish_frame(path: str, t: int, count: Any, *deps: Any) -> int:
    """Mark frame ``t`` done (after ``deps``, its writes) and return its labelled-voxel count."""
    out_store.mark_frame_done(path, t)
    return int(np.asarray(count).sum())     # a 0-d count or a (1,) block of per-frame counts


def _resume_state(group: Any, n_frames: int) -> int:
    """First frame to compute: the first one not marked done."""
    done = out_store.frames_done(group)
    if "flow" not in group or not group.attrs.get("flow_done", False):
        return 0
    not_done = np.flatnonzero(~done)
    return int(not_done[0]) if len(not_done) else n_frames


def window_frames_checked(window: Any) -> None:
    """Raise InputError for a bad ``window_frames`` (before any work)."""
    _frames_per_window(2, 1, window)


def _frames_per_graph(ds: TrackingDataset, window: Any) -> int:
    """Frames per window for ``ds`` (:func:`dask_tracking.windows.window_frames`)."""
    n_blocks = int(np.prod([len(c) for c in ds.labels.chunks[1:]]))
    W = _frames_per_window(ds.n_frames, n_blocks, window)
    log.info("windows of %d frames (%d blocks a frame)", W, n_blocks)
    return W


def _flow_windows(ds: TrackingDataset, client: Any, progress: bool, W: int, **kwargs: Any) -> tuple:
    """The flow rows of every frame pair, one graph per window of ``W`` frames (each pair needs
    only its two frames, so the windows give the rows of one graph; the first column is the
    movie's frame index). Returns the last window's lazy table (for its attributes) and the rows."""
    from .flow import estimate_flow

    T = ds.n_frames
    pairs: list = []
    lazy = None
    for a in range(0, max(T - 1, 1), max(W - 1, 1)):
        b = min(a + W - 1, T - 1)
        lazy = estimate_flow(ds.isel(t=slice(a, b + 1)) if (a, b) != (0, T - 1) else ds, **kwargs)
        if len(lazy.pairs):
            log.info("flow: frames %d-%d", a, b)
        for p in _compute(list(lazy.pairs), client, progress):
            p = np.array(p, dtype=np.float64).reshape(-1, lazy.ncols)
            p[:, 0] += a                         # the window's pair index -> the movie's
            pairs.append(p)
    return lazy, pairs


def _write_stopped(path: str, t: int, shape: tuple) -> int:
    """Frame ``t`` after Nellie's break: its labels stay 0 (the arrays' fill value), empty matches."""
    from .reassign.vote import match_dtype

    _write_matches(path, t - 1, np.zeros((0, 2, len(shape)), dtype=match_dtype(shape)), True)
    out_store.mark_frame_done(path, t)
    return 0


def _chain_windows(ds: TrackingDataset, flow: FlowTable, group: Any, path: str, compat: Any, acc: Any,
                   first: int, resumed: bool, client: Any, progress: bool, W: int) -> tuple[dict, list]:
    """Compute and write frames ``first ..`` of the label chains, one window of ``W`` frames at a time.

    Returns the labelled-voxel count of each frame written, and those frames.
    """
    from .reassign import reassign_labels

    T = ds.n_frames
    state = ChainState.load(group) if resumed else None
    if state is not None and state.frame >= first:
        state = None                      # not a finished window's end: start again from frame 0
    a = 0 if state is None else state.frame
    counts: dict = {}
    written: list[int] = []
    log.info("label chains: from frame %d", a)
    while True:
        if state is not None and state.stopped:     # Nellie's loop broke before: nothing more to compute
            for t in range(max(a + 1, first), T):
                counts[t] = _write_stopped(path, t, ds.spatial_shape)
                written.append(t)
            break
        b = min(a + W - 1, T - 1)
        win = ds.isel(t=slice(a, b + 1))
        fwin = flow.window(a, b + 1)
        init = None
        if state is not None:
            init = (0, da.from_zarr(group["labels_reassigned"])[a], da.from_zarr(group["branches_reassigned"])[a])
        reassigned = reassign_labels(win, fwin, compat=compat, initial=init,
                                     id_base=state.id_base if state is not None else None,
                                     objects=not acc.object_vote)
        out_labels = reassigned.labels
        ov = None
        if acc.object_vote:
            from .reassign.object_vote import object_vote_window

            ov_init = None
            if state is not None:
                ghosts = da.from_zarr(group[state.ghosts]) if state.ghosts else None
                ov_init = (init[1], state.next_id, ghosts)
            ov = object_vote_window(win.labels, fwin, ds.spacing, initial=ov_init)
            out_labels = ov.identities
        local = [t for t in range(b - a + 1) if (t > 0 or state is None) and a + t >= first]
        objs = _frame_writes(path, group, local, out_labels, reassigned, offset=a)
        extra: dict = {}
        if a < b < T - 1:       # the state the next window starts from
            if reassigned.next_id_base is not None:
                extra["id_base"] = reassigned.next_id_base
            if reassigned.stopped:
                extra["stopped"] = reassigned.stopped[-1]
            if ov is not None and ov.next_id is not None:
                extra["next_id"] = ov.next_id
            if ov is not None and ov.ghosts is not None:
                gz = group.create_array(ghosts_path(b), shape=ov.ghosts.shape, dtype="int32",
                                        chunks=tuple(group["labels_reassigned"].chunks[1:]), fill_value=0,
                                        overwrite=True)
                # (a Delayed: dask 2026.8 returns da.store's lazy result, an Array, after every Delayed
                # in dask.compute's results, whatever the order it was given in)
                extra["ghosts"] = dask.delayed(after, pure=False)(
                    da.store(ov.ghosts.rechunk(gz.chunks), gz, lock=False, compute=False))
        log.info("label chains: frames %d-%d", a, b)
        res = _compute(objs + list(extra.values()), client, progress)
        counts.update(zip((a + t for t in local), (int(c) for c in res[:len(objs)])))
        written.extend(a + t for t in local)
        got = dict(zip(extra, res[len(objs):]))
        if b >= T - 1:
            break
        state = ChainState(b, tuple(got["id_base"]) if "id_base" in got else None, got.get("next_id"),
                           ghosts_path(b) if "ghosts" in got else None, bool(got.get("stopped", False)))
        state.save(group)
        drop_old_ghosts(group, state.ghosts)
        a = b
    return counts, written


# ----------------------------------------------------------------------------- run
def run(
    dataset: Any,
    output: Any,
    *,
    compat: Any = None,
    client: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    tracks: bool = False,
    max_distance_um: float = 1.0,
    flow_mode: str = "auto",
    track_label: int | None = None,
    track_start_frame: int = 0,
    scale: Any = None,
    flow: FlowTable | None = None,
    progress: bool = False,
    gpu: bool = False,
    accuracy: Any = None,
    window_frames: int | None = None,
) -> RunResult:
    """Run the whole tracking stage and write every output to one zarr v3 store.

    Parameters
    ----------
    dataset : TrackingDataset, str or Path
        The six inputs (see :func:`dask_tracking.open_dataset`) or a raw movie
        (prepared with :func:`dask_tracking.prepare` first).
    output : str or Path
        The output store, e.g. ``"out.zarr"`` (layout in :mod:`dask_tracking.io.output`).
    compat : {None, "nellie"}
        ``"nellie"``: Nellie 1.0.4 bit for bit; None: the reference's bugs fixed.
    client : distributed.Client, optional
        Where to compute; default the current client if any, else dask's
        default scheduler (see :func:`dask_tracking.cluster`).
    resume : bool
        Continue a run interrupted in ``output``: frames marked done are kept.
    overwrite : bool
        Replace an existing output store. Without ``resume`` or ``overwrite`` an
        existing output is an error and is left untouched.
    tracks : bool
        Also compute label tracks (napari rows) and write ``tracks``.
    max_distance_um : float
        Flow gate speed in um/s (HuMomentTracking's ``max_distance_um``).
    flow_mode : str
        Passed to :func:`dask_tracking.estimate_flow` as ``mode``.
    track_label, track_start_frame
        Passed to :func:`dask_tracking.write_label_tracks` (``label``, ``start_frame``): the
        tasks write the rows to the store, so no process holds more than one seed chunk's rows.
    scale : mapping or sequence, optional
        Override or supply the scale (T in s, Z/Y/X in um).
    flow : FlowTable, optional
        Use this flow table (e.g. one computed before, or Nellie's own
        ``flow_vector_array.npy`` read with ``FlowTable.from_numpy``) instead of
        estimating it; it is written to the store as is.
    progress : bool
        Show a progress bar.
    gpu : bool
        Move the chunks to the GPU (:func:`dask_tracking.gpu.to_device`) so every
        stage takes its CuPy path (with ``dask_tracking.cluster(kind="gpu")``, CLI ``--gpu``).
        Without CuPy: an ImportError naming the ``gpu`` extra, before any work.
    accuracy : None, bool or sequence of str
        Accuracy options of the default mode (:mod:`dask_tracking.accuracy`):
        ``None`` (default): all on in the default mode, none with ``compat="nellie"``;
        ``False``: none (the reference method with its bugs fixed); ``True``: all; or
        names from ``"refine"``, ``"one_to_one"``, ``"object_vote"``,
        ``"living_tracks"``. Options cannot be asked for with ``compat="nellie"``.
    window_frames : int, optional
        Frames per graph (>= 2; :mod:`dask_tracking.windows`): the flow and the label
        chains are computed window by window, each window starting at the last frame of
        the one before, so a graph's own memory does not grow with the movie. Default:
        about 2,048 (frame, block) pairs per window, at least 4 frames. Every window size
        gives the same output.

    Returns
    -------
    RunResult

    Raises
    ------
    InputError
        Bad arguments, a bad dataset, an output that exists without ``resume``
        or ``overwrite``, an unwritable output, or a store that was written with
        other parameters; always before any work or write.
    """
    start_time = time.perf_counter()
    compat = resolve_compat(compat)
    window_frames_checked(window_frames)
    max_distance_um = _check_distance(max_distance_um)
    if not isinstance(track_start_frame, (int, np.integer)) or track_start_frame < 0:
        raise InputError(f"track_start_frame must be a non-negative integer, got {track_start_frame!r}")
    path = out_store.check_output_path(output, resume=resume, overwrite=overwrite)
    ds = validate(open_source(dataset, scale, compat=compat))
    if gpu:
        from .gpu import to_device

        ds = to_device(ds)
    if flow is not None:
        if not isinstance(flow, FlowTable):
            raise InputError(f"flow must be a FlowTable or None, got {type(flow).__name__}")
        if flow.ndim != ds.ndim or flow.n_frames != ds.n_frames:
            raise InputError(
                f"flow covers {flow.n_frames} frames in {flow.ndim}D but the dataset has "
                f"{ds.n_frames} frames in {ds.ndim}D"
            )
    if track_start_frame >= ds.n_frames:
        raise InputError(
            f"track_start_frame must be below the number of frames ({ds.n_frames}), got {track_start_frame}"
        )
    write_label_tracks = None
    if tracks:
        from .tracks import write_label_tracks

    from .accuracy import resolve_accuracy

    acc = resolve_accuracy(accuracy, compat)
    params = _parameters(ds, compat, max_distance_um, tracks, track_label, track_start_frame, flow_mode)
    if acc.any:
        params["accuracy"] = acc.names()
    if flow is not None:
        params["flow"] = "given"
    attrs = _attrs(ds, params)
    resumed = bool(resume and path.exists())
    if resumed:
        group = out_store.open_output(path, mode="r+")
        out_store.check_resumable(group, attrs)
        first = _resume_state(group, ds.n_frames)
    else:
        group = out_store.create_output(path, ds, attrs, overwrite=overwrite)
        first = 0
    client = _client(client)
    T = ds.n_frames
    log.info("run: %s -> %s (%d frames, compat=%s, first frame to compute %d)",
             ds.source, path, T, compat or "fixed", first)

    # 1. flow, computed and persisted first
    if resumed and group.attrs.get("flow_done", False):
        flow = FlowTable.from_zarr(group)
        flow = FlowTable(_compute(flow.pairs, None, False), flow.ndim, flow.n_frames, flow.attrs)
        log.info("flow: read %d rows from the store", sum(len(p) for p in flow.pairs))
    else:
        if flow is not None:
            log.info("flow: given")
            lazy = flow
            pairs = list(lazy.pairs)
            todo = [i for i, p in enumerate(pairs) if dask.is_dask_collection(p)]
            for i, v in zip(todo, _compute([pairs[i] for i in todo], client, progress)):
                pairs[i] = v
        else:
            log.info("flow: estimating (max_distance_um=%g um/s)", max_distance_um)
            lazy, pairs = _flow_windows(ds, client, progress, _frames_per_graph(ds, window_frames),
                                        max_distance_um=max_distance_um,
                                        compat=compat, mode=flow_mode, **acc.flow_kwargs())
        pairs = [np.asarray(p, dtype=np.float64).reshape(-1, lazy.ncols) for p in pairs]
        flow = FlowTable(pairs, lazy.ndim, ds.n_frames, lazy.attrs)
        flow.to_zarr(group, "flow", overwrite=True)
        group.attrs.update({"flow_done": True})
        first = 0
    flow_rows = int(sum(len(p) for p in flow.pairs))

    # 2. tracks: the tasks write the rows (no process holds more than one seed chunk's rows)
    n_track_rows = None
    if tracks and not (resumed and group.attrs.get("tracks_done", False)):
        job = write_label_tracks(ds, flow, str(path), name="tracks", label=track_label,
                                 start_frame=track_start_frame, compat=compat, compute=False,
                                 **acc.track_kwargs())
        log.info("tracks: writing label tracks from frame %d", track_start_frame)
        n_track_rows = int(_compute([job], client, progress)[0])
        group.attrs.update({"tracks_done": True})
    elif tracks:
        n_track_rows = int(group["tracks"].shape[0])

    # 3. the label chains, per window of frames (one bounded graph each), then the frames' markers
    counts: dict = {}
    frames: list[int] = []
    if first < T:
        counts, frames = _chain_windows(ds, flow, group, str(path), compat, acc, first, resumed, client,
                                        progress, _frames_per_graph(ds, window_frames))
    missing = [t for t in range(T) if t not in counts]
    if missing:
        stored = da.from_zarr(group["labels_reassigned"])
        vals = _compute([da.count_nonzero(stored[t]) for t in missing], None, False)
        counts.update(zip(missing, (int(v) for v in vals)))
    labelled = tuple(counts[t] for t in range(T))
    seconds = time.perf_counter() - start_time
    group.attrs.update({
        "status": "complete",
        "flow_rows": flow_rows,
        "labelled_voxels": list(labelled),
        "tracks_rows": n_track_rows,
        "seconds_last_call": round(seconds, 3),
    })
    log.info("done in %.1f s: %d flow rows, %d labelled voxels at frame 0", seconds, flow_rows, labelled[0])
    return RunResult(path, T, flow_rows, labelled, tuple(frames), n_track_rows, resumed, seconds,
                     compat)
