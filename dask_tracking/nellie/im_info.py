"""``ImInfo``: Nellie's image-info object, here an adapter around a TrackingDataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..dataset import InputError, TrackingDataset
from ..flow.table import FlowTable
from ..io.open import open_dataset

__all__ = ["ImInfo", "show_status"]


def show_status(viewer: Any, text: str) -> None:
    """Put ``text`` in a napari-like viewer's status bar (Nellie's ``viewer`` argument); never raises."""
    if viewer is None:
        return
    try:
        viewer.status = text
    except Exception:  # a viewer that refuses status text is not an error
        pass


class ImInfo:
    """A dataset plus where the outputs go, with Nellie's attribute names.

    Parameters
    ----------
    source : TrackingDataset, path or mapping
        Anything :func:`dask_tracking.open_dataset` accepts.
    output : str or Path, optional
        A zarr v3 group where the stages write (``flow``, ``labels_reassigned``...).
        Nellie's own files, when asked for, go to ``<output parent>/nellie_necessities``
        unless ``nellie_dir`` is given.
    scale : optional
        Scale override (T in s, Z/Y/X in um).
    nellie_dir : str or Path, optional
        Folder for Nellie-format files (``flow_vector_array.npy``, OME-TIFFs).
    stem : str, optional
        File-name stem of Nellie-format files (default: the output's name).

    Attributes
    ----------
    dataset : TrackingDataset
    shape, axes, no_z, no_t, dim_res : as in Nellie (``dim_res`` maps T/Z/Y/X to
        s/um, Z is None for 2D).
    flow : FlowTable or None
        Set by ``HuMomentTracking.run()``; read back from ``output`` when needed.
    """

    def __init__(self, source: Any, output: str | Path | None = None, *, scale: Any = None,
                 nellie_dir: str | Path | None = None, stem: str | None = None):
        self.dataset: TrackingDataset = open_dataset(source, scale)
        self.output = Path(output) if output is not None else None
        self.nellie_dir = Path(nellie_dir) if nellie_dir is not None else (
            self.output.parent / "nellie_necessities" if self.output is not None else None)
        self.stem = stem or (self.output.stem if self.output is not None else "dask_tracking")
        self.flow: FlowTable | None = None

    # Nellie's attribute names
    @property
    def shape(self) -> tuple[int, ...]:
        return self.dataset.shape

    @property
    def axes(self) -> str:
        return self.dataset.axes

    @property
    def no_z(self) -> bool:
        return self.dataset.ndim == 2

    @property
    def no_t(self) -> bool:
        return self.dataset.n_frames < 2

    @property
    def dim_res(self) -> dict[str, float | None]:
        s = self.dataset.scale
        return {"T": s.t, "Z": s.z, "Y": s.y, "X": s.x}

    def output_group(self, mode: str = "a"):
        """The output zarr group (created on first write)."""
        import zarr

        if self.output is None:
            raise InputError("this ImInfo has no output location; pass output='OUT.zarr'")
        return zarr.open_group(str(self.output), mode=mode)

    def nellie_path(self, key: str) -> Path:
        """``<nellie_dir>/<stem>-<key><ext>`` as Nellie names its files (spec 0.2)."""
        if self.nellie_dir is None:
            raise InputError("this ImInfo has no nellie_dir (and no output to derive one from)")
        ext = ".npy" if key in ("flow_vector_array", "voxel_matches") else ".ome.tif"
        return self.nellie_dir / f"{self.stem}-{key}{ext}"

    def flow_table(self) -> FlowTable:
        """The flow of this dataset: ``self.flow`` if set, else read from ``output``."""
        if self.flow is not None:
            return self.flow
        if self.output is not None and (self.output / "flow").exists():
            self.flow = FlowTable.from_zarr(str(self.output))
            return self.flow
        raise InputError(
            "no flow vectors yet: run HuMomentTracking(im_info).run() first, or set im_info.flow"
        )
