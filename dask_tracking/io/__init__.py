"""Readers and writers: our zarr layout, OME-Zarr, OME-TIFF, Nellie folders, exports."""

from .open import open_dataset
from .zarr_layout import read_tracking_zarr, write_tracking_zarr

__all__ = ["open_dataset", "read_tracking_zarr", "write_tracking_zarr"]
