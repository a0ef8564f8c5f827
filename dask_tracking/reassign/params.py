"""Parameters of voxel reassignment, one frozen object (spec section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import gate_radius_um, resolve_compat
from ..dataset import InputError

__all__ = ["ReassignParams"]


def _flag(name: str, value, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True, False or None (mode default), got {value!r}")
    return value


@dataclass(frozen=True)
class ReassignParams:
    """How identities are carried from frame t to frame t+1.

    Parameters
    ----------
    compat : {None, "nellie"}
        ``None``: Nellie's method with the fixes listed in the README; ``"nellie"``:
        Nellie 1.0.4 bit for bit (cKDTree tie rule on the whole frame, quirk Q-A of the
        interpolation batch, stop at the first empty frame pair).
    radius_um : float
        Interpolation radius and prediction-error gate in micrometres,
        ``max(max_distance_um * dt, 0.5)`` (spec 4.1).
    fill_unmatched : bool
        Give labelled voxels that receive no candidate the majority reassigned label
        of their frame-(t+1) object, or a new id (default mode only).
    continue_past_empty : bool
        Go on after a frame pair without voxels or candidates (B14) instead of
        leaving every later frame at 0 as Nellie does.
    """

    compat: str | None = None
    radius_um: float = 0.5
    fill_unmatched: bool = True
    continue_past_empty: bool = True

    @classmethod
    def build(cls, *, dt: float, compat=None, max_distance_um: float = 0.5,
              fill_unmatched: bool | None = None,
              continue_past_empty: bool | None = None) -> "ReassignParams":
        """Validate user arguments; ``None`` flags take the mode's default.

        In ``compat="nellie"`` both flags default to False, and True is refused
        because Nellie has neither behaviour.
        """
        mode = resolve_compat(compat)
        r = gate_radius_um(max_distance_um, dt)
        default = mode is None
        fill = _flag("fill_unmatched", fill_unmatched, default)
        cont = _flag("continue_past_empty", continue_past_empty, default)
        if mode == "nellie" and (fill or cont):
            raise InputError(
                "compat='nellie' reproduces Nellie 1.0.4, which neither fills unmatched voxels nor "
                f"continues past empty frames; got fill_unmatched={fill_unmatched!r}, "
                f"continue_past_empty={continue_past_empty!r}; allowed with compat='nellie': "
                "None or False"
            )
        return cls(compat=mode, radius_um=r, fill_unmatched=fill, continue_past_empty=cont)
