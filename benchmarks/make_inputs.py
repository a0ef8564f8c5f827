"""Generate the side-by-side inputs: the yeast sample and versions tiled n x n in Y and X.

One command::

    python benchmarks/make_inputs.py --tiles 1 2 4 8 [--frames 30] [--frames-8 8]

For each tile count ``n`` it writes, under ``benchmarks/work/data/`` (git-ignored):

``yeast_x{n}_t{T}.zarr``
    our zarr layout (six volumes, one frame per chunk on T, spatial chunks
    ``--chunks``), via :func:`dask_tracking.io.zarr_layout.write_tracking_zarr`;
``yeast_x{n}_t{T}_nellie/``
    Nellie 1.0.4's file layout: ``yeast_x{n}.tif`` (OME-TIFF, TZYX, physical sizes
    and time increment) and ``nellie_output/nellie_necessities/yeast_x{n}.ome.tif``
    plus ``yeast_x{n}-im_{preprocessed,distance,marker,instance_label,skel_relabelled}.ome.tif``,
    the names Nellie's ``FileInfo(..., output_naming="stable")`` + ``ImInfo`` look for.
    The raw file is a hard link to the necessities copy (same bytes) to save disk.

Tiling copies every volume n x n times in Y and X. Label and branch ids are offset
per tile by ``k * (max id of the sample)`` (k = tile index) so they stay unique;
markers, distance, preprocessed and raw are copied as they are.
The input is read from ``../shared/data/nellie_yeast.zarr`` (or ``--source``) and is
never copied into the repository.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
DATA = WORK / "data"
DEFAULT_SOURCE = HERE.parent.parent / "shared" / "data" / "nellie_yeast.zarr"
#: Nellie's pipeline names of the inputs of the tracking stage, by our volume name.
NELLIE_NAMES = {
    "preprocessed": "im_preprocessed",
    "distance": "im_distance",
    "markers": "im_marker",
    "labels": "im_instance_label",
    "branches": "im_skel_relabelled",
}
ID_VOLUMES = ("labels", "branches")


def source_path() -> Path:
    env = os.environ.get("DASK_TRACKING_YEAST")
    if env:
        return Path(env)
    for cand in (DEFAULT_SOURCE, Path("/work/shared/data/nellie_yeast.zarr")):
        if cand.exists():
            return cand
    return DEFAULT_SOURCE


def names(n: int, frames: int) -> dict[str, Path]:
    """Paths of one generated size."""
    base = DATA / f"yeast_x{n}_t{frames}"
    stem = f"yeast_x{n}"
    nec = base.with_name(base.name + "_nellie") / "nellie_output" / "nellie_necessities"
    return {
        "zarr": base.with_suffix(".zarr"),
        "nellie_dir": base.with_name(base.name + "_nellie"),
        "nellie_raw": base.with_name(base.name + "_nellie") / f"{stem}.tif",
        "nellie_output": base.with_name(base.name + "_nellie") / "nellie_output",
        "necessities": nec,
        "stem": Path(stem),
    }


def tile_frame(frame: np.ndarray, n: int, offset: int) -> np.ndarray:
    """Tile one (Z, Y, X) frame n x n in Y and X; ids offset by ``k * offset`` per tile."""
    if n == 1:
        return np.ascontiguousarray(frame)
    z, y, x = frame.shape
    out = np.empty((z, y * n, x * n), dtype=frame.dtype)
    for i in range(n):
        for j in range(n):
            block = frame
            if offset:
                k = i * n + j
                block = np.where(frame > 0, frame + np.asarray(k * offset, dtype=frame.dtype), 0)
            out[:, i * y:(i + 1) * y, j * x:(j + 1) * x] = block
    return out


def _ome_kwargs(scale: dict) -> dict:
    return {
        "bigtiff": True,
        "photometric": "minisblack",
        "ome": True,
        "metadata": {
            "axes": "TZYX",
            "PhysicalSizeX": scale["X"], "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": scale["Y"], "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": scale["Z"], "PhysicalSizeZUnit": "µm",
            "TimeIncrement": scale["T"], "TimeIncrementUnit": "s",
        },
    }


def write_nellie_layout(group, n: int, frames: int, paths: dict, offsets: dict) -> None:
    """Nellie's OME-TIFF files (uncompressed, memory-mappable), one frame at a time."""
    import tifffile

    scale = dict(group.attrs["scale"])
    nec = paths["necessities"]
    nec.mkdir(parents=True, exist_ok=True)
    stem = str(paths["stem"])
    z, y, x = group["raw"].shape[1:]
    shape = (frames, z, y * n, x * n)
    targets = {"raw": nec / f"{stem}.ome.tif"}
    targets.update({v: nec / f"{stem}-{NELLIE_NAMES[v]}.ome.tif" for v in NELLIE_NAMES})
    for vol, path in targets.items():
        if path.exists():
            path.unlink()
        mm = tifffile.memmap(path, shape=shape, dtype=group[vol].dtype, **_ome_kwargs(scale))
        for t in range(frames):
            mm[t] = tile_frame(np.asarray(group[vol][t]), n, offsets.get(vol, 0))
        mm.flush()
        del mm
    raw_link = paths["nellie_raw"]
    if raw_link.exists():
        raw_link.unlink()
    os.link(targets["raw"], raw_link)


def write_zarr_layout(group, n: int, frames: int, paths: dict, offsets: dict,
                      chunks: tuple[int, int, int]) -> None:
    """Our zarr layout, built lazily from the sample and written with dask."""
    import dask
    import dask.array as da

    from dask_tracking.dataset import Scale, TrackingDataset
    from dask_tracking.io.zarr_layout import write_tracking_zarr

    arrays = {}
    for vol in ("raw", "preprocessed", "distance", "markers", "labels", "branches"):
        src = da.from_zarr(group[vol])[:frames]
        off = offsets.get(vol, 0)
        rows = []
        for i in range(n):
            row = []
            for j in range(n):
                k = i * n + j
                row.append(da.where(src > 0, src + np.asarray(k * off, dtype=src.dtype), 0)
                           .astype(src.dtype) if (off and k) else src)
            rows.append(row)
        arrays[vol] = da.block(rows) if n > 1 else src
    z, y, x = arrays["labels"].shape[1:]
    cz, cy, cx = (min(chunks[0], z), min(chunks[1], y), min(chunks[2], x))
    ds = TrackingDataset.from_arrays(
        arrays, Scale.coerce(dict(group.attrs["scale"]), "TZYX"), axes="TZYX",
        source=f"nellie_yeast.zarr tiled {n}x{n} in Y and X, {frames} frames",
        spatial_chunks=(cz, cy, cx))
    with dask.config.set(scheduler="threads", num_workers=2):
        write_tracking_zarr(ds, paths["zarr"], overwrite=True)


def make(n: int, frames: int, *, chunks=(17, 256, 256), force: bool = False,
         layouts=("zarr", "nellie")) -> dict[str, Path]:
    """Generate one size (skipped where the outputs already exist unless ``force``)."""
    import zarr

    group = zarr.open_group(str(source_path()), mode="r")
    T = group["labels"].shape[0]
    if frames > T:
        raise SystemExit(f"--frames {frames} > {T} frames of the sample")
    offsets = {v: int(np.asarray(group[v][...]).max()) for v in ID_VOLUMES}
    paths = names(n, frames)
    done_z = paths["zarr"].exists() and (paths["zarr"] / "zarr.json").exists()
    done_n = paths["nellie_raw"].exists()
    t0 = time.perf_counter()
    if "zarr" in layouts and (force or not done_z):
        write_zarr_layout(group, n, frames, paths, offsets, chunks)
    if "nellie" in layouts and (force or not done_n):
        write_nellie_layout(group, n, frames, paths, offsets)
    print(f"x{n} t{frames}: {paths['zarr'].name} + {paths['nellie_dir'].name} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return paths


def frames_for(n: int, frames: int, frames_big: dict[int, int]) -> int:
    return frames_big.get(n, frames)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--frames", type=int, default=30, help="frames per size (default all 30)")
    p.add_argument("--frames-8", type=int, default=None,
                   help="frames for the 8x8 size only (disk: 8x8 x 30 frames is ~33 GB of TIFF)")
    p.add_argument("--chunks", type=int, nargs=3, default=(17, 256, 256),
                   help="spatial chunks (Z Y X) of our zarr layout")
    p.add_argument("--layouts", nargs="+", default=["zarr", "nellie"], choices=["zarr", "nellie"])
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    big = {8: a.frames_8} if a.frames_8 else {}
    for n in a.tiles:
        make(n, frames_for(n, a.frames, big), chunks=tuple(a.chunks), force=a.force,
             layouts=tuple(a.layouts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
