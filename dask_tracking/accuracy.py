"""The accuracy options of the default mode (issue 11), as one switch for :func:`dask_tracking.run`.

All four are ON in the default mode (``run(..., accuracy=None)``, the default);
``accuracy=False`` turns all off (the reference behaviour with its bugs fixed),
``True`` turns all on, and a sequence of names turns on just those:

* ``"refine"``: :func:`dask_tracking.flow.refine.refine_flow` (coarse-to-fine
  correlation, float sub-voxel vectors);
* ``"one_to_one"``: :func:`dask_tracking.flow.assignment.one_to_one_flow` (one
  partner per marker, unclaimed splits kept);
* ``"object_vote"``: labels from
  :func:`dask_tracking.reassign.object_vote.object_vote_chain` (identities decided per
  object of each frame, no leak into a touching neighbour);
* ``"living_tracks"``: :func:`dask_tracking.label_tracks` with
  ``fallback_radius_um="auto"`` (4 x the radius) and ``keep_outside=True`` (flags and
  end reasons recorded).

None of them applies with ``compat="nellie"`` (there ``accuracy=None`` means none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dataset import InputError

__all__ = ["AccuracyOptions", "resolve_accuracy", "ACCURACY_OPTIONS"]

#: Names accepted in ``accuracy=[...]``.
ACCURACY_OPTIONS = ("refine", "one_to_one", "object_vote", "living_tracks")


@dataclass(frozen=True)
class AccuracyOptions:
    """Which accuracy options are on (all off: the reference behaviour)."""

    refine: bool = False
    one_to_one: bool = False
    object_vote: bool = False
    living_tracks: bool = False
    fallback_radius_um: float | None = None     # None: label_tracks' 'auto' (4 x the radius)

    @property
    def any(self) -> bool:
        return self.refine or self.one_to_one or self.object_vote or self.living_tracks

    def names(self) -> list[str]:
        return [n for n in ACCURACY_OPTIONS if getattr(self, n)]

    def flow_kwargs(self) -> dict:
        """Keywords for :func:`dask_tracking.estimate_flow` (``refine``, ``one_to_one``)."""
        return {"refine": self.refine, "one_to_one": self.one_to_one}

    def track_kwargs(self) -> dict:
        """Keywords for :func:`dask_tracking.label_tracks`."""
        if not self.living_tracks:
            return {"fallback_radius_um": None, "keep_outside": False}
        return {"fallback_radius_um": "auto" if self.fallback_radius_um is None else self.fallback_radius_um,
                "keep_outside": True}


def resolve_accuracy(accuracy: Any, compat: str | None = None) -> AccuracyOptions:
    """``accuracy`` (None, bool or a sequence of names) as :class:`AccuracyOptions`.

    ``None`` (the default of :func:`dask_tracking.run`): all on in the default mode,
    all off with ``compat="nellie"``. ``False``: all off. ``True``: all on.

    Raises
    ------
    InputError
        For an unknown name, or options asked for together with ``compat="nellie"``.
    """
    if accuracy is None:
        return AccuracyOptions() if compat == "nellie" else AccuracyOptions(**{n: True for n in ACCURACY_OPTIONS})
    if accuracy is False:
        return AccuracyOptions()
    if accuracy is True:
        names = list(ACCURACY_OPTIONS)
    elif isinstance(accuracy, str):
        names = [a.strip() for a in accuracy.split(",") if a.strip()]
    else:
        try:
            names = list(accuracy)
        except TypeError:
            names = [accuracy]
    bad = [n for n in names if n not in ACCURACY_OPTIONS]
    if bad:
        raise InputError(f"accuracy must be True, False or names from {ACCURACY_OPTIONS}, got {accuracy!r}")
    if names and compat == "nellie":
        raise InputError(f"accuracy options {names} cannot be used with compat='nellie' (bit-for-bit Nellie)")
    return AccuracyOptions(**{n: True for n in names})
