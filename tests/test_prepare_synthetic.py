"""Preparation on synthetic raw movies: same answer for any chunking (3D and 2D), parameters,
laziness, and bad input raised before any work."""

from __future__ import annotations

import time

import dask
import dask.array as da
import numpy as np
import pytest

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.prepare import (FilterParams, PrepareParams, filter_halo, filter_movie,
                                   markers_frame, network_frame)
from dask_tracking.prepare.thresholds import (min_threshold, otsu_threshold, sample_strides,
                                              triangle_threshold)


def tube_movie(n_frames: int = 2, shape=(20, 96, 96), *, seed: int = 0, shift_px: float = 1.5) -> np.ndarray:
    """A uint16 movie (T, *shape) of a few bright tubes (3D or 2D) that move a little per frame.

    Tubes are line segments with a Gaussian cross-section (about 0.2 um radius at
    0.0655 um pixels); several cross the middle of the frame, so they cross the
    seams of any spatial chunking used in the tests.
    """
    rng = np.random.default_rng(seed)
    nd = len(shape)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    out = np.empty((n_frames,) + tuple(shape), dtype=np.uint16)
    segments = []
    for k in range(5):
        a = np.array([rng.uniform(0.15, 0.85) * n for n in shape])
        b = np.array([rng.uniform(0.15, 0.85) * n for n in shape])
        if k < 2:  # through the centre: crosses the seams
            a[-2:] = np.array(shape[-2:]) * [0.2, 0.2 + 0.6 * k]
            b[-2:] = np.array(shape[-2:]) * [0.8, 0.8 - 0.6 * k]
        segments.append((a, b))
    sig = np.array([0.8] + [2.5] * (nd - 1) if nd == 3 else [2.5] * nd, dtype=np.float32)
    for t in range(n_frames):
        img = np.zeros(shape, dtype=np.float32)
        for a, b in segments:
            off = np.zeros(nd)
            off[-1] = shift_px * t
            a2, b2 = a + off, b + off
            d = b2 - a2
            pts = [g - p for g, p in zip(grids, a2)]
            u = np.clip(sum(p * dd for p, dd in zip(pts, d)) / float(d @ d), 0, 1)
            dist2 = sum(((p - u * dd) / s) ** 2 for p, dd, s in zip(pts, d, sig))
            img = np.maximum(img, 180.0 * np.exp(-0.5 * dist2))
        noise = rng.normal(0, 4.0, size=shape)
        out[t] = np.clip(100 + img + noise, 0, 65535).astype(np.uint16)
    return out


SCALE3 = {"T": 2.0, "Z": 0.25, "Y": 0.0655, "X": 0.0655}
SCALE2 = {"T": 2.0, "Y": 0.0655, "X": 0.0655}
NAMES = ("preprocessed", "labels", "branches", "distance", "markers")


def _compute(pm):
    todo = {**pm.dataset.arrays(), **pm.extras()}
    return dict(zip(todo, dask.compute(*todo.values(), scheduler="threads", num_workers=2)))


@pytest.fixture(scope="module")
def movie3():
    return tube_movie(2, (20, 96, 96), seed=1)


@pytest.fixture(scope="module")
def whole3(movie3):
    return _compute(dt.prepare(movie3, SCALE3, return_extras=True))


def test_synthetic_3d_finds_the_tubes(whole3, movie3):
    got = whole3
    assert got["preprocessed"].dtype == np.float32 and got["labels"].dtype == np.int32
    assert got["branches"].dtype == np.uint32 and got["markers"].dtype == np.uint8
    for t in range(2):
        lab = got["labels"][t]
        assert lab.max() >= 1
        # the tubes are found: bright raw voxels are mostly labelled, dark ones not
        bright = movie3[t] > 250  # tube cores
        assert (lab[bright] > 0).mean() > 0.8
        assert (lab[movie3[t] < 110] > 0).mean() < 0.01
        # markers, branches and distance live inside the objects
        assert got["markers"][t].sum() > 0
        assert np.all(lab[got["markers"][t] > 0] > 0)
        assert np.all((got["branches"][t] > 0) <= (lab > 0))
        assert np.all((got["distance"][t] > 0) == (lab > 0))
        assert np.all(got["border"][t][lab > 0] == 0)
        assert set(np.unique(got["pixel_class"][t])) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize("chunks", [(20, 48, 48), (5, 50, 70), ((7, 13), (30, 66), (77, 19))],
                         ids=["halves", "5x50x70", "uneven"])
def test_synthetic_3d_same_for_any_chunking(movie3, whole3, chunks):
    raw = da.from_array(movie3, chunks=(1,) + chunks if not isinstance(chunks[0], tuple)
                        else ((1, 1),) + chunks)
    pm = dt.prepare(raw, SCALE3, return_extras=True)
    assert pm.dataset.preprocessed.chunks == raw.chunks
    got = _compute(pm)
    for name, want in whole3.items():
        np.testing.assert_array_equal(got[name], want, err_msg=f"{name} with chunks {chunks}")


def test_synthetic_3d_on_a_distributed_cluster(movie3, whole3, local_cluster_client):
    raw = da.from_array(movie3, chunks=(1, 10, 48, 64))
    pm = dt.prepare(raw, SCALE3, return_extras=True)
    todo = {**pm.dataset.arrays(), **pm.extras()}
    got = dict(zip(todo, local_cluster_client.compute(list(todo.values()), sync=True)))
    for name, want in whole3.items():
        np.testing.assert_array_equal(got[name], want, err_msg=f"{name} on the cluster")


def test_synthetic_2d_same_for_any_chunking():
    movie = tube_movie(2, (128, 128), seed=3)
    whole = _compute(dt.prepare(movie, SCALE2, return_extras=True))
    assert whole["labels"].max() >= 1 and whole["markers"].sum() > 0
    # the 2D LoG blob term is normalised to 0.1 over each frame
    assert np.isclose(whole["preprocessed"][0].max(), 0.1, atol=1e-6) or whole["preprocessed"][0].max() > 0.1
    for chunks in [(64, 64), (50, 70), ((30, 98), (77, 51))]:
        raw = da.from_array(movie, chunks=(1,) + chunks if not isinstance(chunks[0], tuple)
                            else ((1, 1),) + chunks)
        got = _compute(dt.prepare(raw, SCALE2, return_extras=True))
        for name, want in whole.items():
            np.testing.assert_array_equal(got[name], want, err_msg=f"2D {name} with chunks {chunks}")


def test_filter_halo_follows_the_scales():
    assert filter_halo((0.25, 0.0655, 0.0655)) == (10, 32, 32)
    small = filter_halo((0.25, 0.0655, 0.0655), FilterParams(max_radius_um=0.5))
    assert all(s < b for s, b in zip(small[1:], (32, 32)))


def test_parameters_change_the_result(movie3, whole3):
    got = _compute(dt.prepare(movie3, SCALE3, return_extras=True, label_min_radius_um=0.6))
    # a larger minimum object size can only remove objects
    assert (got["labels"] > 0).sum() <= (whole3["labels"] > 0).sum()
    fixed = _compute(dt.prepare(movie3, SCALE3, return_extras=True, label_threshold=60000))
    assert fixed["labels"].max() == 0 and fixed["markers"].sum() == 0


def test_prepare_is_lazy_and_fast_on_a_huge_movie():
    huge = da.zeros((2000, 64, 2048, 2048), dtype=np.uint16, chunks=(1, 64, 1024, 1024))  # 1 TB
    t0 = time.perf_counter()
    ds = dt.prepare(huge, SCALE3)
    assert time.perf_counter() - t0 < 30
    assert ds.preprocessed.shape == huge.shape and ds.labels.chunks == huge.chunks


# ----------------------------------------------------------------------- thresholds
def test_thresholds_on_a_two_level_sample():
    v = np.concatenate([np.full(900, 1.0), np.full(100, 5.0), np.linspace(1, 5, 50)]).astype(np.float32)
    o = otsu_threshold(v)
    assert o.dtype == np.float32 and 1.0 < o < 5.0
    assert min_threshold(v) == float(min(triangle_threshold(v), o))


def test_triangle_single_bin_raises_in_nellie_mode_and_is_guarded_otherwise():
    v = np.full(10, 3.0, dtype=np.float32)
    with pytest.raises(ValueError):
        triangle_threshold(v)
    # numpy widens a zero range to (2.5, 3.5): the guard returns the center of the bin holding 3.0
    assert float(triangle_threshold(v, guard=True)) == pytest.approx(3.0, abs=1 / 256)


def test_sample_strides_cap():
    assert sample_strides((17, 192, 279), 1_000_000) == (1, 1, 1)
    st = sample_strides((64, 2048, 2048), 1_000_000)
    n = np.prod([-(-s // k) for s, k in zip((64, 2048, 2048), st)])
    assert n <= 1_000_000 and max(st) > 1


# --------------------------------------------------------------------- frame kernels
def test_network_and_markers_on_a_hand_made_object():
    lab = np.zeros((9, 40, 40), dtype=np.int32)
    lab[3:6, 18:22, 5:35] = 1  # a bar along X
    lab[3:6, 5:35, 18:22] = 1  # and one along Y: a cross
    lab[4, 2:4, 2:4] = 2       # a speck with no skeleton of its own
    pre = lab.astype(np.float32)
    skel, pclass, branches = network_frame(lab, pre, (0.25, 0.0655, 0.0655))
    assert set(np.unique(branches[lab == 1])) - {0}, "object 1 gets branch ids"
    assert pclass.max() == 4 and np.any(pclass == 2)  # a junction and tips
    assert skel.max() >= 4                            # four arms around the junction
    assert np.all((branches > 0) <= (lab > 0))
    raw = (100 + 50 * (lab > 0)).astype(np.uint16)
    mk, dist, border = markers_frame(lab, raw, (0.25, 0.0655, 0.0655))
    assert mk.sum() >= 1 and np.all(lab[mk > 0] > 0)
    assert dist.max() <= 2 * 1.0 / 0.0655 and dist[lab > 0].min() >= 1
    assert border.sum() > 0 and not np.any(border[lab > 0])


# ------------------------------------------------------------------------ bad input
def test_errors_name_the_argument():
    arr = np.zeros((2, 8, 16, 16), np.uint16)
    with pytest.raises(InputError, match=r"scale=\{'T'"):
        dt.prepare(arr)
    with pytest.raises(InputError, match="no time axis"):
        dt.prepare(arr[0], {"Z": 0.25, "Y": 0.1, "X": 0.1, "T": 1}, axes="ZYX")
    with pytest.raises(InputError, match="unknown preparation option 'filter_radius'"):
        dt.prepare(arr, SCALE3, filter_radius=1)
    with pytest.raises(InputError, match="compat must be"):
        dt.prepare(arr, SCALE3, compat="bogus")
    with pytest.raises(InputError, match=r"FilterParams.min_radius_um must be a finite number > 0, got -1"):
        PrepareParams.from_options({"filter_min_radius_um": -1})
    with pytest.raises(InputError, match="MarkerParams.use_im must be 'distance' or 'frangi'"):
        dt.prepare(arr, SCALE3, markers_use_im="raw")
    with pytest.raises(InputError, match="dtype complex64"):
        dt.prepare(arr.astype(np.complex64), SCALE3)
    with pytest.raises(InputError, match="2 channels"):
        dt.prepare(np.zeros((2, 2, 8, 16, 16), np.uint16), SCALE3, axes="TCZYX")
    with pytest.raises(InputError, match="1 frame"):
        dt.prepare(arr[:1], SCALE3)
