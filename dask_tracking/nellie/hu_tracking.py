"""``HuMomentTracking``: Nellie 1.0.4's class, as a thin facade over :func:`dask_tracking.estimate_flow`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import cupy_available
from ..dataset import InputError
from ..flow import MODES, FlowTable, estimate_flow
from .im_info import show_status

__all__ = ["HuMomentTracking"]

_DEVICES = ("auto", "cpu", "gpu", "cuda")


class HuMomentTracking:
    """Marker-to-marker flow vectors between consecutive frames (Nellie's signature).

    Parameters
    ----------
    im_info : dask_tracking.nellie.ImInfo
        The dataset and the output locations.
    num_t : int, optional
        Frames used (``0 .. num_t - 1``); default all.
    max_distance_um : float
        A speed in um/s; the gate is ``max(max_distance_um * dt, 0.5)`` um.
    viewer : object, optional
        Only its ``status`` text is set, as in Nellie.
    device : {"auto", "cpu", "gpu", "cuda"}
        ``"cpu"`` and ``"auto"`` run on the CPU (the GPU pass comes later: "auto"
        never changes results). ``"gpu"``/``"cuda"`` raise an ``InputError`` for now.
    mode : {"auto", "dense", "sparse"}
        Matching path, as in Nellie.
    max_dense_pairs : int
        ``"auto"`` is dense iff ``N_post * N_pre <= max_dense_pairs``.
    max_dense_roi_voxels_cpu : int
        Frames with ``N * R**d`` above it use Nellie's streaming feature layout
        (compat mode only; it rounds Hu moments to float32, as Nellie does).
    max_dense_roi_voxels_gpu : int
        Accepted and recorded; unused until the GPU pass.
    low_memory : bool
        As Nellie: the streaming feature layout (compat mode). Dask already bounds
        memory per task, so in the default mode it changes nothing.
    compat : {None, "nellie"}
        Not in Nellie's signature: ``"nellie"`` for bit-exact Nellie 1.0.4 output,
        ``None`` (default) for the fixed method (see the README).
    write_nellie : bool
        Also write Nellie's ``flow_vector_array.npy`` at
        ``im_info.nellie_path("flow_vector_array")`` (can also be passed to ``run``).
    """

    def __init__(self, im_info: Any, num_t: int | None = None, max_distance_um: float = 1.0,
                 viewer: Any = None, device: str = "auto", mode: str = "auto",
                 max_dense_pairs: int = int(1e7), max_dense_roi_voxels_cpu: int = int(5e7),
                 max_dense_roi_voxels_gpu: int = int(2e7), low_memory: bool = False, *,
                 compat: Any = None, write_nellie: bool = False):
        self.im_info = im_info
        dev = str(device).lower() if device is not None else "auto"
        if dev not in _DEVICES:
            raise InputError(f"device must be one of {', '.join(map(repr, _DEVICES))}, got {device!r}")
        if dev in ("gpu", "cuda"):
            raise InputError(
                f"device={device!r}: the GPU path of HuMomentTracking is not available yet; "
                "use device='cpu' or 'auto' (which runs on the CPU)"
                + ("" if cupy_available() else " (and no CUDA device was found)")
            )
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        self.num_t = num_t
        self.max_distance_um = max_distance_um
        self.viewer = viewer
        self.device = dev
        self.mode = mode
        self.max_dense_pairs = max_dense_pairs
        self.max_dense_roi_voxels_cpu = max_dense_roi_voxels_cpu
        self.max_dense_roi_voxels_gpu = int(max_dense_roi_voxels_gpu)
        self.low_memory = bool(low_memory)
        self.compat = compat
        self.write_nellie = bool(write_nellie)
        self.flow: FlowTable | None = None

    def _status(self, text: str) -> None:
        show_status(self.viewer, text)

    def flow_table(self) -> FlowTable:
        """The lazy flow table of this object's parameters (nothing computed)."""
        return estimate_flow(
            self.im_info.dataset, max_distance_um=self.max_distance_um, compat=self.compat,
            mode=self.mode, max_dense_pairs=self.max_dense_pairs,
            max_dense_roi_voxels=self.max_dense_roi_voxels_cpu, low_memory=self.low_memory,
            num_t=self.num_t,
        )

    def run(self, *, write_nellie: bool | None = None, **compute_kwargs: Any) -> FlowTable:
        """Compute the flow, set ``im_info.flow``, write it; returns the computed table.

        Writes ``flow`` and ``flow_index`` to ``im_info.output`` (zarr) when it has
        one, and Nellie's ``flow_vector_array.npy`` when ``write_nellie`` (here or
        in the constructor). ``compute_kwargs`` go to ``dask.compute`` (e.g.
        ``scheduler="threads"``). Unlike Nellie, a single-frame dataset raises.
        """
        table = self.flow_table()
        self._status(f"Tracking markers: {table.n_frames} frames.")
        if getattr(self.im_info, "output", None) is not None:
            table = table.to_zarr(self.im_info.output_group(), overwrite=True, **compute_kwargs)
        else:
            table = table.persist(**compute_kwargs)
        self.flow = table
        self.im_info.flow = table
        if self.write_nellie if write_nellie is None else write_nellie:
            path = self.im_info.nellie_path("flow_vector_array")
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = table.to_numpy()
            if len(rows) == 0:
                rows = np.zeros((0, table.ncols), np.float32)  # Nellie saves an empty float32 array
            np.save(path, rows)
        self._status("Tracking markers: done.")
        return table
