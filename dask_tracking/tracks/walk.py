"""Walk points through time with the flow: the engine of label tracks (spec 2.3, 2.4).

Points are split in chunks; each chunk walks frame by frame with the anchors of
each frame (one small Delayed per frame, shared by all chunks). A step moves every
live point by its interpolated displacement; a point without a vector dies.

In ``compat="nellie"`` the interpolation of a step depends on the whole batch
(quirks Q-A / Q-B, and a step is skipped, without moving anything, when no point
has a neighbour). Each step then first reduces the chunks' non-NaN counts and
neighbour maxima, then moves every chunk with those global values: chunked and
unchunked walks give the same rows. In the default mode chunks never talk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import dask
import numpy as np

from ..interpolate.kernel import Anchors, interpolate_points, neighbour_counts

__all__ = ["WalkParams", "Emission", "WalkResult", "walk", "walk_lazy"]


@dataclass(frozen=True)
class WalkParams:
    """Parameters of one walk.

    Parameters
    ----------
    spacing : tuple of float
        Voxel size in um per spatial axis.
    radius_um : float
        Interpolation radius in um.
    forward : bool
        True: frames increase, positions ``+=`` the vector; False: frames
        decrease, positions ``-=`` the vector.
    compat : None or "nellie"
    fallback_radius_um : float, optional
        Default mode only: a point with no anchor within ``radius_um`` takes the
        interpolated vector of the anchors within this larger radius instead of
        dying (None: it dies, the reference behaviour).
    """

    spacing: tuple[float, ...]
    radius_um: float
    forward: bool
    compat: str | None = None
    fallback_radius_um: float | None = None


@dataclass(frozen=True)
class Emission:
    """What one chunk emitted at one step.

    ``index`` (m,) int64 are the chunk-local point indices that moved, ``start``
    (m, d) their positions before the step when the step emits start points (else
    None), ``moved`` (m, d) their positions after the step.
    """

    index: np.ndarray
    start: np.ndarray | None
    moved: np.ndarray


@dataclass
class WalkResult:
    """The emissions of a walk, per step (``steps[s]`` is frame ``frames[s]``) and per chunk."""

    frames: list[int]
    offsets: list[int]
    steps: list[list[Emission]]
    final: list[np.ndarray]


def _stats(anchors: Anchors, pos: np.ndarray, params: WalkParams) -> tuple[int, int, np.ndarray]:
    """(non-NaN points, largest neighbour count, the neighbour counts) of one chunk."""
    k = neighbour_counts(anchors, pos, params.spacing, params.radius_um)
    return int((~np.isnan(pos[:, 0])).sum()), int(k.max()) if len(k) else 0, k


def _reduce(*stats: tuple[int, int, np.ndarray]) -> tuple[int, int]:
    """The batch's non-NaN count and largest neighbour count from every piece's :func:`_stats`
    (passed as separate arguments, see :func:`_listed`)."""
    return sum(s[0] for s in stats), max((s[1] for s in stats), default=0)


def _as_list(*xs: Any) -> list:
    return list(xs)


def _listed(items: Any) -> Any:
    """One Delayed list of Delayed values, built from top-level arguments.

    ``dask.delayed`` re-optimises the whole graph of every Delayed nested in a container
    argument on each call, which makes a graph built step by step quadratic to build;
    top-level arguments are only referenced.
    """
    return dask.delayed(_as_list, pure=True)(*items)


def _advance(pos: np.ndarray, anchors: Anchors, params: WalkParams, glob: tuple[int, int] | None,
             offset: int, emit_start: bool, stats: tuple | None = None) -> tuple[np.ndarray, Emission]:
    """One step of one chunk: (new positions, emission). ``stats``: this chunk's
    :func:`_stats` (compat), whose neighbour counts are reused."""
    d = pos.shape[1]
    none = Emission(np.zeros(0, np.int64), None, np.zeros((0, d)))
    if params.compat == "nellie":
        n_good, k_max = glob
        if n_good == 0 or k_max == 0:  # Nellie skips the frame: nothing moves
            return pos, none
        vec = interpolate_points(anchors, pos, params.spacing, params.radius_um, compat="nellie",
                                 n_good=n_good, k_max=k_max, offset=offset,
                                 counts=None if stats is None else stats[2])
    else:
        vec = interpolate_points(anchors, pos, params.spacing, params.radius_um)
        if params.fallback_radius_um is not None:
            lost = np.all(np.isnan(vec), axis=1) & ~np.isnan(pos[:, 0])
            if lost.any():
                vec[lost] = interpolate_points(anchors, pos[lost], params.spacing,
                                               float(params.fallback_radius_um))
    alive = ~np.all(np.isnan(vec), axis=1)
    new = pos + vec if params.forward else pos - vec
    new[~alive] = np.nan
    idx = np.flatnonzero(alive)
    start = pos[idx] if emit_start else None
    return new, Emission(idx, start, new[idx])


def _split(em: tuple[np.ndarray, Emission], i: int) -> Any:
    return em[i]


#: A chunk is walked in pieces of at least this many points (smaller pieces cost more in
#: per-step task overhead than they gain) ...
MIN_PIECE = 16_384
#: ... so that a walk has at least this many pieces when it has the points for them: the
#: threads or workers share every step even when the seeds fit in one or two chunks.
MIN_PIECES = 8


def _piece_bounds(chunks: Sequence[np.ndarray]) -> list[list[int]]:
    """Per chunk, the bounds of its pieces (near-equal parts, in order)."""
    sizes = [len(c) for c in chunks]
    total = sum(sizes)
    want = min(MIN_PIECES, max(1, total // MIN_PIECE))
    out = []
    for n in sizes:
        parts = max(1, min(-(-want * n // max(total, 1)), n // MIN_PIECE or 1))
        out.append([int(round(i * n / parts)) for i in range(parts + 1)])
    return out


def _join(pieces: Sequence[Emission], starts: Sequence[int]) -> Emission:
    """One chunk's emission from its pieces' (piece-local indices shifted to the chunk)."""
    if len(pieces) == 1:
        return pieces[0]
    index = np.concatenate([p.index + s for p, s in zip(pieces, starts)])
    moved = np.concatenate([p.moved for p in pieces])
    start = None if pieces[0].start is None else np.concatenate([p.start for p in pieces])
    return Emission(index, start, moved)


def _join_positions(pieces: Sequence[np.ndarray]) -> np.ndarray:
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def walk_lazy(chunks: Sequence[np.ndarray], frames: Sequence[int], anchors: dict[int, Any],
              params: WalkParams) -> tuple[list[list[Any]], list[Any]]:
    """The walk as Delayed objects: ``(steps, final)`` (see :func:`walk`).

    ``steps[s][c]`` is chunk ``c``'s :class:`Emission` at step ``s``. Each chunk walks
    in pieces (:data:`MIN_PIECE`, :data:`MIN_PIECES`); the rows do not depend on it.
    """
    bounds = _piece_bounds(chunks)
    pieces = [np.asarray(c, dtype=np.float64)[a:b] for c, bd in zip(chunks, bounds)
              for a, b in zip(bd[:-1], bd[1:])]
    owner = [(ci, bd[k]) for ci, bd in enumerate(bounds) for k in range(len(bd) - 1)]
    psteps, pfinal = _walk_pieces(pieces, frames, anchors, params)
    if len(pieces) == len(chunks):
        return psteps, pfinal
    join = dask.delayed(_join, pure=True)
    join_pos = dask.delayed(_join_positions, pure=True)

    def of_chunk(items, ci):
        return [x for x, (c, _) in zip(items, owner) if c == ci]

    starts = [[s for c, s in owner if c == ci] for ci in range(len(chunks))]
    steps = [[join(_listed(of_chunk(st, ci)), starts[ci]) for ci in range(len(chunks))] for st in psteps]
    final = [join_pos(_listed(of_chunk(pfinal, ci))) for ci in range(len(chunks))]
    return steps, final


def _walk_pieces(chunks: Sequence[np.ndarray], frames: Sequence[int], anchors: dict[int, Any],
                 params: WalkParams) -> tuple[list[list[Any]], list[Any]]:
    offsets = _offsets(chunks)
    state: list[Any] = list(chunks)
    steps: list[list[Any]] = []
    for s, t in enumerate(frames):
        a = anchors[t]
        glob = None
        stats = [None] * len(state)
        if params.compat == "nellie":
            stats = [dask.delayed(_stats, pure=True)(a, p, params) for p in state]
            glob = dask.delayed(_reduce, pure=True)(*stats)
        emit_start = params.compat == "nellie" and s == 0
        res = [dask.delayed(_advance, pure=True)(p, a, params, glob, off, emit_start, st)
               for p, off, st in zip(state, offsets, stats)]
        state = [dask.delayed(_split, pure=True)(r, 0) for r in res]
        steps.append([dask.delayed(_split, pure=True)(r, 1) for r in res])
    return steps, state


def _offsets(chunks: Sequence[np.ndarray]) -> list[int]:
    return [int(o) for o in np.cumsum([0] + [len(c) for c in chunks[:-1]])] if len(chunks) else []


def walk(chunks: Sequence[np.ndarray], frames: Sequence[int], anchors: dict[int, Any], params: WalkParams,
         **compute_kwargs: Any) -> WalkResult:
    """Walk chunks of points through ``frames`` and compute every emission.

    Parameters
    ----------
    chunks : sequence of ndarray, each (n_i, d) float64
        Starting positions (voxels) at ``frames[0]``, in chunk order.
    frames : sequence of int
        The frames stepped from, in walking order (forward: ``t`` moves to
        ``t+1``; backward: ``t`` to ``t-1``).
    anchors : dict int -> Anchors or Delayed
        The anchors of each frame of ``frames`` (built once, shared by chunks).
    params : WalkParams
    **compute_kwargs
        Passed to :func:`dask.compute` (e.g. ``scheduler=``).

    Returns
    -------
    WalkResult
        In compat mode start points are emitted at ``frames[0]`` unless that
        step is skipped (Nellie's rule); in the default mode never (the caller
        emits each seed once).
    """
    steps, final = walk_lazy(chunks, frames, anchors, params)
    steps_c, final_c = dask.compute(steps, final, **compute_kwargs)
    return WalkResult(list(frames), _offsets(chunks), [list(x) for x in steps_c], list(final_c))
