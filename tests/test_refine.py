"""Sub-voxel refinement bounded per block, and the refined default of estimate_flow (issues 3 and 11)."""

from __future__ import annotations

import time

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

import dask_tracking as dt
from dask_tracking.dataset import InputError
from dask_tracking.datasets import synthetic
from dask_tracking.flow import FlowTable
from dask_tracking.flow.refine import coarse_vectors, refine_flow, refine_vectors
from dask_tracking.flow.subvoxel import affine_vectors

REACH, FACTOR, HALF, SEARCH = (1, 16, 16), 4, (1, 3, 3), (1, 4, 4)


def _reference(table: FlowTable, movie: np.ndarray, **kw) -> np.ndarray:
    """Coarse then fine search on whole frames: what every chunking must give."""
    out = []
    for t, rows in enumerate(table.compute_pairs(scheduler="sync")):
        a, b = movie[t], movie[t + 1]
        r = coarse_vectors(rows, a, b, reach=kw.get("reach", REACH), factor=kw.get("factor", FACTOR))
        r = refine_vectors(r, a, b, half_window=kw.get("half_window", HALF), search=kw.get("search", SEARCH))
        out.append(affine_vectors(r, a, b) if kw.get("affine", True) else r)
    return np.concatenate(out)


def _lazy(table: FlowTable) -> FlowTable:
    """The same rows as a lazy table (one Delayed per pair), as estimate_flow gives."""
    pairs = [dask.delayed(np.asarray)(p) for p in table.pairs]
    return FlowTable(pairs, table.ndim, table.n_frames, table.attrs)


def _blocks_of(points: np.ndarray, chunks) -> np.ndarray:
    bounds = [np.cumsum(c) for c in chunks]
    return np.stack([np.searchsorted(b, points[:, a], side="right") for a, b in enumerate(bounds)], axis=1)


@pytest.fixture(scope="module")
def textured():
    """A smooth random 3D movie of an odd shape (not a multiple of the coarse factor), drifting."""
    rng = np.random.default_rng(11)
    shape = (3, 7, 61, 83)
    base = ndi.gaussian_filter(rng.random((7, 80, 110)), (0.8, 2.0, 2.0))
    movie = np.stack([ndi.shift(base, (0, 2.3 * t, -1.7 * t), order=1)[:, 5:66, 9:92]
                      for t in range(shape[0])]).astype(np.float32)
    n = 70
    starts = np.stack([rng.integers(0, s, n) for s in shape[1:]], axis=1)
    starts[:6] = [[0, 0, 0], [6, 60, 82], [0, 60, 0], [6, 0, 82], [3, 30, 0], [3, 59, 81]]   # frame edges
    vec = np.stack([rng.integers(-2, 3, n), rng.integers(-8, 9, n), rng.integers(-8, 9, n)], axis=1)
    rows = [np.column_stack([np.full(n, t), starts, vec + (0, 2, -2), rng.random(n)]) for t in range(2)]
    table = FlowTable([r.astype(np.float64) for r in rows], 3, shape[0])
    return movie, table


# ------------------------------------------------------------ same bits for every chunking
@pytest.mark.parametrize("chunks", [None, (17, 64, 64), (5, 50, 70), ((2, 5), (13, 40, 8), (30, 30, 23)),
                                    (4, 24, 28)])
def test_every_chunking_equals_whole_frames(textured, chunks):
    movie, table = textured
    want = _reference(table, movie)
    assert np.any(want[:, 4:7] != np.rint(want[:, 4:7]))              # sub-voxel vectors came out
    image = da.from_array(movie, chunks=(1,) + (chunks or movie.shape[1:]))
    if chunks is not None:
        rows = np.concatenate(table.pairs)
        moved = _blocks_of(rows[:, 1:4] + rows[:, 4:7], image.chunks[1:])
        crossing = np.any(_blocks_of(rows[:, 1:4], image.chunks[1:]) != moved, axis=1)
        if chunks == (4, 24, 28):
            assert crossing.mean() > 0.3                              # motion across seams
    got = refine_flow(table, image, max_vector=(4, 10, 10)).to_numpy(scheduler="threads")
    np.testing.assert_array_equal(got, want)
    lazy = refine_flow(_lazy(table), image, max_vector=(4, 10, 10)).to_numpy(scheduler="sync")
    np.testing.assert_array_equal(lazy, want)


def test_fine_step_only_and_2d_equal_whole_frames(textured):
    movie, table = textured
    want = []
    for t, rows in enumerate(table.pairs):
        want.append(refine_vectors(rows, movie[t], movie[t + 1], half_window=(1, 2, 2), search=(1, 3, 3)))
    image = da.from_array(movie, chunks=(1, 4, 20, 30))
    got = refine_flow(table, image, coarse=False, half_window=(1, 2, 2), search=(1, 3, 3), affine=False)
    np.testing.assert_array_equal(got.to_numpy(scheduler="sync"), np.concatenate(want))
    # 2D: the middle slice, rows without their Z columns
    m2 = movie[:, 3]
    t2 = FlowTable([p[:, [0, 2, 3, 5, 6, 7]] for p in table.pairs], 2, 3)
    want2 = _reference(t2, m2)
    for chunks in [(61, 83), (20, 30), ((50, 11), (3, 40, 40))]:
        got2 = refine_flow(_lazy(t2), da.from_array(m2, chunks=(1,) + chunks), max_vector=10)
        np.testing.assert_array_equal(got2.to_numpy(scheduler="sync"), want2)


def test_row_batches_do_not_change_the_bits(textured, monkeypatch):
    import dask_tracking.flow.refine as R

    movie, table = textured
    want = _reference(table, movie)
    monkeypatch.setattr(R, "_BATCH", 7)                   # rows are searched in batches of 7
    got = refine_flow(table, da.from_array(movie, chunks=(1, 7, 61, 83)), max_vector=(4, 10, 10))
    np.testing.assert_array_equal(got.to_numpy(scheduler="sync"), want)
    # two frames per chunk: frame t and t+1 may come from one chunk or two
    lazy = refine_flow(_lazy(table), da.from_array(movie, chunks=(2, 4, 30, 40)), max_vector=(4, 10, 10))
    np.testing.assert_array_equal(lazy.to_numpy(scheduler="sync"), want)


def test_distributed_cluster_gives_the_same_rows(textured, local_cluster_client):
    movie, table = textured
    want = _reference(table, movie)
    image = da.from_array(movie, chunks=(1, 5, 50, 70))
    got = refine_flow(_lazy(table), image, max_vector=(4, 10, 10)).compute_pairs()
    np.testing.assert_array_equal(np.concatenate(got), want)


# ------------------------------------------------------------------ bounded graph
def test_tasks_read_only_the_chunks_near_their_rows():
    image = da.zeros((3, 64, 4096, 4096), chunks=(1, 32, 256, 256), dtype=np.float32)   # 12 GiB, never computed
    rows = np.array([[0, 40, 1000, 3000, 1, -5, 7, 0.1],
                     [0, 3, 10, 10, 0, 0, 0, 0.2],
                     [1, 63, 4095, 4095, 0, 0, 0, 0.3]])
    t0 = time.perf_counter()
    concrete = refine_flow(FlowTable.from_numpy(rows, n_frames=3), image, max_vector=(4, 10, 10), affine=False)
    lazy = refine_flow(_lazy(FlowTable.from_numpy(rows, n_frames=3)), image, max_vector=(4, 10, 10))
    polished = refine_flow(FlowTable.from_numpy(rows, n_frames=3), image, max_vector=(4, 10, 10))
    assert time.perf_counter() - t0 < 10
    # frame t+1: vector bound 16 (coarse reach), fine search 4, patch 3 and the coarse window: < 60 voxels;
    # the affine polish reads affine_reach around the rounded end: 20 slices, 36 voxels in Y/X more
    halo = np.array([4 + 1 + 1 + 1, 60, 60])
    for table, n_blocks in ((concrete, 3), (lazy, 2 * 2 * 16 * 16), (polished, 3)):
        if table is polished:
            halo = np.array([4 + 1 + 1 + 20, 60, 60])
        graph = table.pairs[0].dask
        deps = graph.get_all_dependencies()
        blocks = [k for k in deps if isinstance(k, tuple) and str(k[0]).startswith("refine-block")]
        assert len(blocks) == n_blocks
        for key in blocks:
            chunk_keys = [c for c in deps[key] if c[0] == image.name]
            assert 2 <= len(chunk_keys) <= 2 * 27
            if table is not lazy:
                t, _ = key[1], key[2]
                start = rows[rows[:, 0] == t][:, 1:4]
                for c in chunk_keys:
                    lo = np.array(c[2:]) * (32, 256, 256)
                    hi = lo + (32, 256, 256)
                    near = np.all((start + halo >= lo) & (start - halo < hi), axis=1)
                    assert near.any() and c[1] in (t, t + 1)
    # the 3 rows of the concrete table touch 3 + 2 + 2 + 1 = 8 distinct chunks, not the 1536 of the movie
    every = set()
    for p in concrete.pairs:
        deps = p.dask.get_all_dependencies()
        every |= {c for k, v in deps.items() for c in v if c[0] == image.name}
    assert len(every) <= 12


# -------------------------------------------------------------------- errors
def test_vector_beyond_the_bound_and_bad_arguments(textured):
    movie, table = textured
    image = da.from_array(movie, chunks=(1, 7, 30, 40))
    lazy = refine_flow(_lazy(table), image, max_vector=(2, 5, 5))            # lazy: raises when computed
    with pytest.raises(InputError, match=r"row \d+ of frame pair t=\d has the vector .* beyond "
                                         r"max_vector=\(2.0, 5.0, 5.0\) voxels"):
        lazy.to_numpy(scheduler="sync")
    with pytest.raises(InputError, match="max_vector"):                     # computed: at once
        refine_flow(table, image, max_vector=(2, 5, 5))
    with pytest.raises(InputError, match=r"pass max_vector \(voxels per spatial axis"):
        refine_flow(_lazy(table), image)
    with pytest.raises(InputError, match="max_vector must be a number >= 0 or 3 of them"):
        refine_flow(table, image, max_vector=(1, 2))
    with pytest.raises(InputError, match="max_length_um needs the voxel size: pass spacing"):
        refine_flow(table, image, max_length_um=1.0)
    with pytest.raises(InputError, match="factor must be an integer >= 1, got 0"):
        refine_flow(table, image, factor=0)
    outside = FlowTable([np.array([[0, 3, 70, 10, 0, 0, 0, 0.0]]), np.zeros((0, 8))], 3, 3)
    with pytest.raises(InputError, match=r"starts at \(3.0, 70.0, 10.0\), outside the frame"):
        refine_flow(outside, image)
    # the bound from the table's gate and spacing: ceil(1.0 um / spacing)
    gated = FlowTable(_lazy(table).pairs, 3, 3, {"gate_radius_um": 1.0})
    out = refine_flow(gated, image, spacing=(0.25, 0.1, 0.1))
    assert out.attrs["refinement"]["max_vector"] == [4.0, 10.0, 10.0]


def test_refined_vectors_stay_within_the_gate(textured):
    movie, table = textured
    image = da.from_array(movie, chunks=(1, 7, 30, 40))
    free = refine_flow(table, image).to_numpy(scheduler="sync")
    sp = np.array([0.25, 0.1, 0.1])
    length = np.linalg.norm(free[:, 4:7] * sp, axis=1)
    gate = float(np.median(length))
    capped = refine_flow(table, image, spacing=sp, max_length_um=gate).to_numpy(scheduler="sync")
    inputs = np.concatenate(table.pairs)
    long_ = length > gate
    assert long_.any() and (~long_).any()
    np.testing.assert_array_equal(capped[~long_], free[~long_])
    np.testing.assert_array_equal(capped[long_], inputs[long_])          # the input vector is kept


@pytest.mark.parametrize("kwargs, match", [
    ({"compat": "nellie", "refine": True}, r"refine=True cannot be used with compat='nellie'"),
    ({"compat": "nellie", "one_to_one": True}, r"one_to_one=True cannot be used with compat='nellie'"),
    ({"refine": "yes"}, r"refine must be None .*, True or False, got 'yes'"),
])
def test_estimate_flow_refine_arguments(kwargs, match):
    ds = synthetic(ndim=2, n_frames=3, seed=2)
    with pytest.raises(InputError, match=match):
        dt.estimate_flow(ds, **kwargs)


def test_estimate_flow_steps_in_order_and_num_t():
    """matching -> refine (gate-bounded) -> one_to_one; each step per pair, so num_t keeps the leading pairs."""
    from dask_tracking.flow.assignment import one_to_one_flow

    ds = synthetic(ndim=2, n_frames=4, seed=2)
    ds = ds.replace(**{n: v.persist(scheduler="sync") for n, v in ds.arrays().items()})
    matched = dt.estimate_flow(ds, refine=False, one_to_one=False)
    assert matched.attrs["refine"] is False and "refinement" not in matched.attrs
    gate = matched.attrs["gate_radius_um"]
    refined = refine_flow(matched, ds.preprocessed, max_vector=int(np.ceil(gate / 0.1)), spacing=ds.spacing,
                          max_length_um=gate)
    only_refined = dt.estimate_flow(ds, one_to_one=False).to_numpy(scheduler="sync")
    np.testing.assert_array_equal(only_refined, refined.to_numpy(scheduler="sync"))
    default = dt.estimate_flow(ds).to_numpy(scheduler="sync")
    np.testing.assert_array_equal(default, one_to_one_flow(refined).to_numpy(scheduler="sync"))
    assert len(default) < len(only_refined)
    part = dt.estimate_flow(ds, num_t=3).to_numpy(scheduler="sync")
    np.testing.assert_array_equal(part, default[default[:, 0] < 2])


# ------------------------------------------------- issue 3: the default mode on known motion
def _score(ds, rows):
    d = ds.ndim
    err, same = [], []
    for t in range(ds.n_frames - 1):
        r = rows[rows[:, 0] == t]
        p0, v = r[:, 1:1 + d], r[:, 1 + d:1 + 2 * d]
        err.append(np.linalg.norm(v - ds.truth.displacement(p0, t), axis=1))
        same.append(ds.truth.object_at(p0, t, nearest=True)
                    == ds.truth.object_at(p0 + v, t + 1, nearest=True))
    return np.concatenate(err), np.concatenate(same)


@pytest.mark.parametrize("ndim, n_frames, chunkings", [
    (3, 4, [(17, 64, 64), (5, 50, 70), ((5, 7), (30, 66), (50, 13, 65))]),
    (2, 5, [(64, 64), (50, 70), ((100, 28), (13, 115))]),
])
def test_default_mode_reaches_one_voxel_on_known_motion(ndim, n_frames, chunkings):
    ds = synthetic(ndim=ndim, n_frames=n_frames, seed=1)
    ds = ds.replace(**{n: v.persist(scheduler="sync") for n, v in ds.arrays().items()})
    table = dt.estimate_flow(ds)
    assert table.attrs["refine"] is True and table.attrs["one_to_one"] is True
    assert "refinement" in table.attrs and "assignment" in table.attrs
    rows = table.to_numpy(scheduler="sync")
    err, same = _score(ds, rows)
    assert len(rows) > 20 and np.median(err) <= 1.0 and same.mean() >= 0.9
    matched = dt.estimate_flow(ds, refine=False, one_to_one=False).to_numpy(scheduler="sync")
    assert np.median(err) < np.median(_score(ds, matched)[0])          # the refinement is what gets there
    for chunks in chunkings:
        other = dt.estimate_flow(ds.rechunk(chunks)).to_numpy(scheduler="threads")
        np.testing.assert_array_equal(other, rows)


def test_a_single_slice_movie_has_no_z_motion():
    ds = synthetic(ndim=3, n_frames=3, shape=(4, 64, 64), seed=0)
    one = ds.replace(**{n: v[:, 1:2] for n, v in ds.arrays().items()})   # 3D data of one slice
    rows = dt.estimate_flow(one).to_numpy(scheduler="sync")
    assert len(rows) > 0 and np.all(rows[:, 4] == 0.0)
    assert np.any(rows[:, 5:7] != np.rint(rows[:, 5:7]))                 # Y/X still refined
    chunked = one.rechunk((1, 30, 40))
    np.testing.assert_array_equal(dt.estimate_flow(chunked).to_numpy(scheduler="sync"), rows)


# ------------------------------------------------ coarse step: block means of a window
def _padded_block_mean(img, f):
    """The block mean written plainly: the whole window as float64, np.pad's reflection, f*f views."""
    a = np.asarray(img, dtype=np.float64)
    pad = [(0, 0)] * (a.ndim - 2) + [(0, (-a.shape[-2]) % f), (0, (-a.shape[-1]) % f)]
    a = np.pad(a, pad, mode="reflect")
    out = a[..., 0::f, 0::f].copy()
    for k in range(1, f * f):
        out += a[..., k // f::f, k % f::f]
    return out / float(f * f)


@pytest.mark.parametrize("shape", [(3, 17, 23), (2, 1, 7), (2, 2, 3), (4, 16, 16), (30, 31), (3, 5, 6)])
@pytest.mark.parametrize("f", [1, 2, 3, 4, 8])
def test_block_mean_is_the_padded_mean_bit_for_bit(shape, f):
    from dask_tracking.flow.refine import _downsample

    rng = np.random.default_rng(sum(shape) + f)
    for dtype in (np.float32, np.uint16, np.float64):
        img = (rng.random(shape) * 1000).astype(dtype)
        got = _downsample(img, f)
        want = _padded_block_mean(img, f)
        assert got.dtype == np.float64 and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_block_mean_holds_no_float64_copy_of_the_window(traced_peak):
    from dask_tracking.flow.refine import _downsample

    img = np.random.default_rng(1).random((17, 483, 481)).astype(np.float32)    # padded on Y and X
    out, peak = traced_peak(_downsample, img, 4)
    assert out.shape == (17, 121, 121)
    assert peak < img.size * 8 / 4          # the float64 window alone would be img.size * 8
