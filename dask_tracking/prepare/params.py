"""Frozen parameter objects of the preparation stages, with the spec's defaults.

Radii are in micrometres; every radius -> voxel conversion uses the X voxel size,
as Nellie 1.0.4 does (``nellie-prepare-spec.md`` section 1.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

from ..dataset import InputError, Scale

__all__ = ["FilterParams", "LabelParams", "NetworkParams", "MarkerParams", "PrepareParams",
           "filter_sigmas", "marker_sigmas", "sigma_vector"]


def _check_positive(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{owner}.{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{owner}.{name} must be a finite number {allowed}, got {value!r}")


@dataclass(frozen=True)
class FilterParams:
    """Filter (multi-scale Frangi in 3D, Frangi + LoG in 2D) -> ``preprocessed``.

    Parameters
    ----------
    min_radius_um, max_radius_um : float
        Structure radii in um; the scale ladder is ``arange(r_min/sX/2, r_max/sX/3, step)``.
    alpha_sq, beta_sq : float
        Denominators of Ra**2 and Rb**2 in the vesselness.
    frob_thresh : float or None
        Fixed Frobenius-norm threshold; ``None`` estimates it per frame and scale.
    frob_thresh_division : float
        The Frobenius mask is ``F > thr / frob_thresh_division``; 0 means ``F > 0``.
    max_threshold_samples : int
        Cap of the deterministic strided sample behind every threshold (voxels).
    truncate : float
        Gaussian truncation (in sigmas) of the cascade.
    """

    min_radius_um: float = 0.25
    max_radius_um: float = 1.0
    alpha_sq: float = 0.5
    beta_sq: float = 0.5
    frob_thresh: float | None = None
    frob_thresh_division: float = 2
    max_threshold_samples: int = 1_000_000
    truncate: float = 3.0

    def __post_init__(self) -> None:
        for n in ("min_radius_um", "max_radius_um", "alpha_sq", "beta_sq", "truncate",
                  "max_threshold_samples"):
            _check_positive("FilterParams", n, getattr(self, n))
        _check_positive("FilterParams", "frob_thresh_division", self.frob_thresh_division or 0,
                        allow_zero=True)
        if self.frob_thresh is not None:
            _check_positive("FilterParams", "frob_thresh", self.frob_thresh, allow_zero=True)


@dataclass(frozen=True)
class LabelParams:
    """Label (threshold, fill holes, components, size filter, smoothing) -> ``labels``.

    Parameters
    ----------
    min_radius_um : float
        Objects smaller than a ball (disc in 2D) of ``max(min_radius_um, sX)`` are removed.
    threshold : float or None
        Optional fixed raw-intensity pre-mask (voxels with raw <= threshold are dropped).
    otsu_thresh_intensity : bool
        Use Otsu's threshold of the raw frame as the intensity pre-mask.
    threshold_sampling_pixels : int
        Cap of the flat strided sample behind the thresholds.
    """

    min_radius_um: float = 0.25
    threshold: float | None = None
    otsu_thresh_intensity: bool = False
    threshold_sampling_pixels: int = 1_000_000

    def __post_init__(self) -> None:
        _check_positive("LabelParams", "min_radius_um", self.min_radius_um)
        _check_positive("LabelParams", "threshold_sampling_pixels", self.threshold_sampling_pixels)
        if self.threshold is not None:
            _check_positive("LabelParams", "threshold", self.threshold, allow_zero=True)

    def min_size_voxels(self, spacing: tuple[float, ...]) -> int:
        """Minimum object size in voxels for a spacing ``(z, y, x)`` or ``(y, x)`` in um."""
        x = float(spacing[-1])
        y = float(spacing[-2])
        r = max(float(self.min_radius_um), x)
        if len(spacing) == 2:
            return max(1, int(np.ceil(np.pi * (r ** 2) / (x * y))))
        z = float(spacing[0])
        return max(1, int(np.ceil((4.0 / 3.0) * np.pi * (r ** 3) / (x * y * z))))


@dataclass(frozen=True)
class NetworkParams:
    """Network (skeleton, pixel class, branch ids). Nellie's radii here feed only dead code,
    so the stage has no numeric knob; the object exists for symmetry and future options."""


@dataclass(frozen=True)
class MarkerParams:
    """Markers (distance transform, multi-scale LoG peaks, NMS by raw intensity).

    Parameters
    ----------
    min_radius_um, max_radius_um : float
        Radii in um; the minimum is raised to sX. The distance is clamped at
        ``2 * max_radius_um / sX`` voxels.
    num_sigma : int
        Number of LoG scales (before the 0.2 minimum step).
    peak_min_distance : int
        Half-width in voxels of the NMS window.
    use_im : {"distance", "frangi"}
        Image the LoG peaks are searched in.
    """

    min_radius_um: float = 0.20
    max_radius_um: float = 1.0
    num_sigma: int = 5
    peak_min_distance: int = 2
    use_im: str = "distance"

    def __post_init__(self) -> None:
        _check_positive("MarkerParams", "min_radius_um", self.min_radius_um)
        _check_positive("MarkerParams", "max_radius_um", self.max_radius_um)
        _check_positive("MarkerParams", "num_sigma", self.num_sigma)
        _check_positive("MarkerParams", "peak_min_distance", self.peak_min_distance, allow_zero=True)
        if self.use_im not in ("distance", "frangi"):
            raise InputError(
                f"MarkerParams.use_im must be 'distance' or 'frangi', got {self.use_im!r}"
            )

    def max_radius_px(self, spacing: tuple[float, ...]) -> float:
        return float(self.max_radius_um) / float(spacing[-1])


@dataclass(frozen=True)
class PrepareParams:
    """All preparation parameters: one frozen object per stage."""

    filter: FilterParams = field(default_factory=FilterParams)
    label: LabelParams = field(default_factory=LabelParams)
    network: NetworkParams = field(default_factory=NetworkParams)
    markers: MarkerParams = field(default_factory=MarkerParams)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> "PrepareParams":
        """Build from flat keyword options ``{"filter_min_radius_um": 0.3, "label_threshold": 100}``.

        Every key is ``<stage>_<field>``; unknown keys raise :class:`InputError` listing the allowed ones.
        """
        groups = {"filter": FilterParams, "label": LabelParams, "network": NetworkParams,
                  "markers": MarkerParams}
        kw: dict[str, dict[str, Any]] = {g: {} for g in groups}
        allowed = [f"{g}_{f.name}" for g, c in groups.items() for f in fields(c)]
        for key, value in dict(options or {}).items():
            for g in groups:
                if key.startswith(g + "_") and key[len(g) + 1:] in {f.name for f in fields(groups[g])}:
                    kw[g][key[len(g) + 1:]] = value
                    break
            else:
                raise InputError(f"unknown preparation option {key!r}; allowed: {', '.join(allowed)}")
        return cls(**{g: groups[g](**kw[g]) for g in groups})


def sigma_vector(sigma: float, spacing: tuple[float, ...]) -> tuple[float, ...]:
    """Per-axis sigma in voxels: ``(sigma / zr, sigma, sigma)`` in 3D, ``(sigma, sigma)`` in 2D."""
    if len(spacing) == 2:
        return (float(sigma), float(sigma))
    z_ratio = float(spacing[0]) / float(spacing[-1])
    return (float(sigma) / z_ratio, float(sigma), float(sigma))


def filter_sigmas(params: FilterParams, spacing: tuple[float, ...]) -> list[float]:
    """The Filter's scale ladder in voxels of X (spec 1.3), increasing."""
    sx = float(spacing[-1])
    s1 = float(params.min_radius_um) / sx / 2.0
    s2 = float(params.max_radius_um) / sx / 3.0
    lo, hi = min(s1, s2), max(s1, s2)
    if hi <= lo:
        hi = lo + 0.2
    step = max(0.2, (hi - lo) / 5.0)
    return sorted(float(s) for s in np.arange(lo, hi, step, dtype=float))


def marker_sigmas(params: MarkerParams, spacing: tuple[float, ...]) -> list[float]:
    """The Markers' LoG ladder in voxels of X (spec 1.3)."""
    sx = float(spacing[-1])
    r_min = max(float(params.min_radius_um), sx)
    lo = r_min / sx / 2.0
    hi = float(params.max_radius_um) / sx / 3.0
    if hi - lo <= 0:
        return [lo]
    step = max(0.2, (hi - lo) / max(int(params.num_sigma), 1))
    out = [float(s) for s in np.arange(lo, hi, step)]
    return out or [lo]


def spacing_of(scale: Scale) -> tuple[float, ...]:
    """Spatial spacing ``(z, y, x)`` or ``(y, x)`` in um."""
    return tuple(float(s) for s in scale.spatial)
