"""Readers and writers: our zarr layout, OME-Zarr, OME-TIFF, Nellie folders, exports."""

from .chunk_files import ChunkFiles, from_zarr
from .nellie_folder import read_nellie_folder, write_nellie_folder
from .ome_tiff import read_ome_tiff, write_ome_tiff
from .ome_zarr import read_ome_zarr, write_ome_zarr
from .open import open_dataset
from .zarr_layout import read_tracking_zarr, write_tracking_zarr

__all__ = [
    "ChunkFiles",
    "from_zarr",
    "open_dataset",
    "read_nellie_folder",
    "read_ome_tiff",
    "read_ome_zarr",
    "read_tracking_zarr",
    "write_nellie_folder",
    "write_ome_tiff",
    "write_ome_zarr",
    "write_tracking_zarr",
]
