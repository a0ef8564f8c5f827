"""Imported by each local worker at start (``distributed.worker.preload``).

The stages' kernels import SciPy and their own modules on first use; importing them when a
worker starts moves that one-off cost (about a second per worker on a busy 2-core machine)
out of the first task of a stage and into the cluster start. Nothing else happens here.
"""

from __future__ import annotations

import scipy.ndimage  # noqa: F401
import scipy.spatial  # noqa: F401

import dask_tracking.flow.estimate  # noqa: F401
import dask_tracking.interpolate.kernel  # noqa: F401
import dask_tracking.reassign.graph  # noqa: F401
import dask_tracking.tracks.walk  # noqa: F401
