"""``reassign_labels``: the public entry point of the stage."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..dataset import InputError, TrackingDataset
from ..flow.table import FlowTable
from .graph import build_graph
from .params import ReassignParams
from .result import Reassignment

__all__ = ["reassign_labels"]


def _with_t(block: np.ndarray) -> np.ndarray:
    return block[None]


def _check_initial(initial: Any, ds: TrackingDataset) -> tuple[int, da.Array, da.Array] | None:
    if initial is None:
        return None
    try:
        t0, lab, br = initial
    except (TypeError, ValueError):
        raise InputError(
            "initial must be a tuple (t0, labels_t0, branches_t0) of a frame index and two "
            f"arrays of spatial shape {ds.spatial_shape}, got {type(initial).__name__}"
        ) from None
    if not isinstance(t0, (int, np.integer)) or not 0 <= int(t0) < ds.n_frames:
        raise InputError(f"initial frame t0 must be an integer in [0, {ds.n_frames - 1}], got {t0!r}")
    out = []
    for name, a in (("labels_t0", lab), ("branches_t0", br)):
        a = da.asarray(a)
        if tuple(a.shape) != ds.spatial_shape:
            raise InputError(f"initial {name} has shape {tuple(a.shape)}; allowed: the spatial shape "
                             f"{ds.spatial_shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"initial {name} has dtype {a.dtype}; allowed: an integer dtype")
        out.append(a.rechunk(ds.spatial_chunks))
    return int(t0), out[0], out[1]


def reassign_labels(dataset: TrackingDataset, flow: FlowTable, *, compat: Any = None,
                    max_distance_um: float = 0.5, fill_unmatched: bool | None = None,
                    continue_past_empty: bool | None = None,
                    initial: tuple[int, Any, Any] | None = None,
                    max_displacement_um: float | None = None, objects: bool = True,
                    id_base: tuple[int, int] | None = None) -> Reassignment:
    """Carry frame-0 object and branch identities through time, voxel by voxel.

    For each frame pair (t, t+1) every labelled voxel of t is moved by the flow
    interpolated at t (forward) and every labelled voxel of t+1 by the flow
    interpolated at t+1 (backward); a predicted position whose nearest labelled
    voxel of the other frame lies within the radius gives a candidate match. Each
    target voxel takes the reassigned label of frame t with the largest sum of
    ``1 / (error + 1e-6)`` over its candidates (Nellie's VoxelReassigner, spec 4).

    Parameters
    ----------
    dataset : TrackingDataset
        Uses ``labels`` (objects) and ``branches``; (T, Z, Y, X) or (T, Y, X),
        one frame per chunk, any spatial chunks.
    flow : FlowTable
        Flow rows per frame pair (``estimate_flow``). The block halos need a bound
        on the flow vectors: a computed table gives its own largest vector per pair;
        a lazy table stays lazy when it records its matching gate
        (``attrs["gate_radius_um"]``, as ``estimate_flow`` does: no vector is longer)
        or when ``max_displacement_um`` is given, and is computed here otherwise
        (it is small: a few rows per marker).
    compat : {None, "nellie"}
        ``"nellie"``: Nellie 1.0.4 bit for bit (tie rules, the interpolation batch's
        quirk Q-A, the stop at the first pair without voxels or candidates).
    max_distance_um : float
        Speed in um/s; the radius is ``max(max_distance_um * dt, 0.5)`` um. It is
        both the interpolation radius and the gate on the prediction error.
    fill_unmatched : bool, optional
        Default mode: labelled voxels that receive no candidate take the majority
        reassigned label of their frame-(t+1) object, or a new id (``base_t +
        original id`` with ``base_t`` the sum of the largest original ids of the
        earlier frames) when the object has none. Default True; False (and
        required False) in compat mode.
    continue_past_empty : bool, optional
        Default mode: go on after a pair without voxels or candidates (B14). Default
        True; False in compat mode.
    initial : (t0, labels_t0, branches_t0), optional
        Resume: start the chain at frame ``t0`` from these reassigned labels
        (spatial-shape arrays, numpy or dask). Frames before ``t0`` are zeros in
        the result (write ``frames=range(t0 + 1, T)``); new ids and all later
        frames equal those of an uninterrupted run.
    max_displacement_um : float, optional
        Bound on the length of every flow vector, um (sets the halos; a vector
        longer than it would be missed). Default: from the flow (see ``flow``).
    objects : bool
        Carry the object ids (default). False: only the branch ids (when the objects'
        identities come from another rule, e.g.
        :func:`dask_tracking.reassign.object_vote.object_vote_chain`); the
        result's ``labels`` is then None and no work is spent on them.
    id_base : (int, int), optional
        With ``initial``: the new-id bases (objects, branches) of frame ``t0``, i.e. the
        sums of the largest original ids of the frames before ``t0`` in the whole movie
        (an uninterrupted run's ``next_id_base`` at that frame). Frames before ``t0`` are
        then not read, so a long movie can be reassigned in windows of frames, each
        started from the last frame and ``next_id_base`` of the one before. Default: the
        bases are summed from frame 0 of ``dataset``.

    Returns
    -------
    Reassignment
        Lazy ``labels`` and ``branches`` (int32), per-pair ``matches``, and
        ``next_id_base`` (the bases of the last frame).

    Raises
    ------
    InputError
        On a bad dataset, flow, option or initial state, before any work.

    Examples
    --------
    >>> import dask_tracking as dt
    >>> ds = dt.open_dataset("movie.zarr")                      # doctest: +SKIP
    >>> res = dt.reassign_labels(ds, dt.estimate_flow(ds))      # doctest: +SKIP
    >>> res.store("out.zarr", compute=True)                     # doctest: +SKIP
    """
    if not isinstance(dataset, TrackingDataset):
        raise InputError(f"dataset must be a TrackingDataset, got {type(dataset).__name__}")
    if not isinstance(flow, FlowTable):
        raise InputError(f"flow must be a FlowTable, got {type(flow).__name__}")
    if flow.ndim != dataset.ndim:
        raise InputError(f"flow has {flow.ndim} spatial axes but the dataset has {dataset.ndim} ({dataset.axes})")
    if flow.n_frames != dataset.n_frames:
        raise InputError(f"flow covers {flow.n_frames} frames but the dataset has {dataset.n_frames}")
    params = ReassignParams.build(dt=dataset.dt, compat=compat, max_distance_um=max_distance_um,
                                  fill_unmatched=fill_unmatched, continue_past_empty=continue_past_empty)
    init = _check_initial(initial, dataset)
    if not isinstance(objects, (bool, np.bool_)):
        raise InputError(f"objects must be True or False, got {objects!r}")
    base = _check_id_base(id_base, init)
    ds = dataset.with_time_chunks()
    labels = ds.labels
    branches = ds.branches
    if branches.chunks != labels.chunks:
        branches = branches.rechunk(labels.chunks)
    bound_um = max_displacement_um
    if bound_um is not None:
        try:
            bound_um = float(bound_um)
        except (TypeError, ValueError):
            bound_um = -1.0
        if not bound_um >= 0:
            raise InputError(f"max_displacement_um must be a number >= 0 (um), got {max_displacement_um!r}")
    elif flow.is_lazy and flow.attrs.get("gate_radius_um") is not None:
        bound_um = float(flow.attrs["gate_radius_um"])
    lazy_rows = []
    if flow.is_lazy and bound_um is None:
        rows = flow.compute_pairs()
    else:
        rows = []
        for p in flow.pairs:
            if isinstance(p, Delayed):
                rows.append(p)
                lazy_rows.append(p)
            else:
                rows.append(np.asarray(p, dtype=np.float64).reshape(-1, flow.ncols))
    bound_vox = None if bound_um is None else tuple(bound_um / s for s in dataset.spacing)
    kinds = ("obj", "br") if objects else ("br",)
    token = tokenize(labels.name, branches.name, [r.key if isinstance(r, Delayed) else tokenize(r) for r in rows],
                     params, bound_vox, None if init is None else (init[0], init[1].name, init[2].name),
                     kinds, base)
    built = build_graph(token, labels, branches, rows, dataset.spacing, params, init, bound_vox,
                        kinds=kinds, id_base=base)

    name_obj = f"labels-reassigned-{token}"
    name_br = f"branches-reassigned-{token}"
    dsk = dict(built.dsk)
    for key, target in built.labels_keys.items():
        dsk[(name_obj,) + key] = (_with_t, target)
    next_base = None
    if built.next_base_keys:
        nb = (f"next-id-base-{token}",)
        dsk[nb] = (_bases_task, [built.next_base_keys.get(kind, 0) for kind in ("obj", "br")])
    deps = [labels, branches] + ([init[1], init[2]] if init else []) + lazy_rows
    hlg = HighLevelGraph.from_collections(name_obj, dsk, dependencies=deps)
    layers = dict(hlg.layers)
    dependencies = {k: set(v) for k, v in hlg.dependencies.items()}
    layers[name_br] = {(name_br,) + key: (_with_t, target) for key, target in built.branches_keys.items()}
    dependencies[name_br] = {name_obj}
    hlg = HighLevelGraph(layers, dependencies)

    meta = np.empty((0,) * labels.ndim, dtype=np.int32)
    out_labels = da.Array(hlg, name_obj, labels.chunks, dtype=np.int32, meta=meta) if objects else None
    out_branches = da.Array(hlg, name_br, labels.chunks, dtype=np.int32, meta=meta)
    matches = [Delayed(key, hlg, layer=name_obj) for key in built.matches_keys]
    stopped = [Delayed(key, hlg, layer=name_obj) for key in built.stop_keys] if built.stop_keys else None
    if built.next_base_keys:
        next_base = Delayed(nb, hlg, layer=name_obj)
    return Reassignment(out_labels, out_branches, matches, stopped, params, next_base)


def _bases_task(values) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def _check_id_base(id_base: Any, init: Any) -> dict | None:
    if id_base is None:
        return None
    if init is None:
        raise InputError("id_base needs initial (the frame t0 whose new-id bases it gives)")
    try:
        b_obj, b_br = id_base
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in (b_obj, b_br))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"id_base must be two integers >= 0 (objects, branches), got {id_base!r}")
    return {"obj": int(b_obj), "br": int(b_br)}
