"""The result of :func:`~dask_tracking.reassign_labels` and its zarr writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import dask
import dask.array as da
import numpy as np

from ..dataset import InputError
from .params import ReassignParams

__all__ = ["Reassignment"]


def _regular_chunks(arr: da.Array) -> tuple[int, ...]:
    """Zarr chunk shape for ``arr``: its own if regular, else the first chunk on each axis."""
    return tuple(int(c[0]) for c in arr.chunks)


def _is_regular(chunks: tuple) -> bool:
    return all(all(x == c[0] for x in c[:-1]) and c[-1] <= c[0] for c in chunks)


def _open_group(group: Any):
    import zarr

    if isinstance(group, zarr.Group):
        return group
    return zarr.open_group(str(group), mode="a")


def _write_matches(store: Any, path: str, pair: int, matches: np.ndarray, stopped: bool) -> int:
    import zarr

    g = zarr.open_group(store=store, path=path, mode="a")
    m = np.asarray(matches)
    a = g.create_array(str(pair), shape=m.shape, dtype=m.dtype,
                       chunks=(max(min(len(m), 1 << 18), 1),) + tuple(m.shape[1:]), overwrite=True)
    if m.size:
        a[...] = m
    a.attrs.update({"pair": [pair, pair + 1], "layout": "(n, 2, d): [source voxel at t, target voxel at t+1]",
                    "order": "target raster index", "stopped": bool(stopped)})
    return int(len(m))


def _done(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class Reassignment:
    """Reassigned identities, lazily.

    Attributes
    ----------
    labels : dask.array.Array, int32
        Object ids carried from frame 0 (same shape, axes and chunks as the input labels).
    branches : dask.array.Array, int32
        Branch ids carried from frame 0.
    matches : list of Delayed
        ``matches[t]`` evaluates to the (n_t, 2, d) uint16 (uint32/uint64 for large frames)
        array of ``[source voxel, target voxel]``: the best source per target voxel of the
        pair (t, t+1), sorted by the target's raster index (spec 4.4). Each pair is
        computed and written on its own.
    stopped : list of Delayed or None
        ``compat="nellie"`` (or ``continue_past_empty=False``): ``stopped[t]`` is True from
        the first pair without candidates on, where Nellie's loop breaks (its
        ``voxel_matches.npy`` then holds only the pairs before). None otherwise.
    params : ReassignParams
    next_id_base : Delayed or None
        Default mode (``fill_unmatched``): evaluates to the new-id bases ``(objects,
        branches)`` of the last frame, the ``id_base`` that continues the chain from it
        (:func:`~dask_tracking.reassign_labels`). None otherwise.
    """

    labels: da.Array | None
    branches: da.Array
    matches: list
    stopped: list | None = None
    params: ReassignParams = field(default_factory=ReassignParams)
    next_id_base: Any = None

    def store(self, group: Any, *, compute: bool = False, frames: Sequence[int] | None = None,
              **compute_kwargs: Any):
        """Write ``labels_reassigned`` (unless ``labels`` is None), ``branches_reassigned`` and ``voxel_matches/<t>``.

        Parameters
        ----------
        group : zarr.Group or path
            A zarr v3 group (created if needed). The two int32 arrays are created with
            the labels' chunks (one frame per chunk; uneven spatial chunks are
            rechunked to a regular grid) unless they already exist with the same
            shape, which lets a resumed run add frames.
        compute : bool
            False (default): return one Delayed that writes everything when computed.
        frames : sequence of int, optional
            Frames to write (default all). For each frame t >= 1 in it, also
            ``voxel_matches/<t-1>`` (the pair that produced frame t).

        Returns
        -------
        Delayed (``compute=False``) or None.
        """
        g = _open_group(group)
        T = self.branches.shape[0]
        frames = list(range(T)) if frames is None else sorted({int(t) for t in frames})
        bad = [t for t in frames if not 0 <= t < T]
        if bad:
            raise InputError(f"frames must lie in [0, {T - 1}], got {bad}")
        attrs = {"axes": "TZYX" if self.branches.ndim == 4 else "TYX", "compat": self.params.compat or "fixed",
                 "radius_um": self.params.radius_um, "fill_unmatched": self.params.fill_unmatched,
                 "continue_past_empty": self.params.continue_past_empty}
        sources, targets, regions = [], [], []
        for name, arr, what in (("labels_reassigned", self.labels, "object ids carried from frame 0"),
                                ("branches_reassigned", self.branches, "branch ids carried from frame 0")):
            if arr is None:     # objects=False: no object chain
                continue
            if not _is_regular(arr.chunks):
                arr = arr.rechunk(_regular_chunks(arr))
            zchunks = _regular_chunks(arr)
            z = g.get(name) if name in g else None
            if z is None or tuple(z.shape) != tuple(arr.shape) or z.dtype != np.int32 \
                    or tuple(z.chunks) != zchunks:
                z = g.create_array(name, shape=arr.shape, dtype="int32", chunks=zchunks,
                                   fill_value=0, overwrite=True)
                z.attrs.update({**attrs, "description": what})
            for t in frames:
                sources.append(arr[t:t + 1])
                targets.append(z)
                regions.append((slice(t, t + 1),) + tuple(slice(0, n) for n in arr.shape[1:]))
        parts = [da.store(sources, targets, regions=regions, lock=False, compute=False)] if sources else []
        pairs = [t - 1 for t in frames if t >= 1]
        if pairs:
            mg = g.require_group("voxel_matches")
            mg.attrs["description"] = "best source voxel per target voxel of pair (t, t+1)"
            for p in pairs:
                stop = self.stopped[p] if self.stopped else False
                parts.append(dask.delayed(_write_matches, pure=False)(mg.store, mg.path, p,
                                                                     self.matches[p], stop))
        out = dask.delayed(_done, pure=False)(*parts)
        if compute:
            out.compute(**compute_kwargs)
            return None
        return out
