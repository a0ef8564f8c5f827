"""The reassignment graph: candidates per (pair, block), then a vote chain over time.

Layout of the graph (``B`` spatial blocks of the input's chunk grid, ``T`` frames):

* per frame and block: the block's labelled voxels (:class:`BlockVoxels`; a stored chunk
  is read inside this task, otherwise taken from the input's chunk task); every later
  task works on these sparse lists, never on whole chunks or halo regions.
* per pair t and block b: the forward predictions of b's voxels, then b's candidates from
  the labelled voxels of frame t over the core plus the *source* halo and of frame t+1
  over the core plus the *target* halo (from the blocks that overlap them), held as
  int32 voxels and float32 errors.
* per pair: the best match per target (one small task per block, joined per pair).
* per label kind (objects, branches) a chain over t, parallel over blocks: the
  vote of block b at t+1 reads frame t's reassigned labels over b's source region,
  carried from block to block as one value per labelled voxel; votes and fills are such
  values too, and a dense block is made only for the output.
  With ``fill_unmatched`` each voted block is summarised (object -> label counts),
  the summaries of a frame are merged (a few numbers per object) and each block
  is filled.
* bounded look-ahead: the forward predictions and candidates of pair t wait for a token
  that frame t is reassigned in both chains (its carries, which their votes need anyway),
  and the voxel lists of frame t+1 for frame t-1's token, so one pair of candidates is in
  flight however many frames and threads there are; the compat frame index of t+1 (a
  serial whole-frame build) and the anchors start one pair earlier, to overlap with the
  votes of pair t-1. Frames of fewer than :data:`ONE_PAIR_FROM_BLOCKS` blocks keep two
  pairs in flight (the predictions and candidates of pair t wait for frame t-1, the
  default mode's voxel lists of t+1 for frame t-2): their state is small, and one pair
  would run the candidates and votes of a one-block frame one at a time.
* a band over the blocks of a frame: the forward predictions of a block wait for the
  candidates of the blocks some rows back (raster order), so a few block rows of
  predictions are alive, not a whole frame.
* ``compat="nellie"`` adds, per frame, one index of the frame's labelled voxels (for
  cKDTree's tie rule and the interpolation batch's ``K``), and a stop chain (the first
  pair without candidates ends the run, as in Nellie) from per-block candidate counts; the
  votes do not wait for it: the outputs are zeroed from the stop on.

The graph is one dict of tasks built without reading any data. Input chunks may be
NumPy or CuPy (moved to the host: the neighbour searches run on the CPU with SciPy);
outputs are NumPy.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dask._task_spec import Alias, GraphNode, List, Task, TaskRef, Tuple

from ..backend import to_host
from ..blocks import iter_blocks
from ..reads import ChunkReads, after, resolve
from .block_voxels import BlockVoxels, block_voxels, labels_at, region_voxels
from .candidates import Candidates, block_candidates, forward_predictions, frame_index_from_keys
from .halo import candidate_halo, max_displacement
from .params import ReassignParams
from .vote import (best_matches, fill_at_voxels, merge_matches, merge_object_votes, object_votes_at_voxels,
                   vote_at_voxels)

__all__ = ["Region", "build_graph"]


# --------------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Region:
    """Where the chunks that overlap a box go in the assembled box (an opaque task literal)."""

    shape: tuple[int, ...]
    offset: tuple[int, ...]
    places: tuple  # ((dst slices), (src slices)) per piece, in the order of the piece keys


def _chunk_bounds(chunks: Sequence[Sequence[int]]) -> list[list[int]]:
    return [[0] + [int(v) for v in np.cumsum(c)] for c in chunks]


def _region(bounds: list[list[int]], outer: Sequence[slice]) -> tuple[Region, list[tuple[int, ...]]]:
    """The chunk indices overlapping ``outer`` and how to place them."""
    per_axis = []
    for b, s in zip(bounds, outer):
        first = bisect.bisect_right(b, s.start) - 1
        last = bisect.bisect_left(b, s.stop)
        per_axis.append(range(max(first, 0), min(last, len(b) - 1)))
    places, cidx = [], []
    for combo in itertools.product(*per_axis):
        dst, src = [], []
        for a, i in enumerate(combo):
            lo = max(outer[a].start, int(bounds[a][i]))
            hi = min(outer[a].stop, int(bounds[a][i + 1]))
            dst.append(slice(lo - outer[a].start, hi - outer[a].start))
            src.append(slice(lo - int(bounds[a][i]), hi - int(bounds[a][i])))
        places.append((tuple(dst), tuple(src)))
        cidx.append(tuple(combo))
    shape = tuple(s.stop - s.start for s in outer)
    return Region(shape, tuple(s.start for s in outer), tuple(places)), cidx


def _assemble(region: Region, pieces: Sequence[np.ndarray], dtype) -> np.ndarray:
    out = np.empty(region.shape, dtype=dtype)
    for (dst, src), p in zip(region.places, pieces):
        p = to_host(p)
        if p.ndim == len(region.shape) + 1:  # a chunk with its T axis
            p = p[0]
        out[dst] = p[src]
    return out


def _voxels_task(obj, br, offset, gate=None) -> BlockVoxels:
    return block_voxels(resolve(obj), resolve(br), offset)


# --------------------------------------------------------------------------- task bodies
def _anchors_task(rows: np.ndarray, ndim: int, forward: bool, gate=None):
    from ..interpolate.kernel import frame_anchors

    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2 * ndim + 2)
    return frame_anchors(rows, ndim, forward) if len(rows) else None


def _core(c: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in c)


def _forward_task(vox: BlockVoxels, a_fw, spacing, radius, compat, idx_prev, idx_next=None, gate=None):
    f = forward_predictions(vox.coords(), a_fw, spacing, radius, compat=compat, index_prev=idx_prev,
                            index_next=idx_next)
    # held until the candidates of every block they reach are made: keep them small
    if len(f) == 4:  # with their matches the predictions are not needed again
        return f[0].astype(np.int32), None, f[2].astype(np.int32), f[3].astype(np.float32)
    # the sources as rows of the block's voxel list (the candidates have that list too)
    src = f[0] - np.asarray(vox.offset, dtype=np.int64)
    rows = np.searchsorted(vox.flat, np.ravel_multi_index(tuple(src.T), vox.shape)) if len(src) else src[:, 0]
    return rows.astype(np.int32), f[1]


def _sources_of(forward, coords) -> list:
    """``(source, predicted)`` of each :func:`_forward_task` result, from its block's voxels."""
    out = []
    for f, c in zip(forward, coords):
        if len(f) == 2 and np.ndim(f[0]) == 1:
            f = (c[np.asarray(f[0], dtype=np.int64)], f[1])
        out.append(f)
    return out


def _candidates_task(forward, src_pieces, src_box, tgt_pieces, tgt_box, core, a_bw, spacing, radius,
                     compat, idx_prev, idx_next, spatial_shape, gate=None) -> Candidates:
    nd = len(spacing)
    prev = np.zeros((0, nd), np.int64)
    if src_pieces is not None:  # the forward predictions' blocks, in the same order
        coords = [p.coords() for p in src_pieces]
        forward = _sources_of(forward, coords)
        prev = region_voxels(src_pieces, src_box[0], src_box[1], spatial_shape, coords)
        del coords
    tgt = region_voxels(tgt_pieces, tgt_box[0], tgt_box[1], spatial_shape)
    return block_candidates(forward, prev, tgt, _core(core), a_bw, spacing, radius, compat=compat,
                            index_prev=idx_prev, index_next=idx_next).compact()


def _len_task(cands: Candidates) -> int:
    return len(cands)


def _count_task(counts: list) -> int:
    return int(sum(counts))


def _stop_task(prev_stop: bool, n_candidates: int) -> bool:
    return bool(prev_stop) or n_candidates == 0


def _pair_matches_task(pieces, spatial_shape, stop) -> np.ndarray:
    if stop:
        pieces = []
    return merge_matches(pieces, spatial_shape)


def _initial_task(chunk, has_t: bool) -> np.ndarray:
    a = to_host(chunk)
    if has_t:
        a = a[0]
    return np.where(a > 0, a, 0).astype(np.int32)


def _initial_voxels_task(vox: BlockVoxels, kind: str) -> np.ndarray:
    return _initial_task(vox.dense(kind), False)


def _initial_carry_task(vox: BlockVoxels, kind: str) -> np.ndarray:
    v = vox.values(kind)
    return np.where(v > 0, v, 0).astype(np.int32)


def _carry_task(final: np.ndarray, vox: BlockVoxels) -> np.ndarray:
    """The reassigned labels of a block at its labelled voxels (0 everywhere else)."""
    return np.asarray(final).reshape(-1)[vox.flat].astype(np.int32)


def _dense_task(values: np.ndarray, vox: BlockVoxels, stop=False) -> np.ndarray:
    """An output block: ``values`` at the block's labelled voxels, 0 elsewhere (all 0 once stopped), int32."""
    out = np.zeros(vox.shape, dtype=np.int32)
    if not stop:
        out.reshape(-1)[vox.flat] = values
    return out


def _zeros_task(shape) -> np.ndarray:
    return np.zeros(tuple(shape), dtype=np.int32)


def _vote_task(cands, carries, src_pieces, vox_next: BlockVoxels, kind: str) -> np.ndarray:
    if len(cands) == 0:
        return np.zeros(len(vox_next), dtype=np.int32)
    src = labels_at(cands.source, src_pieces, carries)
    return vote_at_voxels(cands, src, vox_next.flat, vox_next.values(kind), vox_next.shape, vox_next.offset)


def _object_votes_task(voted, vox: BlockVoxels, kind: str):
    return object_votes_at_voxels(voted, vox.values(kind))


def _max_task(vox: BlockVoxels, kind: str) -> int:
    return vox.max_of(kind)


def _frame_max_task(values: list) -> int:
    return int(max(values)) if values else 0


def _add_task(a: int, b: int) -> int:
    return int(a) + int(b)


def _merge_task(pieces, base):
    return merge_object_votes(pieces, base)


def _fill_task(voted, vox: BlockVoxels, kind: str, mapping) -> np.ndarray:
    return fill_at_voxels(voted, vox.values(kind), mapping)


def _frame_index_task(pieces, spatial_shape, spacing, radius, a_fw, a_bw, gate=None):
    keys = [p.frame_keys(spatial_shape) for p in pieces]
    keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    return frame_index_from_keys(keys, spatial_shape, spacing, radius, a_fw, a_bw)



#: Frames of at least this many blocks run one pair of candidates ahead of the vote chain;
#: smaller frames two (see :func:`build_graph`).
ONE_PAIR_FROM_BLOCKS = 8


# --------------------------------------------------------------------------- task spec
def _native(dsk: dict, external: set) -> dict:
    """The task dict in dask's task spec: key arguments as ``TaskRef``, lists of them as ``List``.

    dask converts a tuple task when it runs the graph, and wraps every key it finds in
    the arguments in its own ``Alias`` node (an object plus a set of dependencies, some
    300 bytes); the reassignment's tasks name their neighbours' keys tens of thousands
    of times at 54 blocks a frame (43 MB traced when the first of 6,114 tasks started,
    33 MB built here). Built here once, a reference is a ``TaskRef`` (one slot, one per
    key).
    """
    keys = set(dsk) | external

    def is_key(a) -> bool:
        if type(a) is str:
            return a in keys
        return type(a) is tuple and len(a) > 0 and type(a[0]) is str and a in keys

    refs: dict = {}

    def arg(a):
        if is_key(a):
            ref = refs.get(a)
            if ref is None:
                ref = refs[a] = TaskRef(a)
            return ref
        if type(a) in (list, tuple):
            items = [arg(x) for x in a]
            if any(isinstance(x, (TaskRef, GraphNode)) for x in items):
                return (List if type(a) is list else Tuple)(*items)
        return a

    out = {}
    for key, task in dsk.items():
        if type(task) is tuple and task and callable(task[0]):
            out[key] = Task(key, task[0], *(arg(a) for a in task[1:]))
        elif is_key(task):
            out[key] = Alias(key, task)
        else:
            out[key] = task
    return out


# --------------------------------------------------------------------------- builder
@dataclass
class BuiltGraph:
    """The task dict and the keys of the outputs (see :func:`build_graph`)."""

    dsk: dict
    labels_keys: dict          # (t, *b) -> key of the final object block
    branches_keys: dict        # (t, *b) -> key of the final branch block
    matches_keys: list         # per pair
    stop_keys: list | None     # per pair, or None when the run never stops
    next_base_keys: dict = None  # kind -> key of the new-id base of the last frame (fill_unmatched)


def build_graph(token: str, labels: Any, branches: Any, rows: Sequence[Any],
                spacing: Sequence[float], params: ReassignParams,
                initial: tuple[int, Any, Any] | None = None,
                max_displacement_voxels: Sequence[float] | None = None, *,
                kinds: Sequence[str] = ("obj", "br"), id_base: dict | None = None) -> BuiltGraph:
    """Build the reassignment task dict.

    Parameters
    ----------
    token : str
        Unique suffix of every key.
    labels, branches : dask.array.Array
        Original object and branch ids, (T, ...) one frame per chunk, same chunks.
    rows : list of (n_t, 2d+2) ndarray or Delayed
        Flow rows per frame pair (a Delayed is referenced by its key and stays lazy).
    spacing : sequence of float
        Voxel size per spatial axis, um.
    params : ReassignParams
    initial : (t0, dask.array.Array, dask.array.Array), optional
        Start the chain from frame ``t0`` with these reassigned object and branch
        labels (spatial shape, same spatial chunks as ``labels``).
    max_displacement_voxels : sequence of float, optional
        Bound on the flow vectors per axis, voxels; required for lazy rows, used
        instead of the rows' own largest vector when given.
    kinds : sequence of {"obj", "br"}
        The label chains to build (objects, branches).
    id_base : dict, optional
        Per kind, the new-id base of frame ``t0`` (the sum of the largest original ids of
        the frames before ``t0`` in the whole movie): the bases are then summed from
        frame ``t0`` on, and frames before ``t0`` are not read. Default: summed from frame 0.
    """
    T = labels.shape[0]
    shape = tuple(labels.shape[1:])
    nd = len(shape)
    chunks = tuple(labels.chunks[1:])
    bounds = _chunk_bounds(chunks)
    blocks = list(iter_blocks(chunks))
    nellie = params.compat == "nellie"
    r = params.radius_um
    sp = tuple(float(s) for s in spacing)
    dsk: dict = {}

    names: dict = {}
    external: set = set()  # keys of other layers the tasks read

    def k(kind: str, *idx):
        name = names.get(kind)
        if name is None:
            name = names[kind] = f"reassign-{kind}-{token}"
        return (name, *idx)

    def in_key(arr, t, cidx):
        key = (arr.name, t) + tuple(cidx)
        external.add(key)
        return key

    # anchors per pair
    def rows_arg(t):
        if hasattr(rows[t], "key") and hasattr(rows[t], "dask"):
            external.add(rows[t].key)
            return rows[t].key
        return rows[t]

    def disp(t):
        if max_displacement_voxels is not None:
            return tuple(max_displacement_voxels)
        return max_displacement(rows[t], nd)

    t0 = 0 if initial is None else int(initial[0])

    def carry_key(kind, t, bidx):
        """The key of frame t's reassigned labels of one block at its labelled voxels."""
        if t <= t0:
            return k(f"{kind}-carry", t, *bidx)
        return k(f"{kind}-fill" if params.fill_unmatched else f"{kind}-vote", t, *bidx)

    # pairs of candidates in flight: two for frames of few blocks (their state is small, and
    # with one pair a frame of one block would run its candidates and votes one at a time)
    slack = 1 if len(blocks) < ONE_PAIR_FROM_BLOCKS else 0

    def done_key(t):
        """Token: frame t is reassigned in both chains (None: no wait, or no pair waits for it)."""
        return k("done", t) if t0 + 1 <= t < T - 1 else None

    for t in range(T - 1):
        dsk[k("anchors-fw", t)] = (_anchors_task, rows_arg(t), nd, True, done_key(t - 2))
        dsk[k("anchors-bw", t)] = (_anchors_task, rows_arg(t), nd, False, done_key(t - 2))

    # the labelled voxels of every (frame, block): the only tasks that read the input chunks
    reads_lab, reads_br = ChunkReads(labels), ChunkReads(branches)
    inline = reads_lab.inline and reads_br.inline
    for t in range(T):
        # read when the first task that needs them may start: pair t-1 (or the compat index of t)
        gate = done_key(t - 2) if nellie else done_key(t - 1 - slack)
        for b in blocks:
            off = tuple(int(s.start) for s in b.core)
            if inline:  # stored chunks: read in this task, when frame t's turn comes
                dsk[k("voxels", t, *b.index)] = Task(
                    k("voxels", t, *b.index), _voxels_task, reads_lab.node(in_key(labels, t, b.index)),
                    reads_br.node(in_key(branches, t, b.index)), off,
                    TaskRef(gate) if gate else None)
            else:  # computed chunks: shared keys (a gate would only hold the chunk longer)
                dsk[k("voxels", t, *b.index)] = (_voxels_task, in_key(labels, t, b.index),
                                                 in_key(branches, t, b.index), off)

    # whole-frame coordinate indexes (compat only)
    if nellie:
        for t in range(T):
            vkeys = [k("voxels", t, *b.index) for b in blocks]
            a_fw = k("anchors-fw", t) if t < T - 1 else None
            a_bw = k("anchors-bw", t - 1) if t >= 1 else None
            dsk[k("index", t)] = (_frame_index_task, vkeys, shape, sp, r, a_fw, a_bw, done_key(t - 2))

    # forward predictions per (pair, source block): each labelled voxel moved once
    for t in range(T - 1):
        for b in blocks:
            dsk[k("fwd", t, *b.index)] = (_forward_task, k("voxels", t, *b.index), k("anchors-fw", t), sp, r,
                                          params.compat, k("index", t) if nellie else None,
                                          k("index", t + 1) if nellie else None, done_key(t - slack))

    # candidates and best matches per (pair, target block)
    src_regions: dict = {}
    regions: dict = {}
    for t in range(T - 1):
        h_src, h_tgt = candidate_halo(disp(t), sp, r)
        if nellie:  # the nearest voxel comes from the whole-frame index
            h_tgt = (0,) * nd
        for b in blocks:
            core = np.array([[s.start, s.stop] for s in b.core], dtype=np.int64)
            pieces = {}
            for which, ft, h in (("src", t, h_src), ("tgt", t + 1, h_tgt)):
                outer = tuple(slice(max(s.start - d, 0), min(s.stop + d, n))
                              for s, d, n in zip(b.core, h, shape))
                okey = tuple((o.start, o.stop) for o in outer)
                if okey not in regions:
                    regions[okey] = _region(bounds, outer)
                reg, cidx = regions[okey]
                box = (np.array([o.start for o in outer], dtype=np.int64),
                       np.array([o.stop for o in outer], dtype=np.int64))
                if which == "src":
                    src_regions[(t, b.index)] = (reg, cidx)
                    if nellie:  # backward matches come from the whole-frame index
                        pieces[which] = (None, None)
                        continue
                pieces[which] = ([k("voxels", ft, *c) for c in cidx], box)
            fwd = [k("fwd", t, *c) for c in src_regions[(t, b.index)][1]]
            ck = k("cand", t, *b.index)
            dsk[ck] = (_candidates_task, fwd, pieces["src"][0], pieces["src"][1], pieces["tgt"][0],
                       pieces["tgt"][1], core, k("anchors-bw", t), sp, r, params.compat,
                       k("index", t) if nellie else None, k("index", t + 1) if nellie else None, shape,
                       done_key(t - slack))
            dsk[k("best", t, *b.index)] = (best_matches, ck, shape)

    # a band over the blocks of a frame: the candidates of block n read the predictions
    # of blocks up to n + reach (raster order of the block grid), and the predictions of
    # block m wait for the candidates of block m - (2 reach + 1); so the predictions
    # alive span a band of about three times the reach (a few block rows), not the whole
    # frame, and reach + 1 candidate tasks can still run side by side
    pos = {b.index: i for i, b in enumerate(blocks)}
    for t in range(T - 1):
        reach = max(max(pos[c] for c in src_regions[(t, b.index)][1]) - pos[b.index] for b in blocks)
        lag = 2 * max(reach, 0) + 1
        for m in range(lag, len(blocks)):
            fk = k("fwd", t, *blocks[m].index)
            dsk[fk] = dsk[fk][:-1] + ([dsk[fk][-1], k("cand", t, *blocks[m - lag].index)],)

    # stop chain (Nellie's break)
    stop_keys = None
    if not params.continue_past_empty:
        stop_keys = []
        prev = False
        for t in range(T - 1):
            for b in blocks:  # one number per block: the candidates are not held for the sum
                dsk[k("ncand", t, *b.index)] = (_len_task, k("cand", t, *b.index))
            dsk[k("ncand", t)] = (_count_task, [k("ncand", t, *b.index) for b in blocks])
            dsk[k("stop", t)] = (_stop_task, prev, k("ncand", t))
            prev = k("stop", t)
            stop_keys.append(prev)

    matches_keys = []
    for t in range(T - 1):
        mk = k("matches", t)
        dsk[mk] = (_pair_matches_task, [k("best", t, *b.index) for b in blocks], shape,
                   stop_keys[t] if stop_keys else False)
        matches_keys.append(mk)

    # label chains: each vote gives one value per labelled voxel of its block (the carry
    # of the next pair); dense blocks are made only for the outputs. The votes do not wait
    # for the stop chain (which needs every block's candidates of the pair): the outputs
    # are zeroed from the stop on, and a stop at t holds for every later pair, so the
    # values carried past it never reach an output.
    finals = {}
    for kind, orig, init in (("obj", labels, initial[1] if initial else None),
                             ("br", branches, initial[2] if initial else None)):
        if kind not in kinds:
            continue
        final = {}
        for t in range(t0 + 1):
            for b in blocks:
                vox = k("voxels", t, *b.index)
                if t < t0:
                    dsk[k(f"{kind}-final", t, *b.index)] = (_zeros_task, tuple(s.stop - s.start for s in b.core))
                elif init is None:
                    dsk[k(f"{kind}-final", t, *b.index)] = (_initial_voxels_task, vox, kind)
                    dsk[k(f"{kind}-carry", t, *b.index)] = (_initial_carry_task, vox, kind)
                else:
                    ik = (init.name,) + tuple(b.index)
                    external.add(ik)
                    dsk[k(f"{kind}-final", t, *b.index)] = (_initial_task, ik, False)
                    dsk[k(f"{kind}-carry", t, *b.index)] = (_carry_task, k(f"{kind}-final", t, *b.index), vox)
                final[(t,) + tuple(b.index)] = k(f"{kind}-final", t, *b.index)
        if params.fill_unmatched:
            # new ids: base_{t} = max over frames < t of the original ids, summed (from frame
            # t0 on, onto the base given for t0, when there is one)
            first = 0 if id_base is None else t0
            for t in range(first, T):
                dsk[k(f"{kind}-fmax", t)] = (_frame_max_task,
                                             [k(f"{kind}-max", t, *b.index) for b in blocks])
                for b in blocks:
                    dsk[k(f"{kind}-max", t, *b.index)] = (_max_task, k("voxels", t, *b.index), kind)
            if id_base is None:
                dsk[k(f"{kind}-base", 1)] = k(f"{kind}-fmax", 0)
            else:
                dsk[k(f"{kind}-base", t0 + 1)] = (_add_task, int(id_base[kind]), k(f"{kind}-fmax", t0))
            for t in range(first + 1, T - 1):
                dsk[k(f"{kind}-base", t + 1)] = (_add_task, k(f"{kind}-base", t), k(f"{kind}-fmax", t))
        for t in range(t0, T - 1):
            stop = stop_keys[t] if stop_keys else False
            ov = []
            for b in blocks:
                _, cidx = src_regions[(t, b.index)]
                vox_next = k("voxels", t + 1, *b.index)
                vk = k(f"{kind}-vote", t + 1, *b.index)
                dsk[vk] = (_vote_task, k("cand", t, *b.index), [carry_key(kind, t, c) for c in cidx],
                           [k("voxels", t, *c) for c in cidx], vox_next, kind)
                if params.fill_unmatched:
                    ok = k(f"{kind}-ov", t + 1, *b.index)
                    dsk[ok] = (_object_votes_task, vk, vox_next, kind)
                    ov.append(ok)
                else:
                    dsk[k(f"{kind}-final", t + 1, *b.index)] = (_dense_task, vk, vox_next, stop)
                final[(t + 1,) + tuple(b.index)] = k(f"{kind}-final", t + 1, *b.index)
            if params.fill_unmatched:
                mk = k(f"{kind}-map", t + 1)
                dsk[mk] = (_merge_task, ov, k(f"{kind}-base", t + 1))
                for b in blocks:
                    fk = k(f"{kind}-fill", t + 1, *b.index)
                    dsk[fk] = (_fill_task, k(f"{kind}-vote", t + 1, *b.index), k("voxels", t + 1, *b.index), kind, mk)
                    dsk[k(f"{kind}-final", t + 1, *b.index)] = (_dense_task, fk, k("voxels", t + 1, *b.index),
                                                                 stop)
        finals[kind] = final

    # look-ahead tokens: the predictions and candidates of pair t wait until frame t is
    # reassigned (their votes need it anyway), so one pair of them is alive at a time
    for t in range(t0 + 1, T - 1):
        dsk[done_key(t)] = (after, [carry_key(kind, t, b.index) for kind in kinds for b in blocks])
    next_base = {kind: k(f"{kind}-base", T - 1) for kind in kinds} if params.fill_unmatched and T > 1 else {}
    return BuiltGraph(_native(dsk, external), finals.get("obj", {}), finals.get("br", {}), matches_keys,
                      stop_keys, next_base)
