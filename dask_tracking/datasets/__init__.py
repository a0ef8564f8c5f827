"""Datasets: seeded synthetic organelle movies with ground-truth motion."""

from .hard import synthetic_hard
from .synthetic import SyntheticTruth, synthetic, write_synthetic_zarr

__all__ = ["SyntheticTruth", "synthetic", "synthetic_hard", "write_synthetic_zarr"]
