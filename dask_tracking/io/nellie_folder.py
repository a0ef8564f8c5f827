"""Nellie output folders: ``nellie_necessities/<stem>-<key>.ome.tif`` (spec section 0.2).

Nellie keeps every volume of one input image in ``<output_dir>/nellie_necessities``
under one file stem. The tracking inputs are:

==============  ==================================  ==========
volume          file                                dtype
==============  ==================================  ==========
raw             ``<stem>.ome.tif``                  as the input (e.g. uint16)
preprocessed    ``<stem>-im_preprocessed.ome.tif``  float32
labels          ``<stem>-im_instance_label.ome.tif`` int32
branches        ``<stem>-im_skel_relabelled.ome.tif`` uint32
markers         ``<stem>-im_marker.ome.tif``        uint8
distance        ``<stem>-im_distance.ome.tif``      float32
==============  ==================================  ==========

The raw volume is Nellie's working OME-TIFF copy of the input, which Nellie
writes as ``nellie_necessities/<stem>.ome.tif``. When that file is absent the
reader looks for ``<stem>.ome.tif`` in the output folder (the parent of
``nellie_necessities``); there is no other fallback (the original input may have
other channels or time points).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..dataset import VOLUMES, InputError, Scale, TrackingDataset
from .ome_tiff import read_ome_tiff, write_ome_tiff

__all__ = ["NELLIE_KEYS", "NELLIE_DTYPES", "find_nellie_folder", "nellie_stems",
           "read_nellie_folder", "write_nellie_folder", "scale_from_stem"]

#: Nellie's file key of each derived volume (raw is ``<stem>.ome.tif``).
NELLIE_KEYS: dict[str, str] = {
    "preprocessed": "im_preprocessed",
    "labels": "im_instance_label",
    "branches": "im_skel_relabelled",
    "markers": "im_marker",
    "distance": "im_distance",
}
#: The dtypes Nellie 1.0.4 writes (raw keeps the input's dtype).
NELLIE_DTYPES: dict[str, str] = {
    "preprocessed": "float32",
    "labels": "int32",
    "branches": "uint32",
    "markers": "uint8",
    "distance": "float32",
}
_SUFFIX = "-im_preprocessed.ome.tif"
NECESSITIES = "nellie_necessities"


def nellie_stems(folder: str | Path) -> list[str]:
    """Stems of the complete input sets in a ``nellie_necessities`` folder (sorted)."""
    f = Path(folder)
    stems = []
    for p in sorted(f.glob("*" + _SUFFIX)):
        stem = p.name[: -len(_SUFFIX)]
        if all((f / f"{stem}-{key}.ome.tif").is_file() for key in NELLIE_KEYS.values()):
            stems.append(stem)
    return stems


def find_nellie_folder(path: str | Path) -> Path | None:
    """The ``nellie_necessities`` folder at or below ``path``, or None.

    Looks at ``path`` itself, ``path/nellie_necessities`` and
    ``path/nellie_output/nellie_necessities`` (Nellie's default output folder
    beside the input), in that order, and returns the first holding at least one
    complete set of the five derived volumes.
    """
    p = Path(path)
    for cand in (p, p / NECESSITIES, p / "nellie_output" / NECESSITIES):
        if cand.is_dir() and nellie_stems(cand):
            return cand
    return None


def scale_from_stem(stem: str) -> dict:
    """Scale entries from a Nellie "detailed" stem such as ``x-TZYX-T4p5356_Z0p25_Y0p0655_X0p0655-ch0-t0_to_3``.

    Nellie rounds each value to 4 decimals in the name, so this is a fallback for
    files without OME sizes. Returns only the entries found (``None`` values skipped).
    """
    m = re.search(r"-[TZYXC]+-((?:[TZYX](?:None|[0-9p]+)_?)+)-ch\d+", stem)
    if not m:
        return {}
    out = {}
    for part in m.group(1).split("_"):
        if len(part) > 1 and part[1:] != "None":
            try:
                out[part[0]] = float(part[1:].replace("p", "."))
            except ValueError:
                continue
    return out


def _raw_path(folder: Path, stem: str) -> Path:
    for cand in (folder / f"{stem}.ome.tif", folder.parent / f"{stem}.ome.tif"):
        if cand.is_file():
            return cand
    raise InputError(
        f"Nellie folder {str(folder)!r} has no raw volume for stem {stem!r}: looked for "
        f"{str(folder / (stem + '.ome.tif'))!r} and {str(folder.parent / (stem + '.ome.tif'))!r}"
    )


def read_nellie_folder(folder: str | Path, scale: Any = None, *, stem: str | None = None
                       ) -> TrackingDataset:
    """Open the six tracking inputs of a Nellie output folder lazily.

    Parameters
    ----------
    folder : str or Path
        ``nellie_necessities`` (or a folder :func:`find_nellie_folder` resolves).
    scale : Scale, mapping or sequence, optional
        Overrides the files' metadata. By default the scale is read from the OME
        ``PhysicalSize*``/``TimeIncrement`` of ``im_preprocessed``, then the raw
        file, then the stem's "detailed" name (4 decimals).
    stem : str, optional
        Which input set when the folder holds several.

    Returns
    -------
    TrackingDataset
        One frame per chunk, canonical axes (T first, singleton Z squeezed).

    Raises
    ------
    InputError
        No complete set, several sets and no ``stem``, a missing raw file, files of
        different shapes, or a scale that is neither in the files nor given.
    """
    f = Path(folder)
    found = find_nellie_folder(f)
    if found is None:
        raise InputError(
            f"{str(f)!r} is not a Nellie output folder: no nellie_necessities/<stem>"
            f"{_SUFFIX} with its siblings ({', '.join(k + '.ome.tif' for k in NELLIE_KEYS.values())})"
        )
    f = found
    stems = nellie_stems(f)
    if stem is None:
        if len(stems) > 1:
            raise InputError(
                f"Nellie folder {str(f)!r} holds {len(stems)} input sets; pass stem= one of {stems}"
            )
        stem = stems[0]
    elif stem not in stems:
        raise InputError(f"stem {stem!r} is not a complete input set in {str(f)!r}; allowed: {stems}")

    paths = {name: f / f"{stem}-{key}.ome.tif" for name, key in NELLIE_KEYS.items()}
    paths["raw"] = _raw_path(f, stem)
    arrays, axes_of, scales = {}, {}, {}
    for name in VOLUMES:
        arrays[name], axes_of[name], scales[name] = read_ome_tiff(paths[name])
    axes = axes_of["labels"]
    for name in VOLUMES:
        if axes_of[name] != axes or arrays[name].shape != arrays["labels"].shape:
            raise InputError(
                f"Nellie file {paths[name].name!r} has shape {arrays[name].shape} (axes "
                f"{axes_of[name]!r}) but {paths['labels'].name!r} has {arrays['labels'].shape} "
                f"({axes!r}); all six must match"
            )
    if scale is None:
        merged = scale_from_stem(stem)
        merged.update(scales["raw"])
        merged.update(scales["preprocessed"])
        want = ("T", "Z", "Y", "X") if axes == "TZYX" else ("T", "Y", "X")
        missing = [a for a in want if merged.get(a) is None]
        if missing:
            raise InputError(
                f"Nellie folder {str(f)!r} gives no {', '.join(missing)} size (OME PhysicalSize*/"
                f"TimeIncrement or the file name); pass scale={{'T': s, 'Z': um, 'Y': um, 'X': um}}"
            )
        scale = {a: merged[a] for a in want}
    return TrackingDataset.from_arrays(arrays, Scale.coerce(scale, axes), axes=axes,
                                       source=str(f / stem))


def write_nellie_folder(ds: TrackingDataset, folder: str | Path, stem: str = "dask_tracking", *,
                        overwrite: bool = False) -> list[Path]:
    """Write the six inputs as Nellie's files, one frame at a time.

    Files go to ``<folder>/nellie_necessities/``: the raw volume as ``<stem>.ome.tif``
    (its dtype kept) and the others as ``<stem>-<key>.ome.tif`` in Nellie's dtypes
    (:data:`NELLIE_DTYPES`), each an uncompressed BigTIFF OME-TIFF with axes
    ``TZYX``/``TYX``, ``PhysicalSizeX/Y/Z`` and ``TimeIncrement``, readable by
    ``tifffile.memmap`` and by Nellie's ``ImInfo``.

    Parameters
    ----------
    ds : TrackingDataset
    folder : str or Path
        Nellie's output folder (``nellie_necessities`` is created inside it).
    stem : str
        File stem (no path separators).
    overwrite : bool
        Replace existing files of the same stem.

    Returns
    -------
    list of Path
        The six files written, raw first.
    """
    if not isinstance(ds, TrackingDataset):
        raise InputError(f"ds must be a TrackingDataset, got {type(ds).__name__}")
    if not stem or "/" in stem or "\\" in stem:
        raise InputError(f"stem must be a non-empty file name without path separators, got {stem!r}")
    out = Path(folder) / NECESSITIES
    targets = {"raw": out / f"{stem}.ome.tif"}
    targets.update({n: out / f"{stem}-{k}.ome.tif" for n, k in NELLIE_KEYS.items()})
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]!r} exists; pass overwrite=True to replace stem {stem!r}")
    out.mkdir(parents=True, exist_ok=True)
    scale = ds.scale.as_dict()
    written = []
    for name in VOLUMES:
        a = getattr(ds, name)
        dtype = a.dtype if name == "raw" else NELLIE_DTYPES[name]
        written.append(write_ome_tiff(targets[name], a, axes=ds.axes, scale=scale, dtype=dtype,
                                      description=f"dask_tracking {name}"))
    return written
