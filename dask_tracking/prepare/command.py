"""``dask-tracking prepare RAW -o INPUTS.zarr``: the preparation stages from the command line."""

from __future__ import annotations

import sys

import click

__all__ = ["prepare_command"]


@click.command("prepare")
@click.argument("raw")
@click.option("-o", "--output", required=True, metavar="INPUTS.zarr",
              help="Zarr store to write the six tracking inputs to (our layout).")
@click.option("--scale", default=None,
              help='Scale when the movie has none, e.g. \'{"T": 4.5, "Z": 0.25, "Y": 0.0655, "X": 0.0655}\' '
                   "or 'T,Z,Y,X' numbers (T in s, Z/Y/X in um).")
@click.option("--compat", type=click.Choice(["nellie", "fixed"]), default="fixed", show_default=True,
              help="'nellie': Nellie 1.0.4's preparation bit for bit; 'fixed': single-bin thresholds guarded.")
@click.option("--channel", type=int, default=None, help="Channel of a multi-channel movie.")
@click.option("--extras/--no-extras", default=True, show_default=True,
              help="Also write prepare/skeleton, prepare/pixel_class and prepare/border.")
@click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
              help="A stage parameter, e.g. filter_min_radius_um=0.3 or label_threshold=110 (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace an existing INPUTS.zarr.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Connect to an existing scheduler (default: $DASK_SCHEDULER_ADDRESS).")
@click.option("--workers", type=int, default=None, metavar="N", help="Local worker processes.")
@click.option("--memory-limit", default=None, metavar="SIZE", help="Memory per local worker, e.g. 4GiB.")
def prepare_command(raw, output, scale, compat, channel, extras, options, overwrite, scheduler, workers,
                    memory_limit) -> None:
    """Prepare RAW (OME-TIFF, OME-Zarr or ND2 movie) into the tracking inputs INPUTS.zarr."""
    from pathlib import Path

    from ..cli import _open_cluster, parse_scale
    from ..dataset import InputError
    from ..io.zarr_layout import write_tracking_zarr
    from .api import prepare

    try:
        kw = {}
        for item in options:
            if "=" not in item:
                raise InputError(f"--option must be NAME=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            kw[k.strip()] = _value(v.strip())
        if Path(output).exists() and not overwrite:
            raise FileExistsError(f"{output!r} exists; pass --overwrite to replace it")
        pm = prepare(raw, parse_scale(scale), compat=None if compat == "fixed" else compat,
                     channel=channel, return_extras=True, **kw)
        with _open_cluster(scheduler, workers, memory_limit, False) as session:
            stored = write_tracking_zarr(pm.dataset, output, overwrite=overwrite, compute=False)
            targets = [stored]
            if extras:
                targets.append(_store_extras(pm, output))
            session.client.compute(targets, sync=True)
        click.echo(pm.dataset.summary().replace("TrackingDataset", f"wrote {output}:", 1))
    except (InputError, FileNotFoundError, FileExistsError, ImportError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _value(text: str):
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _store_extras(pm, output: str):
    import dask.array as da
    import zarr

    g = zarr.open_group(output, mode="r+")
    sub = g.require_group("prepare")
    sources, targets = [], []
    for name, a in pm.extras().items():
        z = sub.create_array(name, shape=a.shape, dtype=a.dtype, chunks=tuple(c[0] for c in a.chunks),
                             overwrite=True)
        z.attrs["axes"] = pm.dataset.axes
        sources.append(a)
        targets.append(z)
    return da.store(sources, targets, lock=False, compute=False)
