"""The accuracy options of the default mode (issue 11), as one switch for :func:`dask_tracking.run`.

``run(..., accuracy=True)`` turns on all four; a sequence of names turns on some:

* ``"refine"``: :func:`dask_tracking.flow.refine.refine_flow` (coarse-to-fine
  correlation, float sub-voxel vectors);
* ``"one_to_one"``: :func:`dask_tracking.flow.assignment.one_to_one_flow` (one
  partner per marker, unclaimed splits kept);
* ``"object_vote"``: labels from
  :func:`dask_tracking.reassign.object_vote.object_vote_chain` (identities decided per
  object of each frame, no leak into a touching neighbour);
* ``"living_tracks"``: :func:`dask_tracking.label_tracks` with
  ``fallback_radius_um`` and ``keep_outside=True`` (flags and end reasons recorded).

None of them applies with ``compat="nellie"``.
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
    fallback_radius_um: float = 2.0

    @property
    def any(self) -> bool:
        return self.refine or self.one_to_one or self.object_vote or self.living_tracks

    def names(self) -> list[str]:
        return [n for n in ACCURACY_OPTIONS if getattr(self, n)]

    def apply_flow(self, flow: Any, ds: Any) -> Any:
        """The flow table with ``refine`` and ``one_to_one`` applied (lazy)."""
        if self.refine:
            from .flow.refine import refine_flow

            flow = refine_flow(flow, ds.preprocessed)
        if self.one_to_one:
            from .flow.assignment import one_to_one_flow

            flow = one_to_one_flow(flow)
        return flow

    def track_kwargs(self) -> dict:
        """Keywords for :func:`dask_tracking.label_tracks`."""
        if not self.living_tracks:
            return {}
        return {"fallback_radius_um": self.fallback_radius_um, "keep_outside": True}


def resolve_accuracy(accuracy: Any, compat: str | None = None) -> AccuracyOptions:
    """``accuracy`` (bool, None or a sequence of names) as :class:`AccuracyOptions`.

    Raises
    ------
    InputError
        For an unknown name, or options asked for together with ``compat="nellie"``.
    """
    if accuracy is None or accuracy is False:
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
