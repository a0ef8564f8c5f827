"""Windows of frames: the reassignment of a long movie, one bounded graph at a time.

The label chains (the voxel reassignment and the object vote) carry identities from
frame to frame, so :func:`dask_tracking.run` could build them as one graph over the
whole movie. But a graph's own bookkeeping costs memory per task (about 70 kB per
(frame, block) for the reassignment: dask's task objects and the local scheduler's
dependency sets, or the distributed scheduler's task states), so one graph over a
movie of a thousand frames of a few hundred blocks would need tens of gigabytes
before the first task runs. ``run`` therefore computes the chains in windows of
frames: each window is a (time) slice of the movie that starts at the last frame of
the window before, from the state the window before left (:class:`ChainState`, kept
in the output store so that a resumed run starts from the last finished window).
The windows give the bits of one uninterrupted chain. The flow is estimated in the
same windows (each frame pair needs only its own two frames; a window's last frame is
read again as the next window's first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dataset import InputError

__all__ = ["ChainState", "window_frames", "WINDOW_BLOCK_FRAMES", "MIN_WINDOW_FRAMES"]

#: Default window: about this many (frame, block) pairs per graph (the graph then holds
#: some 150-250 MB of bookkeeping at most, whatever the number of frames: 38 frames of 54 blocks,
#: 1,024 frames of 2; shorter movies are one window and pay nothing for the windows).
WINDOW_BLOCK_FRAMES = 2048
#: Fewest frames in a default window (a window of very large frames still spans a few).
MIN_WINDOW_FRAMES = 4

_ATTR = "chain_state"
_GROUP = "chain_state"


def window_frames(n_frames: int, n_blocks: int, window: Any = None) -> int:
    """Frames per window (the first frame of a window is the last of the one before).

    Parameters
    ----------
    n_frames : int
        Frames of the movie (T).
    n_blocks : int
        Spatial blocks per frame (chunks of the labels).
    window : int, optional
        Asked-for frames per window (>= 2). Default: ``ceil(WINDOW_BLOCK_FRAMES / n_blocks)``,
        at least ``MIN_WINDOW_FRAMES``.

    Returns
    -------
    int
        At most ``n_frames`` (one window for the whole movie when it is short).
    """
    if window is None:
        w = max(MIN_WINDOW_FRAMES, math.ceil(WINDOW_BLOCK_FRAMES / max(int(n_blocks), 1)))
    else:
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
            raise InputError(f"window_frames must be an integer >= 2 (frames per window) or None, got {window!r}")
        w = int(window)
    return max(1, min(w, int(n_frames)))


@dataclass(frozen=True)
class ChainState:
    """The state of the label chains at frame ``frame`` (the end of a finished window).

    Attributes
    ----------
    frame : int
        Frames up to this one are written.
    id_base : (int, int) or None
        New-id bases of the voxel reassignment at ``frame`` (objects, branches), default mode.
    next_id : int or None
        First identity the object vote has not used (``object_vote``).
    ghosts : str or None
        Path, in the output store, of the object vote's carried votes at ``frame``.
    stopped : bool
        ``compat="nellie"``: the chain has stopped (Nellie's break); later frames are 0.
    """

    frame: int
    id_base: tuple[int, int] | None = None
    next_id: int | None = None
    ghosts: str | None = None
    stopped: bool = False

    def save(self, group: Any) -> None:
        """Record the state in ``group.attrs`` (after everything up to ``frame`` is written)."""
        group.attrs[_ATTR] = {"frame": int(self.frame),
                              "id_base": None if self.id_base is None else [int(v) for v in self.id_base],
                              "next_id": None if self.next_id is None else int(self.next_id),
                              "ghosts": self.ghosts, "stopped": bool(self.stopped)}

    @classmethod
    def load(cls, group: Any) -> "ChainState | None":
        """The state recorded in ``group`` (None if none)."""
        d = group.attrs.get(_ATTR)
        if not d:
            return None
        base = d.get("id_base")
        return cls(int(d["frame"]), None if base is None else (int(base[0]), int(base[1])),
                   d.get("next_id"), d.get("ghosts"), bool(d.get("stopped", False)))


def ghosts_path(frame: int) -> str:
    """Where the object vote's carried votes of ``frame`` are kept in the output store."""
    return f"{_GROUP}/ghosts_{int(frame)}"


def drop_old_ghosts(group: Any, keep: str | None) -> None:
    """Delete the carried votes of earlier windows (all but ``keep``)."""
    if _GROUP not in group:
        return
    g = group[_GROUP]
    for name in list(g.array_keys()):
        if f"{_GROUP}/{name}" != keep:
            del g[name]
