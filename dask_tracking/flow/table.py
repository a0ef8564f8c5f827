"""FlowTable: the flow vectors of a movie, lazily, one block of rows per frame pair.

Rows follow Nellie's ``flow_vector_array.npy`` layout (spec section 1.7):
``t, z, y, x, dz, dy, dx, cost`` in 3D and ``t, y, x, dy, dx, cost`` in 2D,
float64, where ``t`` is the earlier frame of the pair, ``(z, y, x)`` the marker
voxel at ``t`` and ``(dz, dy, dx)`` the displacement to frame ``t + 1`` in voxels.

On disk (zarr v3) a table is two arrays in a group: ``flow`` (M, 2d+2) float64
and ``flow_index`` (T,) int64 holding the first row of each frame pair, so one
frame's rows are read without reading all.
"""

from __future__ import annotations

from typing import Any, Sequence

import dask
import numpy as np
from dask.delayed import Delayed

from ..dataset import InputError

__all__ = ["FlowTable", "flow_columns"]


def flow_columns(ndim: int) -> list[str]:
    """Column names of a flow table with ``ndim`` spatial axes."""
    ax = ["z", "y", "x"] if ndim == 3 else ["y", "x"]
    return ["t", *ax, *("d" + a for a in ax), "cost"]


def _empty(ndim: int) -> np.ndarray:
    return np.zeros((0, 2 * ndim + 2), dtype=np.float64)


class FlowTable:
    """Flow vectors, one lazy block of rows per frame pair ``(t, t+1)``.

    Parameters
    ----------
    pairs : sequence of (Delayed or ndarray)
        ``pairs[t]`` evaluates to the (n_t, 2d+2) float64 rows whose first column
        is ``t``, in output order. ``len(pairs) == n_frames - 1``.
    ndim : {2, 3}
        Number of spatial axes.
    n_frames : int
        Number of frames of the movie (T).
    attrs : dict, optional
        Parameters and provenance, written with the table.
    """

    def __init__(self, pairs: Sequence[Any], ndim: int, n_frames: int, attrs: dict | None = None):
        if ndim not in (2, 3):
            raise InputError(f"ndim must be 2 or 3, got {ndim!r}")
        if len(pairs) != max(n_frames - 1, 0):
            raise InputError(
                f"a FlowTable for {n_frames} frames needs {n_frames - 1} frame pairs, got {len(pairs)}"
            )
        self.pairs = list(pairs)
        self.ndim = int(ndim)
        self.n_frames = int(n_frames)
        self.attrs = dict(attrs or {})

    # ----------------------------------------------------------------- access
    @property
    def columns(self) -> list[str]:
        return flow_columns(self.ndim)

    @property
    def ncols(self) -> int:
        return 2 * self.ndim + 2

    @property
    def is_lazy(self) -> bool:
        return any(isinstance(p, Delayed) for p in self.pairs)

    def frame(self, t: int) -> Any:
        """Rows of the pair ``(t, t+1)`` (a Delayed or an ndarray); empty for ``t`` out of range."""
        if 0 <= t < len(self.pairs):
            return self.pairs[t]
        return _empty(self.ndim)

    def window(self, start: int, stop: int) -> "FlowTable":
        """The table of frames ``start .. stop - 1`` (their pairs ``start .. stop - 2``).

        The rows are not copied or changed: their first column keeps the movie's frame
        index. Used to run a long movie in windows of frames.
        """
        if isinstance(start, bool) or isinstance(stop, bool) or not isinstance(start, (int, np.integer)) \
                or not isinstance(stop, (int, np.integer)) or not 0 <= start < stop <= self.n_frames:
            raise InputError(f"window must satisfy 0 <= start < stop <= {self.n_frames} (frames), "
                             f"got start={start!r}, stop={stop!r}")
        return FlowTable(self.pairs[start:stop - 1], self.ndim, int(stop - start), self.attrs)

    def to_numpy(self, **compute_kwargs: Any) -> np.ndarray:
        """All rows as one (M, 2d+2) float64 array, ordered by frame pair."""
        blocks = self.compute_pairs(**compute_kwargs)
        if not blocks:
            return _empty(self.ndim)
        return np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, self.ncols) for b in blocks])

    def compute_pairs(self, **compute_kwargs: Any) -> list[np.ndarray]:
        """Evaluate every pair's rows (one ``dask.compute``), a list of arrays."""
        lazy = [i for i, p in enumerate(self.pairs) if isinstance(p, Delayed)]
        out = list(self.pairs)
        if lazy:
            vals = dask.compute(*[self.pairs[i] for i in lazy], **compute_kwargs)
            for i, v in zip(lazy, vals):
                out[i] = v
        return [np.asarray(b, dtype=np.float64).reshape(-1, self.ncols) for b in out]

    def persist(self, **compute_kwargs: Any) -> "FlowTable":
        """A FlowTable whose rows are computed (small: a few rows per marker)."""
        return FlowTable(self.compute_pairs(**compute_kwargs), self.ndim, self.n_frames, self.attrs)

    def counts(self, **compute_kwargs: Any) -> np.ndarray:
        """Number of rows per frame pair, (T-1,) int64."""
        return np.array([len(b) for b in self.compute_pairs(**compute_kwargs)], dtype=np.int64)

    def __len__(self) -> int:
        if self.is_lazy:
            raise TypeError("len() of a lazy FlowTable: call .persist() or .to_numpy() first")
        return int(sum(len(b) for b in self.pairs))

    def __repr__(self) -> str:
        state = "lazy" if self.is_lazy else f"{len(self)} rows"
        return f"FlowTable(ndim={self.ndim}, n_frames={self.n_frames}, {state})"

    # -------------------------------------------------------------- building
    @classmethod
    def from_numpy(cls, array: Any, ndim: int | None = None, n_frames: int | None = None,
                   attrs: dict | None = None) -> "FlowTable":
        """Split a Nellie-layout (M, 2d+2) array into per-pair blocks (order kept).

        ``ndim`` is read from the number of columns when not given; ``n_frames``
        defaults to the largest ``t`` + 2.
        """
        a = np.asarray(array, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] not in (6, 8):
            raise InputError(
                f"flow must be an (M, 8) 3D or (M, 6) 2D array, got shape {a.shape}"
            )
        nd = (a.shape[1] - 2) // 2
        if ndim is not None and ndim != nd:
            raise InputError(f"flow has {a.shape[1]} columns ({nd}D) but ndim={ndim} was given")
        t = a[:, 0]
        if len(a) and (np.any(t < 0) or np.any(t != np.round(t))):
            raise InputError("flow column 't' must hold non-negative integer frame indices")
        if n_frames is None:
            n_frames = int(t.max()) + 2 if len(a) else 2
        elif len(a) and t.max() > n_frames - 2:
            raise InputError(
                f"flow has rows for frame {int(t.max())}, beyond the last pair of {n_frames} frames"
            )
        ti = t.astype(np.int64)
        pairs = [a[ti == k] for k in range(n_frames - 1)]
        return cls(pairs, nd, n_frames, attrs)

    # ------------------------------------------------------------------ zarr
    def to_zarr(self, store: Any, name: str = "flow", *, overwrite: bool = False,
                **compute_kwargs: Any) -> "FlowTable":
        """Write the table to a zarr v3 group (a path or a ``zarr.Group``).

        Writes ``<name>`` (M, 2d+2) float64 with attrs ``columns``, ``units`` and
        this table's ``attrs``, and ``<name>_index`` (T,) int64: the first row of
        each frame pair (the last entry is M). Returns the computed table.
        """
        import zarr

        pairs = self.compute_pairs(**compute_kwargs)
        rows = np.concatenate(pairs) if pairs else _empty(self.ndim)
        index = np.zeros(self.n_frames, dtype=np.int64)
        index[1:] = np.cumsum([len(p) for p in pairs])
        group = store if isinstance(store, zarr.Group) else zarr.open_group(store, mode="a")
        if not overwrite and name in group:
            raise FileExistsError(
                f"{name!r} already exists in {getattr(group, 'store', group)}; pass overwrite=True"
            )
        arr = group.create_array(name, shape=rows.shape, dtype="float64",
                                 chunks=(max(min(len(rows), 65536), 1), rows.shape[1]),
                                 overwrite=True)
        if len(rows):
            arr[...] = rows
        arr.attrs.update({
            "columns": self.columns,
            "units": {"t": "frame", "vector": "voxels per frame", "position": "voxel", "cost": "unitless"},
            "n_frames": self.n_frames,
            "ndim": self.ndim,
            **self.attrs,
        })
        idx = group.create_array(f"{name}_index", shape=index.shape, dtype="int64",
                                 chunks=(max(len(index), 1),), overwrite=True)
        idx[...] = index
        idx.attrs["description"] = f"first row of each frame pair in {name!r}; rows of pair t are [index[t], index[t+1])"
        return FlowTable(pairs, self.ndim, self.n_frames, self.attrs)

    @classmethod
    def from_zarr(cls, store: Any, name: str = "flow") -> "FlowTable":
        """Read a table written by :meth:`to_zarr` (lazily: one delayed read per pair)."""
        import zarr

        group = store if isinstance(store, zarr.Group) else zarr.open_group(store, mode="r")
        if name not in group:
            raise InputError(f"no flow table {name!r} in {store!r}")
        arr = group[name]
        index = np.asarray(group[f"{name}_index"][...])
        n_frames = int(arr.attrs.get("n_frames", len(index)))
        ndim = int(arr.attrs.get("ndim", (arr.shape[1] - 2) // 2))
        ends = np.append(index[1:], arr.shape[0])
        pairs = [dask.delayed(_read_rows)(arr, int(index[k]), int(ends[k])) for k in range(n_frames - 1)]
        attrs = {k: v for k, v in arr.attrs.items() if k not in ("columns", "units", "n_frames", "ndim")}
        return cls(pairs, ndim, n_frames, attrs)


def _read_rows(arr: Any, start: int, stop: int) -> np.ndarray:
    if stop <= start:
        return np.zeros((0, arr.shape[1]), dtype=np.float64)
    return np.asarray(arr[start:stop], dtype=np.float64)
