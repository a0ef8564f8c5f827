"""``estimate_flow``: the lazy graph of marker features and frame-pair matching.

Graph, per frame t and spatial block (a chunk of the dataset's grid); every task
holds at most one block plus the parts of its neighbours its markers' ROI boxes
reach, and reads the chunks it uses itself (:mod:`dask_tracking.reads`), so no chunk
is held in memory between two passes over a frame:

1. ``scan`` per block (core only): the markers of the core, the maximum of the
   distance image over each marker's 3^d window inside the core, the block minimum
   of the log-transformed preprocessed image, and the core's one-voxel faces of the
   distance image (for the neighbours' windows).
2. ``radii`` per block (tiny): each marker's ROI half-width
   ``ceil(2 * maxfilter(distance))``, the windows that cross the core completed from
   the neighbours' faces.
3. ``summary`` per frame (tiny): the frame-global padded cube side ``R``, the log
   shift, the ROI layout (Nellie's dense cube or streaming) and a check that every
   ROI fits the halo bound (:func:`roi_halo`).
4. ``ring`` per block, after the summary: the parts of the block's raw and
   preprocessed core that the neighbours' ROI boxes cover (a few voxels thick).
5. ``features`` per block: the core's markers' ROI window assembled from the core
   and the neighbours' rings; stats and log Hu moments of each marker.
6. ``frame`` per frame: the block features in raster order.
7. ``match`` per frame pair (t, t+1): rows in Nellie's layout. Frame t's
   features feed pairs (t-1, t) and (t, t+1) and are computed once.
8. Default mode only: ``refine`` per (frame pair, block) on windows of the
   preprocessed frames t and t+1 (:mod:`.refine`), then ``one_to_one`` per pair
   (:mod:`.assignment`).

Chunks stored on disk (``da.from_zarr``) are read by the scan (markers, distance,
preprocessed), by the features of blocks with markers (raw, preprocessed) and by the
ring only where a neighbour's ROI box reaches into the block; chunks computed upstream
are shared keys instead (:class:`dask_tracking.reads.ChunkReads`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from dask._task_spec import List, Task, TaskRef
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..backend import to_host
from ..blocks import halo_voxels, iter_blocks
from ..config import gate_radius_um, resolve_compat
from ..dataset import InputError, TrackingDataset, validate
from .features import FrameFeatures, block_features, log_min, window_max
from .assignment import one_to_one_flow
from .matching import flow_rows, match_frames
from .refine import refine_flow
from ..reads import ChunkReads
from .regions import ChunkGrid, paste, read_region
from .table import FlowTable

__all__ = ["FlowParams", "estimate_flow", "MODES"]

#: Accepted values of ``mode``.
MODES: tuple[str, ...] = ("auto", "dense", "sparse")


@dataclass(frozen=True)
class FlowParams:
    """Parameters of the flow stage (validated; see :func:`estimate_flow`)."""

    max_distance_um: float = 1.0
    compat: str | None = None
    mode: str = "auto"
    max_dense_pairs: int = int(1e7)
    max_dense_roi_voxels: int = int(5e7)
    low_memory: bool = False
    max_radius_um: float = 1.0
    compat_math: str = "libm"
    refine: bool | None = None
    one_to_one: bool | None = None

    def __post_init__(self) -> None:
        if self.compat_math not in ("libm", "numpy"):
            raise InputError(f"compat_math must be 'libm' or 'numpy', got {self.compat_math!r}")
        object.__setattr__(self, "compat", resolve_compat(self.compat))
        for name in ("refine", "one_to_one"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (bool, np.bool_)):
                raise InputError(f"{name} must be None (on in the default mode, off with compat='nellie'), "
                                 f"True or False, got {v!r}")
            if v and self.compat == "nellie":
                raise InputError(f"{name}=True cannot be used with compat='nellie' (bit-for-bit Nellie 1.0.4); "
                                 f"leave {name}=None or pass {name}=False")
            object.__setattr__(self, name, (self.compat != "nellie") if v is None else bool(v))
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(map(repr, MODES))}, got {self.mode!r}")
        for name in ("max_dense_pairs", "max_dense_roi_voxels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InputError(f"{name} must be a non-negative integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        gate_radius_um(self.max_distance_um, 1.0)
        object.__setattr__(self, "max_distance_um", float(self.max_distance_um))
        try:
            r = float(self.max_radius_um)
        except (TypeError, ValueError):
            r = float("nan")
        if not (math.isfinite(r) and r > 0):
            raise InputError(f"max_radius_um must be a positive number (um), got {self.max_radius_um!r}")
        object.__setattr__(self, "max_radius_um", r)
        object.__setattr__(self, "low_memory", bool(self.low_memory))


def roi_halo(params: FlowParams, spacing: tuple[float, ...]) -> tuple[int, ...]:
    """Halo (voxels per axis) that holds every marker's ROI box.

    The marker stage clamps the distance image at ``2 * max_radius_um / sX`` voxels,
    so the ROI half-width ``ceil(2 * maxfilter(distance))`` is at most
    ``ceil(4 * max_radius_um / sX)`` voxels, the same count on every axis (spec
    1.3 step 4, B11). One more voxel covers rounding.
    """
    d = len(spacing)
    return halo_voxels(4.0 * params.max_radius_um, (spacing[-1],) * d, extra_voxels=1)


def estimate_flow(dataset: TrackingDataset, *, max_distance_um: float = 1.0, compat: Any = None,
                  mode: str = "auto", max_dense_pairs: int = int(1e7),
                  max_dense_roi_voxels: int = int(5e7), low_memory: bool = False,
                  max_radius_um: float = 1.0, num_t: int | None = None,
                  compat_math: str = "libm", refine: bool | None = None,
                  one_to_one: bool | None = None) -> FlowTable:
    """Flow vectors by Hu-moment marker matching (Nellie's HuMomentTracking), lazily.

    The default mode runs, per frame pair: the marker matching (Nellie's method with
    its bugs fixed), then sub-voxel refinement of every row
    (:func:`dask_tracking.flow.refine.refine_flow`: coarse-to-fine normalised
    correlation of the preprocessed image, windows bounded per block, refined
    vectors kept within the gate), then a one-to-one assignment
    (:func:`dask_tracking.flow.assignment.one_to_one_flow`). ``compat="nellie"`` runs
    the matching only, bit for bit Nellie 1.0.4.

    Parameters
    ----------
    dataset : TrackingDataset
        Uses ``raw``, ``preprocessed``, ``distance`` and ``markers`` (TZYX or TYX).
    max_distance_um : float
        A speed in um/s (as in Nellie, spec B9): the gate radius is
        ``D = max(max_distance_um * dt, 0.5)`` um.
    compat : {None, "nellie"}
        ``"nellie"`` reproduces Nellie 1.0.4 on CPU bit for bit (float16 costs,
        duplicate mutual-best rows, uint16 variance overflow, its tie rules).
        ``None`` (default) fixes spec B1, B13 and B22: float64 variance, one row per
        pair, one gate ``<= D`` and float64 costs in both matching paths.
    mode : {"auto", "dense", "sparse"}
        Matching path; ``"auto"`` is dense iff ``N_post * N_pre <= max_dense_pairs``.
    max_dense_pairs : int
        See ``mode``.
    max_dense_roi_voxels : int
        Compat only: frames with ``N * R**d`` above this use Nellie's streaming
        feature layout (which rounds Hu moments to float32), as Nellie's CPU path.
    low_memory : bool
        Compat only: always use the streaming feature layout (Nellie's ``low_memory``).
    max_radius_um : float
        The marker stage's ``max_radius_um``; bounds the ROI half-width and so the
        feature halo (see :func:`roi_halo`). A larger ROI raises at compute time.
    num_t : int, optional
        Use only frames ``0 .. num_t - 1`` (Nellie's ``num_t``).
    compat_math : {"libm", "numpy"}
        Compat only. ``"libm"`` (default) evaluates ``log10f``, ``log10`` and ``pow``
        with the C library, as NumPy does on CPUs without AVX-512: the bits of the
        Nellie reference outputs. ``"numpy"`` uses NumPy's ufuncs, which on AVX-512
        CPUs call SVML kernels that differ in the last bit: the bits of Nellie run
        in the same environment on such a CPU (float16 costs then differ by one
        ULP in a few rows).
    refine : bool, optional
        Sub-voxel refinement after the matching. Default (None): on in the default
        mode, off with ``compat="nellie"`` (``True`` with compat is an error).
    one_to_one : bool, optional
        One partner per marker after the refinement (unclaimed splits kept).
        Default (None): on in the default mode, off with ``compat="nellie"``.

    Returns
    -------
    FlowTable
        Lazy: ``table.pairs[t]`` is a Delayed (n_t, 2d+2) float64 block, columns
        ``t, (z), y, x, (dz), dy, dx, cost``, ``t`` the earlier frame, vectors in
        voxels per frame (float with ``refine``, whole voxels otherwise). ``attrs``
        holds the parameters (``refine`` and ``one_to_one`` say which steps ran),
        ``gate_radius_um`` (no vector is longer) and ``spacing_um``.

    Raises
    ------
    InputError
        Before any work, for a bad argument or a dataset with fewer than 2 frames.
    """
    if not isinstance(dataset, TrackingDataset):
        raise InputError(f"dataset must be a TrackingDataset, got {type(dataset).__name__}")
    params = FlowParams(max_distance_um=max_distance_um, compat=compat, mode=mode,
                        max_dense_pairs=max_dense_pairs, max_dense_roi_voxels=max_dense_roi_voxels,
                        low_memory=low_memory, max_radius_um=max_radius_um, compat_math=compat_math,
                        refine=refine, one_to_one=one_to_one)
    validate(dataset)
    n_frames = dataset.n_frames
    if num_t is not None:
        if isinstance(num_t, bool) or not isinstance(num_t, (int, np.integer)) or not 2 <= num_t <= n_frames:
            raise InputError(f"num_t must be an integer in [2, {n_frames}] (frames used), got {num_t!r}")
        n_frames = int(num_t)
    radius = gate_radius_um(params.max_distance_um, dataset.dt)
    spacing = tuple(float(s) for s in dataset.spacing)
    frame_shape = dataset.spatial_shape
    chunks = dataset.spatial_chunks
    halo = roi_halo(params, spacing)
    compat_on = params.compat == "nellie"
    use_libm = params.compat_math == "libm"

    names = ("raw", "preprocessed", "distance", "markers")
    grids = {n: ChunkGrid(getattr(dataset, n)) for n in names}
    reads = {n: ChunkReads(getattr(dataset, n)) for n in names}
    blocks = list(iter_blocks(chunks))
    near, faces = _neighbours(blocks, chunks, halo)
    ndim = len(frame_shape)
    arrays = [getattr(dataset, n) for n in names]
    tok = tokenize([a.name for a in arrays], params, n_frames, radius)
    scan_n, radii_n, summ_n = f"flow-scan-{tok}", f"flow-radii-{tok}", f"flow-summary-{tok}"
    ring_n, feat_n = f"flow-ring-{tok}", f"flow-features-{tok}"
    frame_n, pair_n = f"flow-frame-{tok}", f"flow-pair-{tok}"

    per_frame = {n: all(c == 1 for c in getattr(dataset, n).chunks[0]) for n in names}
    cores: dict = {}

    def core_read(name, t, b):
        if not per_frame[name]:
            reg, keys = grids[name].region(t, b.core)
            return reg, reads[name].nodes(keys)
        if (name, b.index) not in cores:    # one frame per chunk on T: the same pieces every frame
            cores[name, b.index] = grids[name].region(0, b.core)
        reg, keys = cores[name, b.index]
        return reg, reads[name].nodes([(k[0], t) + k[2:] for k in keys])

    dsk: dict = {}
    for t in range(n_frames):
        summ = TaskRef((summ_n, t))
        for bi, b in enumerate(blocks):
            key = (scan_n, t, bi)
            dsk[key] = Task(key, _scan_block, *core_read("markers", t, b), *core_read("distance", t, b),
                            *core_read("preprocessed", t, b), b.core, frame_shape, compat_on, use_libm)
            key = (radii_n, t, bi)
            dsk[key] = Task(key, _block_radii, TaskRef((scan_n, t, bi)),
                            List(*(TaskRef((scan_n, t, j)) for j in faces[bi])), b.core, frame_shape)
            key = (ring_n, t, bi)
            dsk[key] = Task(key, _ring_block, *core_read("raw", t, b), *core_read("preprocessed", t, b),
                            summ, list(near[bi]), List(*(TaskRef((radii_n, t, j)) for j in near[bi])),
                            b.core, frame_shape)
            key = (feat_n, t, bi)
            dsk[key] = Task(key, _features_block, *core_read("raw", t, b), *core_read("preprocessed", t, b),
                            TaskRef((radii_n, t, bi)), summ, bi,
                            List(*(TaskRef((ring_n, t, j)) for j in near[bi])), frame_shape,
                            compat_on, use_libm)
        nb = len(blocks)
        dsk[(summ_n, t)] = Task((summ_n, t), _frame_summary,
                                List(*(TaskRef((radii_n, t, bi)) for bi in range(nb))), halo, params, ndim)
        dsk[(frame_n, t)] = Task((frame_n, t), FrameFeatures.concat,
                                 List(*(TaskRef((feat_n, t, bi)) for bi in range(nb))), ndim)
    for t in range(n_frames - 1):
        dsk[(pair_n, t)] = Task((pair_n, t), _match_pair, t, TaskRef((frame_n, t + 1)), TaskRef((frame_n, t)),
                                spacing, radius, params)
    graph = HighLevelGraph.from_collections(pair_n, dsk, dependencies=arrays)
    pairs = [Delayed((pair_n, t), graph, layer=pair_n) for t in range(n_frames - 1)]
    attrs = {"stage": "flow", "gate_radius_um": radius, "spacing_um": list(spacing), **asdict(params)}
    table = FlowTable(pairs, ndim, n_frames, attrs)
    if params.refine:
        image = dataset.preprocessed
        if n_frames < image.shape[0]:
            image = image[:n_frames]
        bound = tuple(math.ceil(radius / s - 1e-9) for s in spacing)
        table = refine_flow(table, image, max_vector=bound, spacing=spacing, max_length_um=radius)
    if params.one_to_one:
        table = one_to_one_flow(table)
    return table


# ----------------------------------------------------------------- graph
def _neighbours(blocks, chunks, halo) -> tuple[list[list[int]], list[list[int]]]:
    """Per block: the other blocks within ``halo`` voxels (ROI reach), and those within 1 voxel."""
    bounds = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in chunks]
    index = {b.index: bi for bi, b in enumerate(blocks)}

    def around(b, depth):
        ranges = []
        for a, s in enumerate(b.core):
            first = int(np.searchsorted(bounds[a], s.start - depth[a], side="right") - 1)
            last = int(np.searchsorted(bounds[a], s.stop + depth[a], side="left") - 1)
            ranges.append(range(max(first, 0), min(last, len(bounds[a]) - 2) + 1))
        return [index[i] for i in itertools.product(*ranges) if i != b.index]

    near = [around(b, halo) for b in blocks]
    faces = [around(b, (1,) * len(halo)) for b in blocks]
    return near, faces


def _bounds(core) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray([s.start for s in core], dtype=np.int64),
            np.asarray([s.stop for s in core], dtype=np.int64))


# ----------------------------------------------------------------- tasks
def _scan_block(mreg, mchunks, dreg, dchunks, preg, pchunks, core, frame_shape, compat=False,
                use_libm=True):
    """Markers of a block core, their distance maximum within the core, the block's log
    minimum and the core's one-voxel distance faces that neighbouring blocks need."""
    lo, hi = _bounds(core)
    markers = to_host(read_region(mreg, mchunks))
    flat = np.flatnonzero(markers > 0)
    pts = np.stack(np.unravel_index(flat, markers.shape), axis=1).astype(np.int64).reshape(-1, markers.ndim)
    pts += lo
    del markers
    distance = to_host(read_region(dreg, dchunks))
    local = window_max(distance, pts, lo, hi, lo)
    faces = []
    for a in range(len(frame_shape)):
        for side, there in ((0, lo[a] > 0), (-1, hi[a] < frame_shape[a])):
            if there:
                cut = [slice(None)] * distance.ndim
                cut[a] = slice(side, None) if side else slice(0, 1)
                start = lo.copy()
                if side:
                    start[a] = hi[a] - 1
                faces.append((start, np.array(distance[tuple(cut)], copy=True)))
    return pts, local, log_min(to_host(read_region(preg, pchunks)), compat, use_libm), faces


def _block_radii(scan, around, core, frame_shape):
    """``(points, ROI half-widths, log minimum)`` of a block: ``ceil(2 * maxfilter(distance))``
    over the whole 3^d window of each marker (clipped to the frame), as Nellie."""
    pts, best, lmin, _ = scan
    lo, hi = _bounds(core)
    edge = np.any((pts == lo) | (pts == hi - 1), axis=1)
    if np.any(edge):
        faces = [f for s in around for f in s[3]]
        best = best.copy()
        best[edge] = _outside_max(pts[edge], best[edge], lo, hi, frame_shape, faces)
    return pts, np.ceil(best * best.dtype.type(2)), lmin


def _outside_max(pts, best, lo, hi, frame_shape, faces):
    """``best`` raised to the neighbours' values in each point's 3^d window outside ``[lo, hi)``."""
    best = best.copy()
    last = np.asarray(frame_shape, dtype=np.int64) - 1
    for off in np.ndindex(*(3,) * len(frame_shape)):
        q = np.clip(pts + (np.asarray(off) - 1), 0, last)
        out = np.any((q < lo) | (q >= hi), axis=1)
        if not np.any(out):
            continue
        qo = q[out]
        vals = np.zeros(len(qo), best.dtype)
        seen = np.zeros(len(qo), bool)
        for start, face in faces:
            inside = np.all((qo >= start) & (qo < start + np.asarray(face.shape)), axis=1)
            if np.any(inside):
                vals[inside] = face[tuple((qo[inside] - start).T)]
                seen |= inside
        if not np.all(seen):  # pragma: no cover - the faces cover every window by construction
            raise RuntimeError("a marker's distance window reaches beyond the neighbouring faces")
        best[out] = np.maximum(best[out], vals)
    return best


def _frame_summary(scans, halo, params: FlowParams, ndim: int) -> dict:
    n = sum(len(s[0]) for s in scans)
    mins = [s[2] for s in scans if s[2] is not None]
    shift = min(mins) if mins else None
    if n == 0:
        return {"n": 0, "cube": 1, "shift": shift, "streaming": False}
    widest = float(max(float(s[1].max()) for s in scans if len(s[0])))
    cube = int(widest) * 2 + 1
    if widest > min(halo):
        raise InputError(
            f"a marker's ROI half-width is {int(widest)} voxels, beyond the feature halo of "
            f"{min(halo)} voxels allowed by max_radius_um={params.max_radius_um!r}; pass a larger "
            "max_radius_um (the marker stage's max_radius_um)"
        )
    streaming = params.low_memory or n * cube ** ndim > params.max_dense_roi_voxels
    return {"n": n, "cube": cube, "shift": shift, "streaming": streaming}


def _roi_window(pts, radii, frame_shape):
    """Frame box ``[lo, hi)`` that holds the ROI boxes of ``pts`` (None without points)."""
    if len(pts) == 0:
        return None
    lo = np.clip(pts - radii[:, None], 0, None).min(axis=0).astype(np.int64)
    hi = np.minimum(pts + radii[:, None] + 1, np.asarray(frame_shape)).max(axis=0).astype(np.int64)
    return lo, hi


def _ring_block(rreg, rchunks, preg, pchunks, summary, near, radii, core, frame_shape):
    """Per neighbouring block: the part of this core (raw, preprocessed) its ROI window covers.

    ``summary`` is a dependency only: the ring is read once the frame's scan is done,
    so its chunks are not held through it.
    """
    lo, hi = _bounds(core)
    wanted = {}
    for j, (pts, r, _) in zip(near, radii):
        win = _roi_window(pts, r, frame_shape)
        if win is None:
            continue
        a, b = np.maximum(win[0], lo), np.minimum(win[1], hi)
        if np.all(b > a):
            wanted[j] = (a, b)
    if not wanted:
        return {}
    raw = to_host(read_region(rreg, rchunks))
    pre = to_host(read_region(preg, pchunks))
    ring = {}
    for j, (a, b) in wanted.items():
        cut = tuple(slice(x, y) for x, y in zip(a - lo, b - lo))
        ring[j] = (a, np.array(raw[cut], copy=True), np.array(pre[cut], copy=True))
    return ring


def _features_block(rreg, rchunks, preg, pchunks, radii, summary, me, rings, frame_shape, compat,
                    use_libm=True):
    pts, r, _ = radii
    win = _roi_window(pts, r, frame_shape)
    if win is None:
        return FrameFeatures.empty(len(frame_shape))
    lo, hi = win
    start = np.asarray(rreg.start, dtype=np.int64)
    raw_parts = [(start, to_host(read_region(rreg, rchunks)))]
    pre_parts = [(start, to_host(read_region(preg, pchunks)))]
    for ring in rings:
        if me in ring:
            at, rp, pp = ring[me]
            raw_parts.append((at, rp))
            pre_parts.append((at, pp))
    raw = paste(lo, hi, raw_parts, rreg.dtype)
    pre = paste(lo, hi, pre_parts, preg.dtype)
    return block_features(raw, pre, pts, r, offset=tuple(lo.tolist()),
                          frame_shape=frame_shape, cube=summary["cube"], shift=summary["shift"],
                          compat=compat, streaming=compat and summary["streaming"], use_libm=use_libm)


def _match_pair(t, post, pre, spacing, radius, params: FlowParams):
    i, j, c = match_frames(post, pre, spacing=spacing, radius_um=radius,
                           compat=params.compat == "nellie", mode=params.mode,
                           max_dense_pairs=params.max_dense_pairs)
    return flow_rows(t, post, pre, i, j, c)
