"""``prepare``: a raw movie -> the six tracking inputs (plus skeleton, pixel class, border), lazily."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..config import resolve_compat
from ..dataset import InputError, Scale, TrackingDataset
from .frangi import filter_movie
from .label import label_movie
from .markers import markers_movie
from .network import network_movie
from .params import PrepareParams

__all__ = ["prepare", "PreparedMovie", "EXTRAS"]

#: Extra outputs of the preparation beyond the six tracking inputs (Nellie's names in brackets):
#: ``skeleton`` (im_skel, int32 branch seeds), ``pixel_class`` (im_pixel_class, uint8),
#: ``border`` (im_border, uint8).
EXTRAS: tuple[str, ...] = ("skeleton", "pixel_class", "border")


@dataclass(frozen=True)
class PreparedMovie:
    """The result of :func:`prepare` with ``return_extras=True``.

    Attributes
    ----------
    dataset : TrackingDataset
        ``raw``, ``preprocessed``, ``labels``, ``branches``, ``distance``, ``markers``.
    skeleton : dask.array.Array, int32
        Branch seeds: connected non-junction skeleton voxels, ids in raster order (Nellie's im_skel).
    pixel_class : dask.array.Array, uint8
        0 background, 1 isolated, 2 tip, 3 edge, 4 junction (Nellie's im_pixel_class).
    border : dask.array.Array, uint8
        Outer one-voxel shell of the objects (Nellie's im_border).
    params : PrepareParams
    compat : str or None
    """

    dataset: TrackingDataset
    skeleton: da.Array
    pixel_class: da.Array
    border: da.Array
    params: PrepareParams
    compat: str | None = None

    def extras(self) -> dict[str, da.Array]:
        """``{"skeleton", "pixel_class", "border"}``."""
        return {name: getattr(self, name) for name in EXTRAS}


def _movie(raw: Any, scale: Any, axes: str | None, channel: int | None):
    from ..io.raw import as_movie, open_raw

    if isinstance(raw, (str, Path)):
        return open_raw(raw, scale, channel=channel, axes=axes) + (str(raw),)
    if isinstance(raw, TrackingDataset):
        return raw.raw.rechunk({0: 1}), raw.scale, raw.axes, raw.source or "dataset"
    if not (isinstance(raw, (da.Array, np.ndarray)) or hasattr(raw, "__array__")):
        raise InputError(
            f"raw must be a path (OME-TIFF, OME-Zarr, ND2), a numpy or dask array (T, Z, Y, X) or "
            f"(T, Y, X), got {type(raw).__name__}"
        )
    return as_movie(raw, scale, axes=axes, channel=channel) + ("array",)


def prepare(raw: Any, scale: Any = None, *, compat: Any = None, params: PrepareParams | None = None,
            axes: str | None = None, channel: int | None = None, return_extras: bool = False,
            **options: Any) -> TrackingDataset | PreparedMovie:
    """Turn a raw movie into the six tracking inputs with Nellie's preparation stages, lazily.

    Filter (multi-scale Frangi in 3D, Frangi + LoG in 2D) -> ``preprocessed``; Label ->
    ``labels``; Network -> ``branches`` (+ skeleton, pixel class); Markers -> ``markers``,
    ``distance`` (+ border). Nothing is computed here: the result holds dask arrays.

    Parameters
    ----------
    raw : path, numpy or dask array
        A raw movie: an OME-TIFF / OME-Zarr / ND2 path (scale read from its metadata), or
        an array (T, Z, Y, X) or (T, Y, X) of intensities (any real dtype).
    scale : Scale, mapping or sequence, optional
        T in s, Z/Y/X in um. Required for arrays; replaces a file's metadata.
    compat : {None, "nellie"}
        ``"nellie"``: Nellie 1.0.4's preparation bit for bit (it raises on a frame whose
        threshold sample falls in one histogram bin); ``None``: the same, with that guarded.
    params : PrepareParams, optional
        All stage parameters; or give flat keyword ``options`` such as
        ``filter_min_radius_um=0.3``, ``label_threshold=110``, ``markers_peak_min_distance=3``.
    axes : str, optional
        Axes of an array input, e.g. ``"TZYX"`` (default for 4-D), ``"TYX"`` (3-D), ``"TCZYX"``;
        for a file, replaces the axes it declares (e.g. ``"TYX"`` for a plain TIFF stack).
    channel : int, optional
        Channel to use from a multi-channel movie.
    return_extras : bool
        Return a :class:`PreparedMovie` (dataset + skeleton, pixel class, border).

    Returns
    -------
    TrackingDataset or PreparedMovie
        Arrays with the raw movie's chunks (one frame per chunk along T).

    Raises
    ------
    InputError
        Unknown options, a movie without a time axis, no scale, bad parameters; all
        raised before any work.

    Examples
    --------
    >>> import dask_tracking as dt
    >>> ds = dt.prepare("movie.ome.tif")                      # doctest: +SKIP
    >>> ds = dt.prepare(arr, {"T": 4.5, "Z": 0.25, "Y": 0.0655, "X": 0.0655}, compat="nellie")  # doctest: +SKIP
    >>> dt.write_tracking_zarr(ds, "inputs.zarr")             # doctest: +SKIP
    """
    mode = resolve_compat(compat)
    if params is None:
        params = PrepareParams.from_options(options)
    elif options:
        raise InputError(f"give params= or flat options, not both (got options {sorted(options)})")
    elif not isinstance(params, PrepareParams):
        raise InputError(f"params must be a PrepareParams, got {type(params).__name__}")
    movie, sc, order, source = _movie(raw, scale, axes, channel)
    if not (np.issubdtype(movie.dtype, np.integer) or np.issubdtype(movie.dtype, np.floating)) \
            or movie.dtype == np.bool_:
        raise InputError(f"raw has dtype {movie.dtype}; allowed: an integer or float dtype")
    guard = mode is None
    spacing = tuple(float(s) for s in sc.spatial)
    pre = filter_movie(movie, spacing, params.filter, guard=guard)
    # Label, Network and Markers need whole frames: one task per frame
    whole = (1,) + (-1,) * (movie.ndim - 1)
    pre_w, raw_w = pre.rechunk(whole), movie.rechunk(whole)
    labels_w = label_movie(pre_w, raw_w, spacing, params.label, guard=guard)
    net = network_movie(labels_w, pre_w, spacing, chunks=movie.chunks)
    mk = markers_movie(labels_w, raw_w, spacing, params.markers, preprocessed=pre_w, chunks=movie.chunks)
    labels = labels_w.rechunk(movie.chunks) if labels_w.chunks != movie.chunks else labels_w
    ds = TrackingDataset.from_arrays(
        {"raw": movie, "preprocessed": pre, "distance": mk["distance"], "markers": mk["markers"],
         "labels": labels, "branches": net["branches"]},
        sc, axes=order, source=source)
    if not return_extras:
        return ds
    return PreparedMovie(ds, net["skel"], net["pixel_class"], mk["border"], params, mode)
