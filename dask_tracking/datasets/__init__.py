"""Datasets: seeded synthetic organelle movies with ground-truth motion."""

from .synthetic import SyntheticTruth, synthetic, write_synthetic_zarr

__all__ = ["SyntheticTruth", "synthetic", "write_synthetic_zarr"]
