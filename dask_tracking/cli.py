"""The ``dask-tracking`` command line: thin wrappers over the Python API."""

from __future__ import annotations

import json
import sys

import click

from .dataset import InputError


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _scale_option(f):
    return click.option(
        "--scale",
        default=None,
        help='Override or supply the scale, e.g. \'{"T": 4.5, "Z": 0.25, "Y": 0.0655, "X": 0.0655}\' '
        "(T in s, Z/Y/X in um) or 'T,Z,Y,X' numbers.",
    )(f)


def parse_scale(text: str | None):
    """Parse ``--scale``: JSON mapping, or comma-separated numbers (T,Z,Y,X or T,Y,X)."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--scale is not valid JSON: {text!r} ({exc})") from None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(
            f"--scale must be JSON like '{{\"T\": 1, \"Y\": 0.1, \"X\": 0.1}}' or numbers 'T,Z,Y,X', got {text!r}"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dask-tracking")
def main() -> None:
    """Track organelles through 3D+t movies with Nellie's method, on Dask."""


@main.command()
@click.argument("source")
@_scale_option
@click.option("--no-markers", is_flag=True, help="Do not count markers per frame (reads no data).")
def info(source: str, scale: str | None, no_markers: bool) -> None:
    """Print arrays, shapes, chunks, dtypes, scale, frames and markers per frame of SOURCE."""
    from .dataset import validate
    from .io.open import open_dataset

    try:
        ds = open_dataset(source, parse_scale(scale))
        click.echo(ds.summary())
        click.echo(f"  frames: {ds.n_frames} of {' x '.join(map(str, ds.spatial_shape))} "
                   f"({ds.axes[1:]})")
        if not no_markers:
            validate(ds, values=True)
            counts = (ds.markers > 0).sum(axis=tuple(range(1, ds.markers.ndim))).compute()
            click.echo(f"  markers per frame: {' '.join(str(int(c)) for c in counts)}")
            click.echo(f"  markers: min {int(counts.min())}, max {int(counts.max())}, "
                       f"total {int(counts.sum())}")
    except (InputError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)


if __name__ == "__main__":  # pragma: no cover
    main()
