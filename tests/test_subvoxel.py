"""The affine Lucas-Kanade polish of flow vectors (dask_tracking.flow.subvoxel)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from dask_tracking.dataset import InputError
from dask_tracking.flow.refine import refine_vectors
from dask_tracking.flow.subvoxel import affine_reach, affine_vectors


def _scene(shape, seed=0, n=40, sigma=(1.0, 2.0, 2.0)):
    """A smooth random texture (blobs) on a zero background."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape)
    pts = [rng.integers(0, s, n) for s in shape]
    img[tuple(pts)] = rng.uniform(0.5, 1.0, n)
    return ndi.gaussian_filter(img, sigma[-len(shape):])


def _warp(img, matrix, shift, center):
    """Frame t+1 of a moving texture: I1(x) = I0(M^-1 (x - c - s) + c)."""
    inv = np.linalg.inv(matrix)
    c = np.asarray(center, float)
    offset = c - inv @ (c + np.asarray(shift, float))
    return ndi.affine_transform(img, inv, offset=offset, order=3, mode="nearest")


def _rows(points, vectors, d):
    points = np.asarray(points, float)
    return np.column_stack([np.zeros(len(points)), points, vectors, -np.ones(len(points))]) \
        if d else None


def _true_vectors(points, matrix, shift, center):
    c = np.asarray(center, float)
    p = np.asarray(points, float)
    return (p - c) @ np.asarray(matrix).T + c + np.asarray(shift) - p


@pytest.mark.parametrize("shift", [(0.3, 1.4, -2.2), (-0.4, -0.6, 0.45)])
def test_translation_to_a_small_fraction_of_a_voxel(shift):
    a = _scene((14, 72, 72), seed=1)
    b = _warp(a, np.eye(3), shift, (7, 36, 36)) * 0.8 + 0.02          # bleached and offset
    pts = np.array([[7, 30, 30], [6, 40, 36], [8, 36, 44], [7, 28, 42]])
    start = np.rint(np.asarray(shift))[None].repeat(len(pts), 0)
    out = affine_vectors(_rows(pts, start, 3), a, b)
    err = np.abs(out[:, 4:7] - np.asarray(shift))
    assert err.max() < 0.1, err


def test_rotation_beats_translation_only_correlation():
    """A texture turning by 6 degrees about a point off the windows: the affine fit stays
    within a tenth of a voxel where a translated patch is off by more."""
    a = _scene((64, 64), seed=3, n=30, sigma=(2.0, 2.0))
    th = np.deg2rad(6.0)
    m = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    center, shift = (32, 32), (0.7, -1.2)
    b = _warp(a, m, shift, center)
    pts = np.array([[22, 40], [40, 22], [44, 42], [20, 20], [32, 46]])
    tv = _true_vectors(pts, m, shift, center)
    rows = np.column_stack([np.zeros(len(pts)), pts, np.rint(tv), -np.ones(len(pts))])
    lk = affine_vectors(rows, a, b, half_window=10, stride=1)
    ncc = refine_vectors(rows, a, b, half_window=5, search=3)
    e_lk = np.linalg.norm(lk[:, 3:5] - tv, axis=1)
    e_ncc = np.linalg.norm(ncc[:, 3:5] - tv, axis=1)
    assert np.median(e_lk) < 0.1, e_lk
    assert np.median(e_lk) < 0.5 * np.median(e_ncc), (e_lk, e_ncc)


def test_windows_give_the_whole_frame_answer_bit_for_bit():
    a = _scene((12, 60, 70), seed=5)
    b = _warp(a, np.eye(3), (0.2, 2.6, -1.7), (6, 30, 35))
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.integers(0, 12, 25), rng.integers(0, 60, 25), rng.integers(0, 70, 25)])
    pts[:3] = [[0, 0, 0], [11, 59, 69], [5, 0, 69]]                       # frame corners and edges
    vec = np.column_stack([np.zeros(25), np.full(25, 3.0), np.full(25, -2.0)])
    rows = _rows(pts, vec, 3)
    whole = affine_vectors(rows, a, b)
    ra, rb = affine_reach(3)
    shape = np.array(a.shape)
    for i in range(len(rows)):
        p = pts[i]
        e = np.rint(p + vec[i]).astype(int)
        la, ha = np.clip(p - ra, 0, None), np.minimum(p + ra + 1, shape)
        lb, hb = np.clip(e - rb, 0, None), np.minimum(e + rb + 1, shape)
        wa = a[tuple(slice(lo, hi) for lo, hi in zip(la, ha))]
        wb = b[tuple(slice(lo, hi) for lo, hi in zip(lb, hb))]
        one = affine_vectors(rows[i:i + 1], wa, wb, offset_t=la, offset_t1=lb, frame_shape=shape)
        assert np.array_equal(one, whole[i:i + 1]), i
    assert not np.array_equal(whole[:, 4:7], vec)                          # it did move vectors


def test_flat_patches_and_failed_fits_keep_their_vector():
    a = np.zeros((40, 40))
    b = np.zeros((40, 40))
    a[30:, 30:] = _scene((10, 10), seed=2, n=5, sigma=(1.0, 1.0))
    rows = np.array([[0, 10, 10, 1.0, 2.0, -1.0], [0, 20, 5, -1.0, 0.0, -1.0]])
    out = affine_vectors(rows, a, b)
    assert np.array_equal(out, rows)
    assert affine_vectors(np.zeros((0, 6)), a, b).shape == (0, 6)


def test_errors_name_the_argument():
    a = np.zeros((8, 8))
    with pytest.raises(InputError, match=r"rows must have shape \(n, 6\)"):
        affine_vectors(np.zeros((2, 4)), a, a)
    with pytest.raises(InputError, match="image_t and image_t1 must both be 2D or 3D"):
        affine_vectors(np.zeros((0, 6)), a, np.zeros((2, 8, 8)))
    with pytest.raises(InputError, match="half_window must be a non-negative integer"):
        affine_vectors(np.zeros((0, 6)), a, a, half_window=1.5)
    with pytest.raises(InputError, match="iterations must be an integer >= 1, got 0"):
        affine_vectors(np.zeros((0, 6)), a, a, iterations=0)
    with pytest.raises(InputError, match="max_correction must be a positive number"):
        affine_vectors(np.zeros((0, 6)), a, a, max_correction=-1)


@pytest.mark.parametrize("ndim", [2, 3])
def test_a_rows_answer_does_not_depend_on_the_other_rows(ndim):
    shape = (9, 61, 83)[-ndim:]
    a = _scene(shape, seed=7, n=60)
    b = _warp(a, np.eye(ndim), (0.4, 2.3, -1.7)[-ndim:], np.asarray(shape) / 2)
    rng = np.random.default_rng(4)
    n = 37                                             # odd: rows start at every alignment
    pts = np.column_stack([rng.integers(0, s, n) for s in shape])
    vec = np.tile(np.array([0.0, 2.0, -2.0])[-ndim:], (n, 1))
    rows = np.column_stack([np.zeros(n), pts, vec, np.zeros(n)])
    batch = affine_vectors(rows, a, b)
    single = np.concatenate([affine_vectors(rows[i:i + 1], a, b) for i in range(n)])
    np.testing.assert_array_equal(batch, single)


def test_a_single_slice_keeps_its_z_and_still_fits_y_x():
    a = _scene((1, 48, 48), seed=9, n=20, sigma=(1.0, 2.0, 2.0))
    b = _warp(a, np.eye(3), (0.0, 0.6, -1.3), (0, 24, 24))
    rows = np.array([[0, 0, 24, 24, 0, 1.0, -1.0, 0.0]])
    out = affine_vectors(rows, a, b)
    assert out[0, 4] == 0.0
    np.testing.assert_allclose(out[0, 5:7], [0.6, -1.3], atol=0.1)


def _shifted_scene_rows(shape, n, scene_seed, shift, row_seed, corners=False):
    """A scene, the scene shifted by ``shift`` voxels, and ``n`` rows at random voxels with
    integer (0, dy, dx) vectors in [-3, 3] (with ``corners``, the first four on frame edges)."""
    a = _scene(shape, seed=scene_seed, n=120)
    b = _warp(a, np.eye(3), shift, np.asarray(shape) / 2)
    rng = np.random.default_rng(row_seed)
    pts = np.column_stack([rng.integers(0, s, n) for s in shape])
    if corners:
        pts[:4] = [[0, 0, 0], [shape[0] - 1, shape[1] - 1, shape[2] - 1], [3, 0, shape[2] - 1],
                   [shape[0] - 1, shape[1] // 2, 0]]
    vec = np.column_stack([np.zeros(n), rng.integers(-3, 4, n), rng.integers(-3, 4, n)]).astype(float)
    return a, b, np.column_stack([np.zeros(n), pts, vec, np.zeros(n)])


def test_many_batches_read_the_gradient_of_the_whole_frame():
    """More rows than one batch (each batch takes the gradient of only the part of frame t+1 its
    rows reach): every row still gets exactly its answer on its own, rows on the frame's edges too."""
    shape = (7, 90, 120)
    n = 300
    a, b, rows = _shifted_scene_rows(shape, n, 11, (0.3, 1.6, -2.4), 9, corners=True)
    vec = rows[:, 4:7].copy()
    batch = affine_vectors(rows, a, b)
    single = np.concatenate([affine_vectors(rows[i:i + 1], a, b) for i in range(n)])
    assert np.array_equal(batch, single)
    assert not np.array_equal(batch[:, 4:7], vec)                          # it did move vectors
    # the fit on the gradient of the whole frame, all rows in one call: the same bits
    from dask_tracking.flow import subvoxel

    h, st = np.array([2, 12, 12]), np.array([1, 3, 3])
    offs = np.stack(np.meshgrid(*[np.arange(-hh, hh + 1, s_) for hh, s_ in zip(h, st)], indexing="ij"),
                    -1).reshape(-1, 3).astype(np.float64)
    wgt = np.exp(-0.5 * ((offs / (h * 0.6 + 0.5)) ** 2).sum(axis=1))
    b64 = b.astype(np.float64)
    grads = [np.gradient(b64, axis=k) for k in range(3)]
    zero = np.zeros(3, np.int64)
    ref = subvoxel._fit(rows, a.astype(np.float64), b64, grads, offs, wgt, 6, np.array([2.0, 8.0, 8.0]),
                        1e-3, np.array(shape), zero, zero)
    assert np.array_equal(batch[:, 4:7], ref)


def test_polish_batches_are_bounded_by_their_reach_box(monkeypatch):
    """A batch ends where its rows' reach box would exceed the voxel budget; smaller boxes
    (more batches) give the same bits."""
    from dask_tracking.flow import subvoxel

    shape = (7, 90, 120)
    n = 200
    a, b, rows = _shifted_scene_rows(shape, n, 12, (0.2, 1.1, -1.7), 10)
    want = affine_vectors(rows, a, b)
    land = np.sort(rows[:, 1:4], axis=0)
    reach = np.array([3.0, 20.0, 20.0])
    monkeypatch.setattr(subvoxel, "_BOX_VOXELS", 20_000)
    bounds = subvoxel._batch_bounds(land, reach, np.asarray(shape))
    assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) > 3
    assert all(s == e for (_, e), (s, _) in zip(bounds[:-1], bounds[1:]))
    top = np.asarray(shape) - 1.0
    for i, j in bounds:
        box = np.clip(land[i:j].max(0) + reach, 0, top) - np.clip(land[i:j].min(0) - reach, 0, top) + 4
        assert j - i == 1 or np.prod(box) <= 20_000
    assert np.array_equal(affine_vectors(rows, a, b), want)
