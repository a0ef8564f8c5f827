"""Shapes and rigid motion of synthetic organelles, in physical units (um).

Every object is a rigid body: a gently bent *tube* (a capsule around a curved
centre line) or an ellipsoidal *blob*, described in its own body frame. At
frame ``t`` (a real number) the body frame sits at ``center(t)`` with rotation
``rotation(t)``; a world point ``p`` (um, axes ``(z, y, x)`` or ``(y, x)``) has
body coordinates ``b = rotation(t).T @ (p - center(t))``.

Motion: the centre runs on a circle of radius ``orbit`` in the Y/X plane
(constant speed, so the path is smooth and the object never leaves its cell),
plus in 3D a small Z oscillation in phase with it; the body turns about the Z
axis at a constant rate. All parameters live in :class:`ObjectSet`, a frozen
bundle of small numpy arrays (one row per object).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ObjectSet", "TUBE", "BLOB", "N_CENTERLINE"]

TUBE = 0
BLOB = 1
#: Straight segments approximating a tube's curved centre line.
N_CENTERLINE = 8


@dataclass(frozen=True, eq=False)
class ObjectSet:
    """Geometry and motion of ``K`` rigid objects (all lengths in um, angles in rad).

    Attributes
    ----------
    ndim : int
        2 or 3 spatial axes.
    kind : (K,) int
        ``TUBE`` (0) or ``BLOB`` (1).
    orbit_center : (K, d) float
        Centre of each object's circular path, axes (z, y, x) or (y, x).
    orbit : (K,) float
        Radius of the circular path in the Y/X plane.
    phase0 : (K,) float
        Angle on the path at t = 0.
    orbit_rate : (K,) float
        Angular speed on the path in rad per frame (signed); the translation
        speed is ``orbit * |orbit_rate|`` um per frame.
    z_amplitude : (K,) float
        Amplitude of the Z oscillation (0 in 2D).
    theta0 : (K,) float
        In-plane orientation of the body X axis at t = 0.
    spin : (K,) float
        Rotation rate about the Z axis in rad per frame (signed).
    tilt : (K,) float
        Out-of-plane tilt of the body X axis (3D only, else 0).
    half_length : (K,) float
        Tubes: half the chord of the centre line. Blobs: semi-axis along body X.
    radius : (K,) float
        Tubes: the tube radius. Blobs: semi-axis along body Y.
    bend : (K,) float
        Tubes: sagitta of the centre line along body Y. Blobs: semi-axis along body Z.
    piece_um : float
        Target length of one branch piece along the body X axis.
    """

    ndim: int
    kind: np.ndarray
    orbit_center: np.ndarray
    orbit: np.ndarray
    phase0: np.ndarray
    orbit_rate: np.ndarray
    z_amplitude: np.ndarray
    theta0: np.ndarray
    spin: np.ndarray
    tilt: np.ndarray
    half_length: np.ndarray
    radius: np.ndarray
    bend: np.ndarray
    piece_um: float = 1.0

    # ----------------------------------------------------------------- sizes
    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def bound(self) -> np.ndarray:
        """(K,) radius of a ball about the body origin holding the whole object, um."""
        tube = np.hypot(self.half_length, self.bend) + self.radius
        blob = np.maximum(np.maximum(self.half_length, self.radius),
                          self.bend if self.ndim == 3 else 0.0)
        return np.where(self.kind == TUBE, tube, blob)

    def n_pieces(self) -> np.ndarray:
        """(K,) number of branch pieces per object (>= 1)."""
        length = np.where(self.kind == TUBE, self._arc_length(), 2.0 * self.half_length)
        return np.maximum(1, np.round(length / self.piece_um)).astype(np.int64)

    # ---------------------------------------------------------------- motion
    def center(self, t: float) -> np.ndarray:
        """(K, d) position of every body origin at frame ``t``, um."""
        phi = self.phase0 + self.orbit_rate * t
        y = self.orbit_center[:, -2] + self.orbit * np.cos(phi)
        x = self.orbit_center[:, -1] + self.orbit * np.sin(phi)
        if self.ndim == 2:
            return np.stack([y, x], axis=1)
        z = self.orbit_center[:, 0] + self.z_amplitude * np.sin(phi)
        return np.stack([z, y, x], axis=1)

    def rotation(self, t: float) -> np.ndarray:
        """(K, d, d) rotation of every body frame at frame ``t`` (columns: body axes in world)."""
        a = self.theta0 + self.spin * t
        c, s = np.cos(a), np.sin(a)
        k = len(self)
        if self.ndim == 2:
            r = np.empty((k, 2, 2))
            r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1] = c, -s, s, c
            return r
        rz = np.zeros((k, 3, 3))
        rz[:, 0, 0] = 1.0
        rz[:, 1, 1], rz[:, 1, 2], rz[:, 2, 1], rz[:, 2, 2] = c, -s, s, c
        ct, st = np.cos(self.tilt), np.sin(self.tilt)
        rt = np.zeros((k, 3, 3))
        rt[:, 1, 1] = 1.0
        rt[:, 0, 0], rt[:, 0, 2], rt[:, 2, 0], rt[:, 2, 2] = ct, st, -st, ct
        return rz @ rt

    def to_body(self, k: int, p: np.ndarray, t: float) -> np.ndarray:
        """Body coordinates (N, d) of world points ``p`` (N, d) for object ``k`` at frame ``t``."""
        return (p - self.center(t)[k]) @ self.rotation(t)[k]

    def to_world(self, k: int, b: np.ndarray, t: float) -> np.ndarray:
        """World points (N, d) of body coordinates ``b`` (N, d) of object ``k`` at frame ``t``."""
        return self.center(t)[k] + b @ self.rotation(t)[k].T

    # ----------------------------------------------------------------- shape
    def _centerline(self, k: int) -> np.ndarray:
        """(N_CENTERLINE + 1, d) body-frame vertices of tube ``k``'s centre line."""
        half, bend = self.half_length[k], self.bend[k]
        u = np.linspace(-1.0, 1.0, N_CENTERLINE + 1)
        pts = np.zeros((u.size, self.ndim))
        pts[:, -1] = u * half
        pts[:, -2] = bend * (1.0 - u * u) - bend / 2.0
        return pts

    def _arc_length(self) -> np.ndarray:
        out = np.zeros(len(self))
        for k in range(len(self)):
            if self.kind[k] == TUBE:
                out[k] = np.linalg.norm(np.diff(self._centerline(k), axis=0), axis=1).sum()
        return out

    def sdf(self, k: int, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distance (um, < 0 inside) and fraction along the body X axis in [0, 1].

        Parameters
        ----------
        k : int
            Object index.
        b : (N, d) float
            Body coordinates, um.

        Returns
        -------
        sdf : (N,) float
            Exact for tubes; for blobs ``(|b / axes| - 1) * min(axes)`` (exact sign).
        along : (N,) float
            Tubes: arc-length fraction of the nearest centre-line point.
            Blobs: ``(b_x / a_x + 1) / 2`` clipped to [0, 1].
        """
        if self.kind[k] == TUBE:
            v = self._centerline(k)
            a, seg = v[:-1], np.diff(v, axis=0)                      # (S, d)
            seg_len2 = (seg * seg).sum(axis=1)
            rel = b[:, None, :] - a[None, :, :]                      # (N, S, d)
            u = np.clip((rel * seg).sum(axis=2) / seg_len2, 0.0, 1.0)  # (N, S)
            d2 = ((rel - u[..., None] * seg) ** 2).sum(axis=2)
            best = d2.argmin(axis=1)
            rows = np.arange(b.shape[0])
            seg_len = np.sqrt(seg_len2)
            cum = np.concatenate([[0.0], np.cumsum(seg_len)])
            along = (cum[best] + u[rows, best] * seg_len[best]) / cum[-1]
            return np.sqrt(d2[rows, best]) - self.radius[k], along
        axes = [self.radius[k], self.half_length[k]]
        if self.ndim == 3:
            axes = [self.bend[k]] + axes
        axes = np.asarray(axes)
        r = np.sqrt(((b / axes) ** 2).sum(axis=1))
        along = np.clip((b[:, -1] / self.half_length[k] + 1.0) / 2.0, 0.0, 1.0)
        return (r - 1.0) * axes.min(), along
