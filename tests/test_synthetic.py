"""Synthetic movies: determinism, laziness, the six derived inputs and the ground truth."""

from __future__ import annotations

import itertools
import time

import dask
import numpy as np
import pytest
from dask.callbacks import Callback
from scipy import ndimage as ndi

from dask_tracking.dataset import InputError
from dask_tracking.datasets import SyntheticTruth, synthetic, write_synthetic_zarr
from dask_tracking.io.open import open_dataset


class _CountRenders(Callback):
    """Counts executed frame-render tasks."""

    def __init__(self):
        super().__init__()
        self.frames = []

    def _pretask(self, key, dsk, state):
        name = key[0] if isinstance(key, tuple) else key
        if str(name).startswith("synthetic-frame-"):
            self.frames.append(int(str(name).rsplit("-", 1)[1]))


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def movie(request):
    ds = synthetic(request.param, n_frames=5, seed=11)
    arrays, objects = dask.compute(ds.arrays(), ds.truth.objects)
    return ds, arrays, objects


def _cell_rate(objects, t, points, ids):
    """Fraction of points whose grid cell (the 2^d voxels around it) touches object ``ids`` at t+1."""
    hi = np.array(objects.shape[1:]) - 1
    fl = np.floor(points).astype(int)
    ok = np.zeros(len(points), bool)
    for off in itertools.product((0, 1), repeat=points.shape[1]):
        q = np.clip(fl + np.array(off), 0, hi)
        ok |= objects[t + 1][tuple(q.T)] == ids
    return ok.mean()


def _nearest_rate(objects, t, points, ids):
    q = np.clip(np.rint(points).astype(int), 0, np.array(objects.shape[1:]) - 1)
    return (objects[t + 1][tuple(q.T)] == ids).mean()


# ----------------------------------------------------------------- basics
def test_default_movies_are_small_fast_and_lazy():
    for ndim, shape in ((3, (8, 12, 96, 128)), (2, (8, 128, 128))):
        ds = synthetic(ndim)
        assert ds.shape == shape and ds.axes == ("TZYX" if ndim == 3 else "TYX")
        assert isinstance(ds.truth, SyntheticTruth)
        assert all(a.chunks[0] == (1,) * 8 for a in ds.arrays().values())
        cb = _CountRenders()
        t0 = time.perf_counter()
        with dask.config.set({"optimization.fuse.active": False}), cb:
            dask.compute(ds.arrays(), ds.truth.objects, scheduler="sync")
        elapsed = time.perf_counter() - t0
        # one render task per frame, shared by the six volumes and the truth
        assert sorted(cb.frames) == list(range(8))
        assert elapsed < 3.0, f"default {ndim}D movie took {elapsed:.2f} s"


def test_one_frame_renders_only_that_frame():
    ds = synthetic(2, n_frames=6)
    cb = _CountRenders()
    # no low-level fusion, so the render tasks keep their keys and can be counted
    with dask.config.set({"optimization.fuse.active": False}), cb:
        ds.labels[4].compute(scheduler="sync")
    assert cb.frames == [4]


def test_same_seed_same_arrays_other_seed_differs():
    a = dask.compute(synthetic(2, 3, seed=5).arrays())[0]
    b = dask.compute(synthetic(2, 3, seed=5).arrays())[0]
    c = dask.compute(synthetic(2, 3, seed=6).arrays())[0]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["labels"], c["labels"])
    assert not np.array_equal(a["raw"], c["raw"])


def test_spatial_chunks_do_not_change_values():
    whole = synthetic(3, 3, seed=2)
    chunked = synthetic(3, 3, seed=2, chunks=(5, 50, 70))
    assert chunked.labels.chunks[1:] == ((5, 5, 2), (50, 46), (70, 58))
    assert chunked.truth.objects.chunks == chunked.labels.chunks
    a, b = dask.compute(whole.arrays(), chunked.arrays())
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_scale_and_source():
    ds = synthetic(3, 2, spacing=(0.3, 0.08, 0.08), dt=2.5)
    assert ds.scale.as_dict() == {"T": 2.5, "Z": 0.3, "Y": 0.08, "X": 0.08}
    assert ds.source.startswith("synthetic(ndim=3")


# --------------------------------------------------------- derived inputs
def test_six_inputs_are_derived_consistently(movie):
    ds, a, objects = movie
    nd = ds.ndim
    assert a["raw"].dtype == np.uint16 and a["raw"].min() >= 1
    assert a["preprocessed"].dtype == np.float32
    assert 0.0 <= a["preprocessed"].min() and a["preprocessed"].max() <= 1.0
    assert a["distance"].dtype == np.float32 and a["markers"].dtype == np.uint8
    assert a["labels"].dtype == np.int32 and a["branches"].dtype == np.uint32
    for t in range(ds.n_frames):
        obj, lab, br = objects[t], a["labels"][t], a["branches"][t]
        mask = obj > 0
        # truth ids are all present in every frame
        assert set(np.unique(obj)) == set(range(ds.truth.n_objects + 1))
        # labels: 3^d connected components of the mask, raster order, one per object
        ref, n = ndi.label(mask, structure=np.ones((3,) * nd))
        np.testing.assert_array_equal(lab, ref)
        assert n == ds.truth.n_objects
        pairs = {(int(o), int(l)) for o, l in zip(obj[mask], lab[mask])}
        assert len(pairs) == n                      # a bijection object <-> label
        # branches: same mask, each inside one label, ids 1..m in raster order
        assert np.array_equal(br > 0, mask)
        ids = br[mask]
        _, first = np.unique(ids, return_index=True)
        assert np.all(np.diff(first) > 0)
        assert all(len(np.unique(lab[br == b])) == 1 for b in np.unique(ids))
        assert len(np.unique(ids)) >= n
        # distance: isotropic EDT of the mask in voxels
        edt = ndi.distance_transform_edt(mask).astype(np.float32)
        np.testing.assert_allclose(a["distance"][t], np.minimum(edt, 20.0), atol=1e-5)
        # markers: in the mask, at ridge maxima of the distance, >= 1 per object, few
        mk = a["markers"][t] > 0
        assert set(np.unique(a["markers"][t])) <= {0, 1}
        assert np.all(mask[mk])
        dist = a["distance"][t]
        assert np.all(dist[mk] == ndi.maximum_filter(dist, size=3, mode="nearest")[mk])
        per_object = np.bincount(obj[mk], minlength=n + 1)[1:]
        assert per_object.min() >= 1 and per_object.max() <= 20
        # raw: brighter in the objects than outside
        assert a["raw"][t][mask].mean() > a["raw"][t][~mask].mean() + 300


# ------------------------------------------------------------ ground truth
def test_true_displacement_lands_on_the_same_object(movie):
    ds, _, objects = movie
    for t in range(ds.n_frames - 1):
        coords = np.argwhere(objects[t] > 0)
        ids = objects[t][tuple(coords.T)]
        d = ds.truth.displacement(coords, t)
        moved = coords + d
        # >= 99% land in a grid cell touching the same object at t+1
        assert _cell_rate(objects, t, moved, ids) >= 0.99
        # rounding to the nearest voxel alone loses only the object's outer shell
        assert _nearest_rate(objects, t, moved, ids) >= 0.88
        # controls: the criterion fails for no motion and for the reversed motion
        assert _cell_rate(objects, t, coords.astype(float), ids) < 0.98
        assert _cell_rate(objects, t, coords - d, ids) < 0.92
        # per-frame motion is smooth and small: 0.3-3.5 voxels, inside Nellie's 1 um gate
        step = np.linalg.norm(d * np.asarray(ds.spacing) / min(ds.spacing[-2:]), axis=1)
        assert 0.3 < step.mean() < 3.5 and step.max() < 5.0


def test_truth_matches_object_centroids(movie):
    ds, _, objects = movie
    for t in (0, ds.n_frames - 2):
        for k in range(1, ds.truth.n_objects + 1):
            c0 = np.argwhere(objects[t] == k).mean(axis=0)
            c1 = np.argwhere(objects[t + 1] == k).mean(axis=0)
            moved = ds.truth.position(c0, t, t + 1)[0]
            assert np.abs(moved - c1).max() < 0.5, (k, moved, c1)


def test_position_composes_and_inverts(movie):
    ds, _, objects = movie
    coords = np.argwhere(objects[1] > 0)[::7].astype(float)
    p3 = ds.truth.position(coords, 1, 3)
    via = ds.truth.position(ds.truth.position(coords, 1, 2), 2, 3)
    np.testing.assert_allclose(p3, via, atol=1e-9)
    np.testing.assert_allclose(ds.truth.position(p3, 3, 1), coords, atol=1e-9)
    np.testing.assert_allclose(ds.truth.position(coords, 1, 1), coords, atol=1e-12)
    np.testing.assert_array_equal(ds.truth.object_at(coords, 1), objects[1][tuple(
        coords.astype(int).T)])


def test_background_points_follow_the_nearest_object():
    ds = synthetic(2, 3, n_objects=2, shape=(64, 128), seed=4)
    truth = ds.truth
    c = truth.centers(0)
    # a background point next to object 1 moves like object 1's centre
    p = c[0] + np.array([0.0, 0.0])
    far = np.array([[1.0, 1.0]])
    assert truth.object_at(far, 0)[0] == 0
    k = truth.object_at(far, 0, nearest=True)[0]
    assert k in (1, 2)
    moved = truth.position(far, 0, 1)
    g = truth.geometry
    expect = g.to_world(k - 1, g.to_body(k - 1, far * np.asarray(truth.spacing), 0), 1) / truth.spacing
    np.testing.assert_allclose(moved, expect)
    np.testing.assert_allclose(truth.position(p[None], 0, 1)[0], truth.centers(1)[0], atol=1e-9)


def test_rotation_and_speed_knobs():
    still = synthetic(2, 3, speed_um=0.0, rotation_deg=0.0, seed=1)
    o = still.truth.objects.compute()
    assert np.array_equal(o[0], o[1]) and np.array_equal(o[1], o[2])
    assert np.all(still.truth.rotation_per_frame_deg() == 0)
    spun = synthetic(2, 3, speed_um=0.0, rotation_deg=6.0, seed=1)
    rot = np.abs(spun.truth.rotation_per_frame_deg())
    assert np.all((rot >= 3.0 - 1e-9) & (rot <= 6.0 + 1e-9))
    fast = synthetic(2, 3, speed_um=0.25, rotation_deg=0.0, dt=1.0, seed=1)
    v = np.linalg.norm(fast.truth.velocity(0) * 0.1, axis=1)      # um per frame
    assert np.all((v > 0.75 * 0.25 * 0.9) & (v < 1.25 * 0.25 * 1.01))


# --------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, match", [
    ({"ndim": 4}, r"ndim must be 2 or 3, got 4"),
    ({"n_frames": 1}, r"n_frames must be an integer >= 2, got 1"),
    ({"n_frames": 2.5}, r"n_frames must be an integer >= 2, got 2.5"),
    ({"shape": (32, 32)}, r"shape must have 3 entries \(Z, Y, X\) for ndim=3, got \(32, 32\)"),
    ({"shape": (12, 0, 64)}, r"shape must hold positive integers, got \(12, 0, 64\)"),
    ({"shape": 7}, r"shape must hold positive integers|too small"),
    ({"shape": (12, 40, 40)}, r"shape \(12, 40, 40\) is too small for n_objects=6"),
    ({"shape": (3, 96, 96)}, r"too few Z slices \(3\)"),
    ({"spacing": (0.25, -0.1, 0.1)}, r"spacing must hold positive finite numbers, got"),
    ({"spacing": "abc"}, r"spacing must hold positive finite numbers, got \('a'"),
    ({"dt": 0}, r"dt must be a finite number > 0, got 0"),
    ({"n_objects": 0}, r"n_objects must be an integer >= 1, got 0"),
    ({"kinds": ("tube", "cube")}, r"kinds must be a non-empty sequence of 'tube' and/or 'blob', got"),
    ({"kinds": ()}, r"kinds must be a non-empty sequence"),
    ({"speed_um": -1.0}, r"speed_um must be a finite number >= 0, got -1.0"),
    ({"rotation_deg": float("nan")}, r"rotation_deg must be a finite number >= 0, got nan"),
    ({"noise": -0.1}, r"noise must be a finite number >= 0, got -0.1"),
    ({"blur_um": (0.1, 0.1)}, r"blur_um must have 3 entries"),
    ({"seed": -3}, r"seed must be an integer >= 0, got -3"),
    ({"piece_um": 0}, r"piece_um must be a finite number > 0, got 0"),
    ({"marker_spacing_um": -1}, r"marker_spacing_um must be a finite number > 0"),
])
def test_bad_arguments_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        synthetic(**kwargs)


def test_truth_coords_shape_is_checked():
    ds = synthetic(2, 2)
    with pytest.raises(InputError, match=r"coords must have shape \(N, 2\) .* got \(3, 3\)"):
        ds.truth.position(np.zeros((3, 3)), 0, 1)


# ----------------------------------------------------------------- zarr
def test_write_synthetic_zarr_round_trip(tmp_path):
    path = tmp_path / "movie.zarr"
    out = write_synthetic_zarr(path, 3, (10, 64, 80), n_objects=3, seed=7, include_truth=True,
                               num_workers=1)
    ref = synthetic(3, 3, shape=(10, 64, 80), n_objects=3, seed=7)
    back = open_dataset(path)
    assert back.scale == ref.scale and back.axes == "TZYX"
    a, b = dask.compute(ref.arrays(), back.arrays())
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert b[name].dtype == a[name].dtype
    import zarr

    g = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(g["truth_objects"][:], ref.truth.objects.compute())
    meta = dict(g.attrs["synthetic"])
    rebuilt = synthetic(**meta)
    np.testing.assert_array_equal(rebuilt.labels[2].compute(), a["labels"][2])
    assert out.truth is not None
    with pytest.raises(InputError, match=r"exists; pass overwrite=True"):
        write_synthetic_zarr(path, 3, (10, 64, 80), n_objects=3, seed=7)
    write_synthetic_zarr(path, 2, (48, 48), n_objects=1, seed=1, overwrite=True)
    assert open_dataset(path).shape == (2, 48, 48)
