"""The data model: six named lazy volumes, their physical scale and axes.

A :class:`TrackingDataset` holds the six inputs of the tracking stage as dask
arrays with axes ``TZYX`` (3D) or ``TYX`` (2D), one frame per chunk along T,
and a :class:`Scale` (T in seconds, Z/Y/X in micrometres). Validation is
structural and reads no data unless ``values=True`` is asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import dask.array as da
import numpy as np

__all__ = ["VOLUMES", "InputError", "Scale", "TrackingDataset", "validate"]

#: Names of the six input volumes, in the order they are listed everywhere.
VOLUMES: tuple[str, ...] = ("raw", "preprocessed", "distance", "markers", "labels", "branches")

#: Volumes that must hold integer ids.
INTEGER_VOLUMES: tuple[str, ...] = ("labels", "branches", "markers")


class InputError(ValueError):
    """Bad input: the message names the argument or array, the value and what is allowed."""


def _positive(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"scale {name!r} must be a positive number, got {value!r} (bool)")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"scale {name!r} must be a positive number, got {value!r} ({type(value).__name__})"
        ) from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"scale {name!r} must be a positive finite number, got {value!r}")
    return v


@dataclass(frozen=True)
class Scale:
    """Physical size of one step on every axis.

    Parameters
    ----------
    t : float
        Frame interval in seconds.
    y, x : float
        Voxel size in micrometres.
    z : float or None
        Voxel size along Z in micrometres; ``None`` for 2D data.
    """

    t: float
    y: float
    x: float
    z: float | None = None

    def __post_init__(self) -> None:
        for name in ("t", "y", "x"):
            object.__setattr__(self, name, _positive(name.upper(), getattr(self, name)))
        if self.z is not None:
            object.__setattr__(self, "z", _positive("Z", self.z))

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return 2 if self.z is None else 3

    @property
    def spatial(self) -> tuple[float, ...]:
        """Voxel size per spatial axis, ``(z, y, x)`` or ``(y, x)``, in micrometres."""
        return (self.y, self.x) if self.z is None else (self.z, self.y, self.x)

    def as_dict(self) -> dict[str, float]:
        """``{"T": s, "Z": um, "Y": um, "X": um}`` (Z left out in 2D)."""
        out = {"T": self.t}
        if self.z is not None:
            out["Z"] = self.z
        out.update({"Y": self.y, "X": self.x})
        return out

    @classmethod
    def coerce(cls, scale: Any, axes: str | None = None) -> "Scale":
        """Build a Scale from a Scale, a mapping ``{"T","Z","Y","X"}`` or a sequence.

        A sequence is read in ``axes`` order (``TZYX`` or ``TYX``). Keys of a mapping
        are case-insensitive. Raises :class:`InputError` naming the missing axis.
        """
        if isinstance(scale, Scale):
            return scale
        if scale is None:
            raise InputError(
                "scale is required: pass scale={'T': seconds, 'Z': um, 'Y': um, 'X': um} "
                "(leave out 'Z' for 2D data)"
            )
        if isinstance(scale, Mapping):
            m = {str(k).upper(): v for k, v in scale.items()}
            unknown = set(m) - {"T", "Z", "Y", "X"}
            if unknown:
                raise InputError(f"scale has unknown axes {sorted(unknown)}; allowed: T, Z, Y, X")
            want = ("T", "Z", "Y", "X") if (axes or "TZYX") == "TZYX" else ("T", "Y", "X")
            if axes is None and "Z" not in m:
                want = ("T", "Y", "X")
            missing = [a for a in want if m.get(a) is None]
            if missing:
                raise InputError(
                    f"scale is missing {', '.join(missing)} (got {dict(scale)!r}); "
                    f"give every axis of {''.join(want)}: T in s, Z/Y/X in um"
                )
            return cls(t=m["T"], y=m["Y"], x=m["X"], z=m.get("Z") if "Z" in want else None)
        try:
            seq = list(scale)
        except TypeError:
            raise InputError(
                f"scale must be a Scale, a mapping or a sequence, got {type(scale).__name__}"
            ) from None
        if len(seq) == 4:
            return cls(t=seq[0], z=seq[1], y=seq[2], x=seq[3])
        if len(seq) == 3:
            return cls(t=seq[0], y=seq[1], x=seq[2])
        raise InputError(
            f"scale sequence must have 4 (T, Z, Y, X) or 3 (T, Y, X) values, got {len(seq)}: {seq!r}"
        )


@dataclass(frozen=True)
class TrackingDataset:
    """The six inputs of the tracking stage, lazily, with scale and axes.

    Parameters
    ----------
    raw, preprocessed, distance, markers, labels, branches : dask.array.Array
        Shape (T, Z, Y, X) or (T, Y, X), all the same, one frame per chunk on T.
        ``raw`` is intensity (any dtype); ``preprocessed`` vesselness (float);
        ``distance`` the distance transform of the object mask in voxels;
        ``markers`` nonzero at tracking markers; ``labels`` object ids per frame;
        ``branches`` branch ids per frame.
    scale : Scale
        T in seconds, Z/Y/X in micrometres.
    axes : {"TZYX", "TYX"}
    source : str, optional
        Where the data came from (a path, or a description), kept as provenance.
    truth : object, optional
        Ground truth for synthetic movies (see :mod:`dask_tracking.datasets`).
    """

    raw: da.Array
    preprocessed: da.Array
    distance: da.Array
    markers: da.Array
    labels: da.Array
    branches: da.Array
    scale: Scale
    axes: str = "TZYX"
    source: str | None = None
    truth: Any = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, ...]:
        """(T, Z, Y, X) or (T, Y, X)."""
        return tuple(self.labels.shape)

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.axes) - 1

    @property
    def n_frames(self) -> int:
        return int(self.labels.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape[1:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size per spatial axis in micrometres."""
        return self.scale.spatial

    @property
    def dt(self) -> float:
        """Frame interval in seconds."""
        return self.scale.t

    @property
    def spatial_chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunks of the spatial axes (taken from ``labels``)."""
        return tuple(self.labels.chunks[1:])

    def arrays(self) -> dict[str, da.Array]:
        """The six volumes by name."""
        return {name: getattr(self, name) for name in VOLUMES}

    # --------------------------------------------------------------- building
    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, Any] | None = None,
        scale: Any = None,
        *,
        axes: str | None = None,
        source: str | None = None,
        truth: Any = None,
        spatial_chunks: Any = None,
        **kwargs: Any,
    ) -> "TrackingDataset":
        """Build and validate a dataset from numpy or dask arrays and an explicit scale.

        Arrays may be given as a mapping or as keywords. numpy arrays are wrapped
        with one frame per chunk; dask arrays are rechunked to one frame per chunk
        on T only if needed.
        """
        given = dict(arrays or {})
        given.update(kwargs)
        missing = [n for n in VOLUMES if n not in given or given[n] is None]
        if missing:
            raise InputError(
                f"missing input arrays: {', '.join(missing)}; a dataset needs all of "
                f"{', '.join(VOLUMES)}"
            )
        extra = sorted(set(given) - set(VOLUMES))
        if extra:
            raise InputError(f"unknown input arrays {extra}; allowed: {', '.join(VOLUMES)}")
        ndims = {n: np.ndim(given[n]) if not hasattr(given[n], "ndim") else given[n].ndim for n in VOLUMES}
        if axes is None:
            nd = ndims["labels"]
            axes = "TZYX" if nd == 4 else "TYX" if nd == 3 else None
            if axes is None:
                raise InputError(
                    f"labels has {nd} dimensions; allowed: 4 (TZYX) or 3 (TYX)"
                )
        if axes not in ("TZYX", "TYX"):
            raise InputError(f"axes must be 'TZYX' or 'TYX', got {axes!r}")
        sc = Scale.coerce(scale, axes)
        out = {}
        for name in VOLUMES:
            a = given[name]
            if not isinstance(a, da.Array):
                a = np.asarray(a) if not hasattr(a, "__array_function__") else a
                if a.ndim >= 1:
                    a = da.from_array(a, chunks=(1,) + tuple(a.shape[1:]))
            out[name] = a
        ds = cls(**out, scale=sc, axes=axes, source=source, truth=truth)
        validate(ds)
        ds = ds.with_time_chunks()
        if spatial_chunks is not None:
            ds = ds.rechunk(spatial_chunks)
        return ds

    def replace(self, **changes: Any) -> "TrackingDataset":
        """A copy with some fields replaced (arrays, scale, source, truth)."""
        return replace(self, **changes)

    def with_time_chunks(self) -> "TrackingDataset":
        """Make every volume one frame per chunk along T (cheap if already so)."""
        changes = {}
        for name, a in self.arrays().items():
            if any(c != 1 for c in a.chunks[0]):
                changes[name] = a.rechunk({0: 1})
        return self.replace(**changes) if changes else self

    def rechunk(self, spatial_chunks: Any) -> "TrackingDataset":
        """Rechunk the spatial axes of all six volumes (T stays one frame per chunk).

        ``spatial_chunks`` is anything dask accepts for the spatial axes, e.g.
        ``(17, 64, 64)``, ``"auto"`` or ``-1`` for whole frames.
        """
        if spatial_chunks == -1 or spatial_chunks is None:
            spatial_chunks = (-1,) * self.ndim
        if isinstance(spatial_chunks, (int, str)):
            spatial_chunks = (spatial_chunks,) * self.ndim
        spatial_chunks = tuple(spatial_chunks)
        if len(spatial_chunks) != self.ndim:
            raise InputError(
                f"spatial_chunks must give {self.ndim} entries for axes {self.axes[1:]}, "
                f"got {spatial_chunks!r}"
            )
        return self.replace(
            **{n: a.rechunk((1,) + spatial_chunks) for n, a in self.arrays().items()}
        )

    def isel(self, t: slice | None = None) -> "TrackingDataset":
        """A time slice of the dataset (e.g. ``ds.isel(t=slice(0, 5))``)."""
        if t is None:
            return self
        return self.replace(**{n: a[t] for n, a in self.arrays().items()})

    def summary(self) -> str:
        """A short text description (shapes, chunks, dtypes, scale)."""
        lines = [f"TrackingDataset {self.axes} {self.shape}  source={self.source}"]
        sc = ", ".join(
            f"{k} {v:.5g} {'s' if k == 'T' else 'um'}" for k, v in self.scale.as_dict().items()
        )
        lines.append(f"  scale: {sc}")
        for name, a in self.arrays().items():
            chunks = tuple(c[0] if len(set(c[:-1] or c)) <= 1 else c for c in a.chunks)
            lines.append(f"  {name:13s} {str(a.dtype):8s} shape={a.shape} chunks={chunks}")
        return "\n".join(lines)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return self.summary()


def validate(ds: TrackingDataset, *, values: bool = False) -> TrackingDataset:
    """Check a dataset's structure (and, with ``values=True``, its values).

    Structural checks read no data: all six arrays present with the same shape,
    axes ``TZYX`` or ``TYX`` matching the number of dimensions, integer labels,
    branches and markers, a float or unsigned distance, a positive scale on every
    axis (Z present exactly for 3D), at least two frames.

    With ``values=True`` it also computes, as one small reduction, the minimum of
    ``distance``, ``labels`` and ``branches`` and checks they are non-negative.

    Raises
    ------
    InputError
        Naming the array or argument, the value found and what is allowed.
    """
    if ds.axes not in ("TZYX", "TYX"):
        raise InputError(f"axes must be 'TZYX' or 'TYX', got {ds.axes!r}")
    nd = len(ds.axes)
    ref_shape = None
    for name in VOLUMES:
        a = getattr(ds, name)
        if a is None:
            raise InputError(f"input array {name!r} is missing; a dataset needs {', '.join(VOLUMES)}")
        if not isinstance(a, da.Array):
            raise InputError(f"input array {name!r} must be a dask array, got {type(a).__name__}")
        if a.ndim != nd:
            raise InputError(
                f"input array {name!r} has {a.ndim} dimensions {a.shape}; axes {ds.axes!r} "
                f"need {nd}"
            )
        if ref_shape is None:
            ref_shape = a.shape
        elif a.shape != ref_shape:
            raise InputError(
                f"input array {name!r} has shape {a.shape}, but raw has {ref_shape}; "
                "all six arrays must have the same shape"
            )
    for name in INTEGER_VOLUMES:
        dt = getattr(ds, name).dtype
        if not (np.issubdtype(dt, np.integer) or dt == np.bool_):
            raise InputError(
                f"input array {name!r} has dtype {dt}; allowed: an integer dtype (ids)"
            )
    dd = ds.distance.dtype
    if not (np.issubdtype(dd, np.floating) or np.issubdtype(dd, np.unsignedinteger)):
        raise InputError(
            f"input array 'distance' has dtype {dd}; allowed: a float or unsigned integer dtype"
        )
    pd = ds.preprocessed.dtype
    if not (np.issubdtype(pd, np.floating) or np.issubdtype(pd, np.integer)):
        raise InputError(f"input array 'preprocessed' has dtype {pd}; allowed: a numeric dtype")
    if not isinstance(ds.scale, Scale):
        raise InputError(f"scale must be a Scale, got {type(ds.scale).__name__}")
    if (ds.scale.z is None) != (ds.axes == "TYX"):
        raise InputError(
            f"scale {ds.scale.as_dict()} does not match axes {ds.axes!r}: give Z exactly for 3D data"
        )
    if ref_shape[0] < 2:
        raise InputError(
            f"the movie has {ref_shape[0]} frame(s) along T (shape {ref_shape}); tracking needs at "
            "least 2 frames"
        )
    if values:
        mins = da.compute(ds.distance.min(), ds.labels.min(), ds.branches.min())
        for name, m in zip(("distance", "labels", "branches"), mins):
            if m < 0:
                raise InputError(
                    f"input array {name!r} has negative values (minimum {m}); allowed: values >= 0"
                )
        if np.issubdtype(dd, np.floating) and not np.isfinite(mins[0]):
            raise InputError(f"input array 'distance' has non-finite values (minimum {mins[0]})")
    return ds
