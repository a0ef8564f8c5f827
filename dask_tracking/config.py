"""Compat mode and shared parameter helpers.

Every stage takes ``compat=None`` (the default: Nellie's method with the
reference's bugs fixed, see the README) or ``compat="nellie"`` (bit-for-bit
Nellie 1.0.4 on CPU, quirks included).
"""

from __future__ import annotations

from typing import Any

from .dataset import InputError

__all__ = ["COMPAT_MODES", "resolve_compat", "gate_radius_um"]

#: Accepted values of ``compat``; ``None``, ``"fixed"`` and ``"default"`` mean the same.
COMPAT_MODES: tuple[Any, ...] = (None, "fixed", "default", "nellie")


def resolve_compat(compat: Any, argument: str = "compat") -> str | None:
    """Normalise a compat argument to ``None`` (fixed) or ``"nellie"``.

    Raises
    ------
    InputError
        If ``compat`` is not one of :data:`COMPAT_MODES`.
    """
    if compat is None:
        return None
    if isinstance(compat, str):
        c = compat.strip().lower()
        if c in ("fixed", "default", "none", ""):
            return None
        if c == "nellie":
            return "nellie"
    raise InputError(
        f"{argument} must be None (default, bugs fixed) or 'nellie' (bit-for-bit Nellie 1.0.4), "
        f"got {compat!r}"
    )


def gate_radius_um(max_distance_um: float, dt: float | None, *, argument: str = "max_distance_um") -> float:
    """Nellie's radius in micrometres: ``max(max_distance_um * dt, 0.5)``.

    ``max_distance_um`` is a speed in um/s (spec B9); ``dt`` the frame interval in
    seconds (``None`` or 0 is read as 1 s, as HuMomentTracking does).
    """
    try:
        v = float(max_distance_um)
    except (TypeError, ValueError):
        raise InputError(f"{argument} must be a positive number (um/s), got {max_distance_um!r}") from None
    if not v > 0:
        raise InputError(f"{argument} must be a positive number (um/s), got {max_distance_um!r}")
    dt = 1.0 if not dt else float(dt)
    return max(v * dt, 0.5)
