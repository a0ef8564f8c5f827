"""``VoxelReassigner``: Nellie 1.0.4's class, as a thin facade over :func:`dask_tracking.reassign_labels`."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from ..dataset import InputError
from ..flow.table import FlowTable
from ..reassign import Reassignment, reassign_labels
from ..reassign.candidates import FrameIndex, block_candidates, forward_predictions, scaled
from ..reassign.params import ReassignParams
from .im_info import show_status

__all__ = ["VoxelReassigner"]

_DEVICES = ("auto", "cpu", "gpu", "cuda")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class VoxelReassigner:
    """Carry frame-0 object and branch ids through time (Nellie's signature).

    Parameters
    ----------
    im_info : dask_tracking.nellie.ImInfo
        The dataset, its flow (``im_info.flow_table()``) and the output locations.
    num_t : int, optional
        Frames used (``0 .. num_t - 1``); default all.
    viewer : object, optional
        Only its ``status`` text is set, as in Nellie.
    store_running_matches : bool
        Write Nellie's ``voxel_matches.npy`` with the OME-TIFFs (``write_nellie``).
        The zarr output always holds ``voxel_matches/<t>``.
    max_refine_iterations : int
        Accepted for compatibility: extra vote passes never change Nellie's result (spec B5).
    device : {"auto", "cpu", "gpu", "cuda"}
        ``"auto"`` and ``"cpu"`` run on the CPU (cKDTree, as Nellie's CPU path).
        ``"gpu"``/``"cuda"`` raise an ``InputError`` for now.
    low_memory, max_query_points, max_bruteforce_pairs :
        Accepted and checked; results never depend on them, and Dask bounds memory per
        block instead.
    compat : {"nellie", None}
        Not in Nellie's signature. ``"nellie"`` (default here) reproduces Nellie 1.0.4;
        ``None`` is the fixed default mode of :func:`~dask_tracking.reassign_labels`.
    write_nellie : bool
        Also write ``im_obj_label_reassigned``/``im_branch_label_reassigned`` OME-TIFFs
        (and ``voxel_matches.npy``) at ``im_info.nellie_path(...)``.
    """

    def __init__(self, im_info: Any, num_t: int | None = None, viewer: Any = None,
                 store_running_matches: bool = True, max_refine_iterations: int = 3,
                 device: str = "auto", low_memory: bool = False, max_query_points: int = int(1e6),
                 max_bruteforce_pairs: int = int(1e7), *, compat: Any = "nellie",
                 write_nellie: bool = False):
        self.im_info = im_info
        dev = str(device).lower() if device is not None else "auto"
        if dev not in _DEVICES:
            raise InputError(f"device must be one of {', '.join(map(repr, _DEVICES))}, got {device!r}")
        if dev in ("gpu", "cuda"):
            raise InputError(f"device={device!r}: the GPU path of VoxelReassigner is not available yet; "
                             "use device='cpu' or 'auto' (which runs on the CPU)")
        T = im_info.dataset.n_frames
        if num_t is not None:
            num_t = _positive_int("num_t", num_t, 2)
            if num_t > T:
                raise InputError(f"num_t must be at most the number of frames {T}, got {num_t}")
        self.num_t = T if num_t is None else num_t
        self.viewer = viewer
        self.store_running_matches = bool(store_running_matches)
        self.max_refine_iterations = _positive_int("max_refine_iterations", max_refine_iterations, 0)
        self.device = dev
        self.low_memory = bool(low_memory)
        self.max_query_points = _positive_int("max_query_points", max_query_points)
        self.max_bruteforce_pairs = _positive_int("max_bruteforce_pairs", max_bruteforce_pairs)
        self.params = ReassignParams.build(dt=im_info.dataset.dt, compat=compat)
        self.compat = self.params.compat
        self.write_nellie = bool(write_nellie)
        self.result: Reassignment | None = None
        self.running_matches: list = []

    # ------------------------------------------------------------------ pieces
    def _status(self, text: str) -> None:
        show_status(self.viewer, text)

    def _flow(self) -> FlowTable:
        flow = self.im_info.flow_table()
        if flow.n_frames != self.num_t:
            flow = FlowTable(flow.pairs[: self.num_t - 1], flow.ndim, self.num_t, flow.attrs)
        return flow

    def _rows(self, t: int) -> np.ndarray:
        flow = self.im_info.flow_table()
        if not 0 <= t < flow.n_frames - 1:
            raise InputError(f"t must be a frame pair index in [0, {flow.n_frames - 2}], got {t!r}")
        return flow.compute_pairs()[t] if flow.is_lazy else np.asarray(flow.pairs[t], dtype=np.float64)

    def match_voxels(self, vox_prev: Any, vox_next: Any, t: int):
        """Candidate matches of the pair (t, t+1) between two voxel lists (in memory).

        Parameters
        ----------
        vox_prev, vox_next : (N0, d), (N1, d) int
            Labelled voxels of frames t and t+1 (``np.argwhere`` order, as Nellie).
        t : int

        Returns
        -------
        candidate_prev, candidate_next : (n, d) int64
            Source and target voxel of each candidate: forward candidates, then backward.
        distances : (n,) float64
            Prediction error of each candidate, um.
        """
        from ..interpolate.kernel import frame_anchors

        ds = self.im_info.dataset
        nd, sp, r = ds.ndim, ds.spacing, self.params.radius_um
        vp = np.asarray(vox_prev, dtype=np.int64).reshape(-1, nd)
        vn = np.asarray(vox_next, dtype=np.int64).reshape(-1, nd)
        rows = self._rows(t)
        a_fw = frame_anchors(rows, nd, True) if len(rows) else None
        a_bw = frame_anchors(rows, nd, False) if len(rows) else None
        core = tuple(slice(0, n) for n in ds.spatial_shape)
        ip = inx = None
        if self.compat == "nellie":
            from scipy.spatial import cKDTree

            from ..interpolate.kernel import neighbour_counts

            def index(v, anchors, forward):
                k = 0
                if anchors is not None and len(v):
                    k = int(neighbour_counts(anchors, v.astype(float), sp, r).max())
                tree = cKDTree(scaled(v, sp)) if len(v) else None
                keys = np.ravel_multi_index(tuple(v.T), ds.spatial_shape) if len(v) else np.zeros(0, np.int64)
                return FrameIndex(tree, k if forward else 0, 0 if forward else k, keys, None, None,
                                  tuple(ds.spatial_shape))

            ip, inx = index(vp, a_fw, True), index(vn, a_bw, False)
        fwd = forward_predictions(vp, a_fw, sp, r, compat=self.compat, index_prev=ip)
        c = block_candidates([fwd], vp, vn, core, a_bw, sp, r, compat=self.compat,
                             index_prev=ip, index_next=inx)
        return c.source, c.target, c.error

    # -------------------------------------------------------------------- run
    def reassignment(self) -> Reassignment:
        """The lazy :class:`~dask_tracking.reassign.Reassignment` of this object's parameters."""
        ds = self.im_info.dataset
        if self.num_t != ds.n_frames:
            ds = ds.isel(t=slice(0, self.num_t))
        return reassign_labels(ds, self._flow(), compat=self.compat)

    def run(self, *, write_nellie: bool | None = None, **compute_kwargs: Any) -> Reassignment:
        """Compute both reassigned volumes and write them.

        Writes ``labels_reassigned``, ``branches_reassigned`` and ``voxel_matches/<t>``
        to ``im_info.output`` (zarr) when it has one; with ``write_nellie`` also
        Nellie's int32 OME-TIFFs ``im_obj_label_reassigned``/``im_branch_label_reassigned``
        (full T frames, 0 beyond ``num_t``) and, if ``store_running_matches``,
        ``voxel_matches.npy`` (the pairs before Nellie's stop). ``compute_kwargs`` go
        to ``dask.compute``. Returns the Reassignment (its arrays read from the
        output store when there is one).
        """
        import dask
        import dask.array as da

        res = self.reassignment()
        self._status(f"Reassigning voxels: {self.num_t} frames.")
        out = getattr(self.im_info, "output", None)
        if out is not None:
            g = self.im_info.output_group()
            res.store(g, compute=True, **compute_kwargs)
            labels = da.from_zarr(g["labels_reassigned"])
            branches = da.from_zarr(g["branches_reassigned"])
            res = Reassignment(labels, branches, res.matches, res.stopped, res.params)
        self.result = res
        if not (self.write_nellie if write_nellie is None else write_nellie):
            return res
        from ..io.ome_tiff import write_ome_tiff

        ds = self.im_info.dataset
        scale = ds.scale.as_dict()
        for key, arr in (("im_obj_label_reassigned", res.labels),
                         ("im_branch_label_reassigned", res.branches)):
            if arr.shape[0] < ds.n_frames:
                pad = da.zeros((ds.n_frames - arr.shape[0],) + arr.shape[1:], dtype=np.int32,
                               chunks=(1,) + arr.shape[1:])
                arr = da.concatenate([arr, pad])
            path = self.im_info.nellie_path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_ome_tiff(path, arr, axes=ds.axes, scale=scale, dtype=np.int32,
                           description=key.replace("im_", "").replace("_", " "))
        if self.store_running_matches:
            matches = dask.compute(*res.matches, **compute_kwargs)
            stopped = dask.compute(*res.stopped, **compute_kwargs) if res.stopped else [False] * len(matches)
            self.running_matches = [[m[:, 0], m[:, 1]] for m, s in zip(matches, stopped) if not s]
            path = self.im_info.nellie_path("voxel_matches")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.array(self.running_matches, dtype=object))
        return res
