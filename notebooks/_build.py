"""Write the three notebooks of this folder (without outputs) from the cells below.

Run ``python notebooks/_build.py`` after editing a cell here; the ``.ipynb`` files are
generated, so edit this script rather than the notebooks. ``tests/test_notebooks.py``
executes the written notebooks in their small mode and checks that they match this
script (so a hand edit of a notebook that is not carried over here is caught).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

# Shared first lines of every parameter cell.
PARAMETERS_COMMON = '''\
# Parameters (this cell is tagged "parameters": papermill or nbclient may replace it).
import os
from pathlib import Path

# SMALL: tiny sizes so the notebook runs in well under a minute (the test suite sets
# DASK_TRACKING_NOTEBOOK_SMALL=1); set it to False for the full-size example.
SMALL = os.environ.get("DASK_TRACKING_NOTEBOOK_SMALL", "0").lower() not in ("", "0", "false", "no")
# Where figures, stores and reports go (the test suite points it at a temporary folder).
OUTPUT_ROOT = Path(os.environ.get("DASK_TRACKING_NOTEBOOK_OUT", "notebook-output"))
'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, *, tags: tuple[str, ...] = ()):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


# --------------------------------------------------------------------------- 01
QUICKSTART = [
    md('''
# 1. Quickstart: track a synthetic movie with known motion

This notebook runs the whole tracking stage of `dask_tracking` (Nellie's Hu-moment flow, flow
interpolation, label tracks and voxel reassignment) on a small synthetic 3D movie whose true
motion is known, on a `distributed.LocalCluster`, and then looks at the results:

1. flow vectors over a maximum projection,
2. tracks coloured by time,
3. reassigned labels through time (object ids made consistent over time),
4. accuracy against the known motion (`ds.truth`).

Every figure is also saved as a PNG in `OUTPUT_DIR`.
'''),
    code(PARAMETERS_COMMON + '''
OUTPUT_DIR = OUTPUT_ROOT / "01-quickstart"
N_WORKERS = 2            # worker processes of the LocalCluster
WORKER_MEMORY = "1GiB"   # memory limit per worker
SEED = 0
''', tags=("parameters",)),
    code('''
if SMALL:
    N_FRAMES, SHAPE, N_OBJECTS = 4, (8, 64, 64), 4
else:
    N_FRAMES, SHAPE, N_OBJECTS = 12, (12, 96, 128), 6
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
print(f"small={SMALL}: {N_FRAMES} frames of {SHAPE} voxels, {N_OBJECTS} objects -> {OUTPUT_DIR}")
'''),
    md('''
## A synthetic movie

`synthetic` renders bent tubes and blobs that move rigidly (a circular path plus a turn about Z)
and derives the six inputs of the tracking stage from them, the way Nellie's earlier stages
would: `raw`, `preprocessed`, `distance`, `markers`, `labels` and `branches`. Nothing is computed
yet: each volume is a lazy dask array, one task per frame. `ds.truth` knows where every material
point is at every frame.
'''),
    code('''
import json

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import zarr
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap

import dask_tracking as dt
from dask_tracking.datasets import synthetic

ds = synthetic(3, N_FRAMES, shape=SHAPE, n_objects=N_OBJECTS, seed=SEED)
print(ds.summary())
print("true objects:", ds.truth.n_objects, ds.truth.kinds)
'''),
    md('''
## The whole job on a LocalCluster

`dt.cluster()` starts a `LocalCluster` of worker processes (or connects to an existing scheduler,
see notebook 3) and returns a session holding the `Client`. Open the dashboard link while the
run is going to watch the tasks.
'''),
    code('''
session = dt.cluster(n_workers=N_WORKERS, memory_limit=WORKER_MEMORY)
client = session.client
print(session.description)
print("dashboard:", session.dashboard_link)
'''),
    md('''
`dt.run` estimates the flow, reassigns labels and branches frame by frame and (with
`tracks=True`) computes label tracks, writing everything to one zarr store. The default mode fixes
Nellie 1.0.4's known bugs; `compat="nellie"` reproduces Nellie bit for bit (notebook 2).
'''),
    code('''
store = OUTPUT_DIR / "quickstart.zarr"
result = dt.run(ds, store, client=client, overwrite=True, tracks=True)
print(result.summary())
'''),
    code('''
out = zarr.open_group(str(store), mode="r")
rows = out["flow"][...]                           # (M, 8): t, z, y, x, dz, dy, dx, cost (voxels)
tracks = out["tracks"][...]                       # (K, 5): track_id, t, z, y, x (voxels)
labels_re = da.from_zarr(out["labels_reassigned"])  # (T, Z, Y, X) int32, lazy
print("flow rows:", rows.shape, " track rows:", tracks.shape)
print(labels_re)
'''),
    md('''
## 1. Flow vectors over a maximum projection

Each flow row links a marker of frame `t` to its match in frame `t + 1`. The arrows are drawn at
their true length (voxels) over the maximum projection (along Z) of the first frame.
'''),
    code('''
proj0 = ds.raw[0].max(axis=0).compute()
fig, ax = plt.subplots(figsize=(7, 5.5))
ax.imshow(proj0, cmap="gray")
q = ax.quiver(rows[:, 3], rows[:, 2], rows[:, 6], rows[:, 5], rows[:, 0], cmap="viridis",
              angles="xy", scale_units="xy", scale=1, width=0.005)
fig.colorbar(q, ax=ax, label="frame t of the vector (t -> t+1)", ticks=range(N_FRAMES - 1))
ax.set(title="Flow vectors (true length) over the max projection of frame 0",
       xlabel="x (voxels)", ylabel="y (voxels)")
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "flow-vectors.png", dpi=100)
plt.show()
'''),
    md('''
## 2. Tracks coloured by time

Label tracks follow every labelled voxel of frame 0 through the interpolated flow. A subset of
the tracks is drawn, each segment coloured by its frame.
'''),
    code('''
track_id = tracks[:, 0].astype(np.int64)
ids = np.unique(track_id)
shown = ids[:: max(len(ids) // 300, 1)]
segments, seg_t = [], []
for tid in shown:
    tr = tracks[track_id == tid]
    tr = tr[np.argsort(tr[:, 1], kind="stable")]
    for a, b in zip(tr[:-1], tr[1:]):
        segments.append([(a[4], a[3]), (b[4], b[3])])  # (x, y)
        seg_t.append(a[1])
fig, ax = plt.subplots(figsize=(7, 5.5))
ax.imshow(proj0, cmap="gray")
lc = LineCollection(segments, cmap="plasma", linewidths=1.2)
lc.set_array(np.asarray(seg_t, dtype=float))
ax.add_collection(lc)
fig.colorbar(lc, ax=ax, label="frame", ticks=range(N_FRAMES))
ax.set(title=f"{len(shown)} of {len(ids)} tracks, coloured by time", xlabel="x (voxels)",
       ylabel="y (voxels)")
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "tracks.png", dpi=100)
plt.show()
'''),
    md('''
## 3. Reassigned labels through time

The input `labels` number the objects of each frame on their own (raster order), so an object's
id can change from frame to frame. Reassignment carries the frame-0 ids along the flow: the same
object keeps its colour. Shown: the maximum projection of the ids along Z.
'''),
    code('''
frames = np.unique(np.linspace(0, N_FRAMES - 1, min(N_FRAMES, 5)).astype(int))
n_colours = int(max(ds.labels.max().compute(), labels_re.max().compute())) + 1
rng = np.random.default_rng(1)
colours = np.vstack([[0, 0, 0, 1], np.c_[rng.uniform(0.25, 1, (n_colours, 3)), np.ones(n_colours)]])
cmap = ListedColormap(colours[: n_colours + 1])
fig, axes = plt.subplots(2, len(frames), figsize=(3 * len(frames), 5.2), squeeze=False)
for j, t in enumerate(frames):
    for i, (name, vol) in enumerate((("input labels", ds.labels), ("reassigned", labels_re))):
        ax = axes[i, j]
        ax.imshow(np.asarray(vol[t].max(axis=0)), cmap=cmap, vmin=0, vmax=n_colours,
                  interpolation="nearest")
        ax.set_title(f"{name}, t={t}", fontsize=9)
        ax.axis("off")
fig.suptitle("Object ids through time: per-frame input labels (top) vs reassigned (bottom)")
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "labels-through-time.png", dpi=100)
plt.show()
'''),
    md('''
## 4. Accuracy against the known motion

* **Flow**: each vector against the true displacement of its start voxel (end-point error
  `|estimated - true|`). Markers are re-detected in every frame, so a marker's match is rarely
  exactly where its material went: even a perfect marker matcher is off by about one voxel.
* **Tracks**: distance from each track's position at frame `t` to where its seed voxel truly is.
* **Labels**: share of reassigned voxels whose label is the frame-0 label of their true object.
'''),
    code('''
truth = ds.truth
d = 3
true_disp = np.concatenate([truth.displacement(rows[rows[:, 0] == t, 1:1 + d], t)
                            for t in range(N_FRAMES - 1)])
est_disp = np.concatenate([rows[rows[:, 0] == t, 1 + d:1 + 2 * d] for t in range(N_FRAMES - 1)])
flow_err = np.linalg.norm(est_disp - true_disp, axis=1)

t_of = tracks[:, 1].astype(np.int64)
seed_pos = np.full((track_id.max() + 1, d), np.nan)
seed_pos[track_id[t_of == 0]] = tracks[t_of == 0, 2:]
track_err, travel = {}, {}   # distance to the truth, and how far the seeds truly moved
for t in range(1, N_FRAMES):
    sel = (t_of == t) & ~np.isnan(seed_pos[track_id, 0])
    true = truth.position(seed_pos[track_id[sel]], 0, t)
    track_err[t] = np.linalg.norm(tracks[sel, 2:] - true, axis=1)
    travel[t] = np.linalg.norm(true - seed_pos[track_id[sel]], axis=1)

# label accuracy: map each frame-0 reassigned label to the true object most of its voxels are in
objects = truth.objects
r0, o0 = np.asarray(labels_re[0]), np.asarray(objects[0])
mapping = {}
for lab in np.unique(r0[r0 > 0]):
    ids_, counts = np.unique(o0[r0 == lab], return_counts=True)
    mapping[int(lab)] = int(ids_[np.argmax(counts)])
keys = np.array(sorted(mapping), dtype=np.int64)
vals = np.array([mapping[k] for k in keys], dtype=np.int64)
label_acc, coverage = [], []
for t in range(N_FRAMES):
    r, o = np.asarray(labels_re[t]), np.asarray(objects[t])
    m = r > 0
    idx = np.clip(np.searchsorted(keys, r[m]), 0, len(keys) - 1)
    mapped = np.where(keys[idx] == r[m], vals[idx], -1)
    label_acc.append(float(np.mean(mapped == o[m])) if m.any() else 0.0)
    coverage.append(float(m.sum() / max((o > 0).sum(), 1)))

metrics = {
    "flow_rows": int(len(rows)),
    "flow_median_error_voxels": float(np.median(flow_err)),
    "flow_within_one_voxel": float(np.mean(flow_err <= 1.0)),
    "median_true_displacement_voxels": float(np.median(np.linalg.norm(true_disp, axis=1))),
    "track_median_error_last_frame_voxels": float(np.median(track_err[N_FRAMES - 1])),
    "track_median_true_travel_last_frame_voxels": float(np.median(travel[N_FRAMES - 1])),
    "label_accuracy": float(np.average(label_acc, weights=coverage)) if sum(coverage) else 0.0,
    "label_accuracy_per_frame": label_acc,
    "labelled_share_per_frame": coverage,
}
(OUTPUT_DIR / "metrics.json").write_text(json.dumps(metrics, indent=1))
for k, v in metrics.items():
    print(f"{k:40s} {np.round(v, 3) if not isinstance(v, int) else v}")
'''),
    code('''
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for k, (axis, colour) in enumerate((("y", "tab:blue"), ("x", "tab:orange"))):
    axes[0].scatter(true_disp[:, 1 + k], est_disp[:, 1 + k], s=12, alpha=0.7, color=colour, label=axis)
lim = float(np.abs(np.r_[true_disp[:, 1:].ravel(), est_disp[:, 1:].ravel()]).max()) + 0.5
axes[0].plot([-lim, lim], [-lim, lim], "k:", lw=1)
axes[0].set(xlabel="true displacement (voxels)", ylabel="flow vector (voxels)",
            title=f"Flow vectors: median end-point error {np.median(flow_err):.2f} voxels")
axes[0].legend(title="axis")
ts = sorted(track_err)
axes[1].boxplot([track_err[t] for t in ts], positions=ts, showfliers=False)
axes[1].plot(ts, [np.median(travel[t]) for t in ts], "r^--", label="median true travel since frame 0")
axes[1].set(xlabel="frame", ylabel="voxels", title="Tracks seeded at frame 0: distance to the truth")
axes[1].legend(loc="upper left")
axes[2].plot(range(N_FRAMES), label_acc, "o-", label="label accuracy")
axes[2].plot(range(N_FRAMES), coverage, "s--", label="labelled share of true object voxels")
axes[2].set(xlabel="frame", ylim=(0, 1.05), xticks=range(N_FRAMES), title="Reassigned labels")
axes[2].legend(loc="lower left")
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "accuracy.png", dpi=100)
plt.show()
'''),
    md('''
The same measurement as a one-liner: `dask-tracking demo` (or `dask_tracking.demo.run_demo()`)
runs this job and prints these numbers. Close the cluster when done:
'''),
    code('''
session.close()
'''),
]

# --------------------------------------------------------------------------- 02
YEAST = [
    md('''
# 2. The real data: Nellie's yeast sample, `compat="nellie"` and the default mode

The yeast mitochondria sample that ships with Nellie 1.0.4 (30 frames of 17 x 192 x 279 voxels),
with the inputs of the tracking stage and Nellie's own outputs (`reference/`), as described in
`../shared/data/README.md`. This notebook

1. runs the tracking stage with `compat="nellie"` and checks it against Nellie's outputs,
2. runs the default mode (Nellie's bugs fixed) and shows what changes,
3. exports the tracks for napari and the labels in the Cell Tracking Challenge format.

**Your own data**: point `SOURCE` (or the environment variable `DASK_TRACKING_NELLIE_SOURCE`) at
a Nellie output folder (`nellie_output/`, `nellie_necessities/` or the folder holding it). When
that folder also holds Nellie's tracking outputs (`<stem>-flow_vector_array.npy`,
`<stem>-im_obj_label_reassigned.ome.tif`, ...) they are compared too.
'''),
    code(PARAMETERS_COMMON + '''
OUTPUT_DIR = OUTPUT_ROOT / "02-nellie-yeast"
# Folder holding nellie_yeast.zarr (default: ../shared/data beside the checkout).
SHARED_DATA = os.environ.get("DASK_TRACKING_SHARED_DATA")
# A Nellie output folder of your own; None: the yeast sample.
SOURCE = os.environ.get("DASK_TRACKING_NELLIE_SOURCE") or None
N_WORKERS = 2
WORKER_MEMORY = "2GiB"
''', tags=("parameters",)),
    code('''
import json

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import zarr
from matplotlib.colors import ListedColormap
from matplotlib.ticker import MaxNLocator

import dask_tracking as dt


def find_yeast():
    """nellie_yeast.zarr in SHARED_DATA, else in ../shared/data or ../../shared/data."""
    candidates = [Path(SHARED_DATA)] if SHARED_DATA else [Path("../shared/data"), Path("../../shared/data")]
    for folder in candidates:
        if (folder / "nellie_yeast.zarr" / "zarr.json").exists():
            return (folder / "nellie_yeast.zarr").resolve()
    raise FileNotFoundError(
        f"nellie_yeast.zarr not found in {[str(c) for c in candidates]}: set DASK_TRACKING_SHARED_DATA "
        "to the folder holding it, or SOURCE to a Nellie output folder of your own")


source = Path(SOURCE) if SOURCE else find_yeast()
N_FRAMES = 4 if SMALL else None          # SMALL: the first 4 frames only
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
ds = dt.open_dataset(source)
if N_FRAMES is not None and N_FRAMES < ds.n_frames:
    ds = ds.isel(t=slice(0, N_FRAMES))
T = ds.n_frames
print(ds.summary())
'''),
    md('''
### Nellie's outputs for this input

For the yeast sample they are in `reference/`; for a Nellie folder, Nellie's own tracking files
next to its inputs (whatever of them exists).
'''),
    code('''
def load_reference(source):
    """Nellie 1.0.4's tracking outputs for ``source`` (a dict; empty when none are found)."""
    source = Path(source)
    if (source / "reference" / "zarr.json").exists():
        ref = zarr.open_group(str(source / "reference"), mode="r")
        return {"flow": ref["flow_vector_array"][...],
                "labels": da.from_zarr(ref["labels_reassigned"]),
                "branches": da.from_zarr(ref["branches_reassigned"]),
                "tracks": ref["tracks_labelall_start0"][...]}
    from dask_tracking.io.nellie_folder import find_nellie_folder
    from dask_tracking.io.ome_tiff import read_ome_tiff

    folder = find_nellie_folder(source) if source.is_dir() else find_nellie_folder(source.parent)
    found = {}
    if folder is None:
        return found
    for p in sorted(folder.glob("*-flow_vector_array.npy"))[:1]:
        found["flow"] = np.load(p)
    for key, name in (("labels", "im_obj_label_reassigned"), ("branches", "im_branch_label_reassigned")):
        for p in sorted(folder.glob(f"*-{name}.ome.tif"))[:1]:
            found[key] = read_ome_tiff(p)[0]
    return found


reference = load_reference(source)
print("Nellie outputs found:", sorted(reference) or "none")
'''),
    md('''
## 1. `compat="nellie"`: Nellie 1.0.4, bit for bit

One LocalCluster serves both runs. With `tracks=True` the run also follows every labelled voxel
of frame 0 (Nellie's `LabelTracks(label_num=None, start_frame=0)`).
'''),
    code('''
session = dt.cluster(n_workers=N_WORKERS, memory_limit=WORKER_MEMORY)
client = session.client
print(session.description, "| dashboard:", session.dashboard_link)

store_compat = OUTPUT_DIR / "yeast-compat.zarr"
res_compat = dt.run(ds, store_compat, compat="nellie", client=client, overwrite=True, tracks=True)
print(res_compat.summary())
'''),
    md('''
The comparison covers the frames computed here (all 30, or the first 4 in the small mode: the
flow rows of those frame pairs, the reassigned volumes of those frames and the track points in
them; each frame depends only on the frames before it, so a prefix of the movie gives a prefix
of Nellie's outputs).
'''),
    code('''
oc = zarr.open_group(str(store_compat), mode="r")


def same_volume(ours, theirs):
    return all(np.array_equal(np.asarray(ours[t]), np.asarray(theirs[t])) for t in range(T))


def same_rows(ours, theirs):
    return ours.shape == theirs.shape and np.array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))


parity = {}
if "flow" in reference:
    theirs = reference["flow"][reference["flow"][:, 0] < T - 1]
    parity["flow rows, same order"] = bool(oc["flow"].shape == theirs.shape
                                           and np.array_equal(oc["flow"][...], theirs))
if "labels" in reference:
    parity["reassigned labels, every voxel"] = same_volume(oc["labels_reassigned"], reference["labels"])
if "branches" in reference:
    parity["reassigned branches, every voxel"] = same_volume(oc["branches_reassigned"], reference["branches"])
if "tracks" in reference:
    theirs = reference["tracks"][reference["tracks"][:, 1] < T]
    parity["tracks (all labels, start 0), as row sets"] = same_rows(oc["tracks"][...], theirs)
for what, ok in parity.items():
    print(f"{what:45s} {'identical' if ok else 'DIFFERENT'}")
'''),
    md('''
## 2. The default mode: what it changes

The default mode runs the same method with Nellie 1.0.4's bugs fixed (the tables in the README
list them one by one). What it changes, and where to look in the figure below:

* **flow** (left): a mutual-best marker pair is emitted once, not twice (B13); one gate `<= D`
  and float64 costs in both matching paths (B1, B22). Fewer rows, from the same markers.
* **reassignment** (middle): labelled voxels that receive no match take the label of their object
  instead of 0 (B19), and a frame pair without matches no longer stops the run (B14). Where every
  labelled voxel finds a match, as in most frames of this movie, both modes give the same labels.
* **tracks** (right): every point is interpolated on its own, with weights that do not depend on
  the batch (B2, B3, B17), and a track ends where no flow vector lies within the radius; the start
  frame appears once per track (B18). The number of live tracks per frame differs accordingly.
'''),
    code('''
store_default = OUTPUT_DIR / "yeast-default.zarr"
res_default = dt.run(ds, store_default, client=client, overwrite=True, tracks=True)
print(res_default.summary())
od = zarr.open_group(str(store_default), mode="r")
'''),
    code('''
flow_c, flow_d = oc["flow"][...], od["flow"][...]
tr_c, tr_d = oc["tracks"][...], od["tracks"][...]
lab_c, lab_d = da.from_zarr(oc["labels_reassigned"]), da.from_zarr(od["labels_reassigned"])
pairs = np.arange(T - 1)
rows_c = np.bincount(flow_c[:, 0].astype(int), minlength=T - 1)[: T - 1]
rows_d = np.bincount(flow_d[:, 0].astype(int), minlength=T - 1)[: T - 1]
alive_c = np.array([len(np.unique(tr_c[tr_c[:, 1] == t, 0])) for t in range(T)])
alive_d = np.array([len(np.unique(tr_d[tr_d[:, 1] == t, 0])) for t in range(T)])
vox_c = da.count_nonzero(lab_c, axis=(1, 2, 3)).compute()
vox_d = da.count_nonzero(lab_d, axis=(1, 2, 3)).compute()
both = (lab_c > 0) & (lab_d > 0)
agree = (da.sum(both & (lab_c == lab_d), axis=(1, 2, 3)) / da.maximum(da.sum(both, axis=(1, 2, 3)), 1)).compute()

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
w = 0.4
axes[0].bar(pairs - w / 2, rows_c, w, label="compat (Nellie)")
axes[0].bar(pairs + w / 2, rows_d, w, label="default")
axes[0].set(xlabel="frame pair t -> t+1", ylabel="flow rows", title="Flow vectors per frame pair")
axes[0].legend()
axes[1].plot(range(T), vox_c, "o-", label="compat: labelled voxels")
axes[1].plot(range(T), vox_d, "s--", label="default: labelled voxels")
axes[1].set(xlabel="frame", ylabel="voxels with a reassigned label", title="Reassignment coverage")
ax2 = axes[1].twinx()
ax2.plot(range(T), agree, "k:", label="same label where both labelled")
ax2.set(ylim=(0, 1.05), ylabel="agreement")
axes[1].legend(loc="lower left")
axes[2].plot(range(T), alive_c, "o-", label="compat (Nellie)")
axes[2].plot(range(T), alive_d, "s--", label="default")
axes[2].set(xlabel="frame", ylabel="tracks with a point", title="Tracks seeded at frame 0")
axes[2].legend()
for ax in axes:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "compat-vs-default.png", dpi=100)
plt.show()
same_frames = sum(np.array_equal(np.asarray(lab_c[t]), np.asarray(lab_d[t])) for t in range(T))
print("flow rows: compat", len(flow_c), " default", len(flow_d),
      " (distinct start points:", len(np.unique(flow_c[:, :4], axis=0)), "and",
      len(np.unique(flow_d[:, :4], axis=0)), ")")
print(f"reassigned labels identical in both modes in {same_frames} of {T} frames")
print("track points: compat", len(tr_c), " default", len(tr_d))
'''),
    code('''
proj0 = ds.raw[0].max(axis=0).compute()
fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
for ax, rows, name in ((axes[0], flow_c, "compat (Nellie)"), (axes[1], flow_d, "default")):
    ax.imshow(proj0, cmap="gray")
    r = rows[rows[:, 0] == 0]
    ax.quiver(r[:, 3], r[:, 2], r[:, 6], r[:, 5], color="tab:orange", angles="xy",
              scale_units="xy", scale=0.2, width=0.004)
    ax.set(title=f"{name}: {len(r)} vectors, frame 0 -> 1 (length x5)", xlabel="x (voxels)",
           ylabel="y (voxels)")
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "flow-vectors.png", dpi=100)
plt.show()
'''),
    code('''
frames = np.unique(np.linspace(0, T - 1, min(T, 4)).astype(int))
n_colours = int(max(lab_c.max().compute(), lab_d.max().compute())) + 1
rng = np.random.default_rng(1)
cmap = ListedColormap(np.vstack([[0, 0, 0, 1], np.c_[rng.uniform(0.25, 1, (n_colours, 3)), np.ones(n_colours)]]))
fig, axes = plt.subplots(3, len(frames), figsize=(3.6 * len(frames), 7.5), squeeze=False)
for j, t in enumerate(frames):
    for i, (name, vol) in enumerate((("input", ds.labels), ("compat", lab_c), ("default", lab_d))):
        axes[i, j].imshow(np.asarray(vol[t].max(axis=0)), cmap=cmap, vmin=0, vmax=n_colours,
                          interpolation="nearest")
        axes[i, j].set_title(f"{name} labels, t={t}", fontsize=9)
        axes[i, j].axis("off")
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "labels-through-time.png", dpi=100)
plt.show()
'''),
    md('''
## 3. Export: napari tracks and the Cell Tracking Challenge format

`dask_tracking.io.output.export` (CLI: `dask-tracking export OUT.zarr DIR --to napari|ctc|nellie|geff`)
writes a finished run's outputs in other formats.
'''),
    code('''
from dask_tracking.io.output import export
from dask_tracking.io.tracks_export import read_tracks

napari_files = export(store_default, "napari", OUTPUT_DIR / "napari", overwrite=True)
ctc_files = export(store_default, "ctc", OUTPUT_DIR / "ctc", overwrite=True)
print("napari:", [p.name for p in napari_files])
print("CTC:", len(ctc_files), "files, e.g.", [p.name for p in ctc_files[:3]], "...")
back = read_tracks(OUTPUT_DIR / "napari" / "tracks.npz")
print("tracks read back:", back.data.shape, "properties:", sorted(back.properties))
'''),
    md('''
In napari (not needed here):

```python
import napari
viewer = napari.Viewer()
viewer.add_image(ds.raw, scale=ds.spacing, name="raw")
viewer.add_labels(zarr.open_array("yeast-default.zarr/labels_reassigned"), scale=ds.spacing)
tracks = read_tracks("napari/tracks.npz")
viewer.add_tracks(tracks.data, properties=tracks.properties, scale=ds.spacing)
```

The CTC folder holds one `maskTTT.tif` per frame and `res_track.txt` (`L B E P`: label, first
frame, last frame, parent); a label that vanishes and comes back starts a new track whose parent is
the earlier one.
'''),
    code('''
import tifffile

ctc = np.loadtxt(OUTPUT_DIR / "ctc" / "res_track.txt", dtype=np.int64, ndmin=2)
mask0 = tifffile.imread(OUTPUT_DIR / "ctc" / "mask000.tif")
print("CTC tracks:", len(ctc), " mask000.tif:", mask0.shape, mask0.dtype, " labels:", len(np.unique(mask0)) - 1)
fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1.3, 1]})
axes[0].imshow(mask0.max(axis=0), cmap=cmap, vmin=0, vmax=n_colours, interpolation="nearest")
axes[0].set(title="mask000.tif (max projection), CTC labels", xlabel="x (voxels)", ylabel="y (voxels)")
order = np.argsort(ctc[:, 1], kind="stable")
for y, (lab, b, e, p) in enumerate(ctc[order]):
    axes[1].plot([b, e + 0.8], [y, y], lw=6, solid_capstyle="butt",
                 color="tab:red" if p else cmap(lab / n_colours))
    axes[1].text(b, y + 0.15, f"label {lab}", fontsize=8)
axes[1].set(xlabel="frame", ylabel="CTC track", title="CTC tracks (red: continues a parent track)",
            yticks=range(len(ctc)), ylim=(-0.6, len(ctc) - 0.2), xlim=(-0.2, T))
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "ctc-tracks.png", dpi=100)
plt.show()

metrics = {"frames": T, "parity": parity, "flow_rows_compat": int(len(flow_c)),
           "flow_rows_default": int(len(flow_d)), "ctc_tracks": int(len(ctc)),
           "napari_rows": int(back.data.shape[0]), "source": str(source)}
(OUTPUT_DIR / "metrics.json").write_text(json.dumps(metrics, indent=1))
session.close()
'''),
]

# --------------------------------------------------------------------------- 03
SCALING = [
    md('''
# 3. Scaling: bigger than memory, performance reports, clusters and GPUs

The tracking graph holds at most one frame block (plus its halo) per task and writes every frame
to zarr as soon as it is done, so a movie does not have to fit in memory: here the movie is larger
than the memory limit of each worker (in the full-size version; the small test version only uses
the same code). This notebook also

* records a Dask performance report (an HTML file) and the memory and task stream of the run,
* shows how the same code runs on an existing cluster (a scheduler address, dask-jobqueue),
* and on GPUs (`dt.cluster(kind="gpu")`, skipped where CUDA is absent).
'''),
    code(PARAMETERS_COMMON + '''
OUTPUT_DIR = OUTPUT_ROOT / "03-scaling"
# An existing scheduler, e.g. "tcp://10.0.0.5:8786"; None: start a LocalCluster here.
SCHEDULER_ADDRESS = os.environ.get("DASK_SCHEDULER_ADDRESS") or None
N_WORKERS = 2
''', tags=("parameters",)),
    code('''
if SMALL:
    N_FRAMES, SHAPE, N_OBJECTS, WORKER_MEMORY = 5, (8, 64, 96), 4, "700MiB"
else:
    # 40 frames of 16 x 256 x 384 voxels: 1.2 GB of inputs, more than each worker's 1 GiB.
    # (Workers of 512 MiB are too small: a worker process of this job reaches about 420 MB,
    # past the 80% of its limit where Dask pauses it.)
    N_FRAMES, SHAPE, N_OBJECTS, WORKER_MEMORY = 40, (16, 256, 384), 12, "1GiB"
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
'''),
    md('''
## A movie on disk

`write_synthetic_zarr` renders a synthetic movie frame by frame straight into our zarr layout
(bounded memory: a few frames at a time), then opens it lazily.
'''),
    code('''
import json
import time

import matplotlib.pyplot as plt
import numpy as np
from dask.utils import format_bytes, parse_bytes
from distributed import get_task_stream, performance_report
from distributed.diagnostics import MemorySampler
from distributed.utils import key_split

import dask_tracking as dt
from dask_tracking.datasets.synthetic import write_synthetic_zarr

movie = OUTPUT_DIR / "movie.zarr"
t0 = time.perf_counter()
ds = write_synthetic_zarr(movie, N_FRAMES, SHAPE, overwrite=True, n_objects=N_OBJECTS, seed=0, num_workers=2)
print(f"written in {time.perf_counter() - t0:.1f} s")
print(ds.summary())
movie_bytes = sum(a.nbytes for a in ds.arrays().values())
cluster_memory = N_WORKERS * parse_bytes(WORKER_MEMORY)
print(f"movie: {format_bytes(movie_bytes)} uncompressed; workers: {N_WORKERS} x {WORKER_MEMORY} = "
      f"{format_bytes(cluster_memory)} -> the movie is {movie_bytes / parse_bytes(WORKER_MEMORY):.2f} x "
      f"one worker's memory, {movie_bytes / cluster_memory:.2f} x all of them together")
'''),
    md('''
## The run, with a performance report

`performance_report` saves the dashboard's views of everything computed inside the `with`
block as one HTML file; `MemorySampler` and `get_task_stream` keep the same information for
plotting here.
'''),
    code('''
session = dt.cluster(n_workers=N_WORKERS, memory_limit=WORKER_MEMORY, scheduler=SCHEDULER_ADDRESS)
client = session.client
print(session.description, "| dashboard:", session.dashboard_link)

report = OUTPUT_DIR / "performance-report.html"
memory = MemorySampler()
with performance_report(filename=str(report)), get_task_stream(client) as stream, \\
        memory.sample("tracking run", interval=0.2):
    result = dt.run(ds, OUTPUT_DIR / "scaling.zarr", client=client, overwrite=True)
print(result.summary())
print("performance report:", report, format_bytes(report.stat().st_size))
'''),
    code('''
fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
mem = memory.to_pandas()
elapsed = (mem.index - mem.index[0]).total_seconds()
axes[0].plot(elapsed, mem["tracking run"] / 2**20, label="cluster process memory")
limit = N_WORKERS * parse_bytes(WORKER_MEMORY) if session.kind == "local" else None
if limit:
    axes[0].axhline(limit / 2**20, color="tab:red", ls="--", label="sum of worker limits")
axes[0].axhline(movie_bytes / 2**20, color="k", ls=":", label="movie (uncompressed)")
axes[0].set(xlabel="s", ylabel="MiB", title="Memory of all workers during the run")
axes[0].legend()

tasks = stream.data
workers = sorted({t["worker"] for t in tasks})
prefixes = sorted({key_split(t["key"]) for t in tasks})
colour = {p: plt.cm.tab20(i % 20) for i, p in enumerate(prefixes)}
t_start = min(s["start"] for t in tasks for s in t["startstops"])
busy = {}
for t in tasks:
    p = key_split(t["key"])
    for s in t["startstops"]:
        if s["action"] == "compute":
            y = workers.index(t["worker"])
            axes[1].barh(y, s["stop"] - s["start"], left=s["start"] - t_start, color=colour[p], height=0.8)
            busy[p] = busy.get(p, 0.0) + s["stop"] - s["start"]
axes[1].set(yticks=range(len(workers)), yticklabels=[w.split("//")[-1] for w in workers], xlabel="s",
            title="Task stream (compute), coloured by task kind")
top = sorted(busy, key=busy.get, reverse=True)[:8]
axes[1].legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colour[p]) for p in top], labels=top,
               fontsize=7, loc="upper right")
fig.tight_layout()
fig.savefig(OUTPUT_DIR / "memory-and-tasks.png", dpi=100)
plt.show()
for p in top:
    print(f"{p:45s} {busy[p]:7.2f} s")
'''),
    md('''
## The same code on an existing cluster

Anything that runs a Dask scheduler works: give its address to `dt.cluster(scheduler=...)`
(or set `DASK_SCHEDULER_ADDRESS`, or `dask-tracking run ... --scheduler tcp://host:8786` on the
command line). Here we connect a second session to the scheduler we already started; a real
cluster only differs in the address. `resume=True` continues a run from its first frame not
marked done (here: none is left to do).
'''),
    code('''
address = client.scheduler.address
with dt.cluster(scheduler=address) as existing:
    print(existing.kind, "|", existing.description)
    again = dt.run(ds, OUTPUT_DIR / "scaling.zarr", client=existing.client, resume=True)
    print("resumed run computed", len(again.frames_computed), "frames")
'''),
    md('''
On an HPC system, start the workers with [dask-jobqueue](https://jobqueue.dask.org) and pass its
client (not executed here):

```python
from dask_jobqueue import SLURMCluster
from distributed import Client

cluster = SLURMCluster(cores=4, processes=4, memory="32GB", walltime="02:00:00",
                       local_directory="$TMPDIR", queue="normal")
cluster.scale(jobs=8)                        # 8 jobs x 4 workers
client = Client(cluster)
dt.run("movie.zarr", "out.zarr", client=client, tracks=True)
```

or start `dask scheduler` on one node, `dask worker tcp://NODE:8786 --nthreads 1 --memory-limit 8GiB`
on the others, and run `dask-tracking run movie.zarr -o out.zarr --scheduler tcp://NODE:8786`.
The inputs and the output store must be on storage every worker can read and write.
'''),
    md('''
## GPUs

`dt.cluster(kind="gpu")` starts a `dask_cuda.LocalCUDACluster`: one worker per GPU, an RMM memory
pool, spilling device memory to host. Install the `gpu` extra
(`pip install 'dask-tracking[gpu]'`). The cell below runs only where CUDA, CuPy and dask-cuda are
present.
'''),
    code('''
from dask_tracking.backend import cupy_available

try:
    import dask_cuda  # noqa: F401
    has_dask_cuda = True
except ImportError:
    has_dask_cuda = False

if cupy_available() and has_dask_cuda:
    session.close()                           # give the CPU workers' memory back first
    with dt.cluster(kind="gpu") as gpu:
        print(gpu.description, "| dashboard:", gpu.dashboard_link)
        gpu_result = dt.run(ds, OUTPUT_DIR / "scaling-gpu.zarr", client=gpu.client, overwrite=True)
        print(gpu_result.summary())
else:
    print("CUDA, CuPy or dask-cuda not available here: the GPU example is skipped")
'''),
    code('''
metrics = {"frames": N_FRAMES, "shape": list(SHAPE), "movie_bytes": int(movie_bytes),
           "cluster_memory_bytes": int(cluster_memory), "run_seconds": result.seconds,
           "frames_computed": len(result.frames_computed), "flow_rows": result.flow_rows,
           "resumed_frames_computed": len(again.frames_computed), "tasks": len(tasks),
           "peak_cluster_memory_bytes": float(mem["tracking run"].max())}
(OUTPUT_DIR / "metrics.json").write_text(json.dumps(metrics, indent=1))
session.close()
'''),
]

NOTEBOOKS = {
    "01-quickstart.ipynb": QUICKSTART,
    "02-nellie-yeast.ipynb": YEAST,
    "03-scaling.ipynb": SCALING,
}


def build(name: str):
    """The notebook ``name`` as an nbformat object (no outputs)."""
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids, so rebuilding gives the same file
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"
    return nb


def main(argv: list[str] | None = None) -> int:
    for name in NOTEBOOKS:
        nb = build(name)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
