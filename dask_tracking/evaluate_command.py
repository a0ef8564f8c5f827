"""``dask-tracking evaluate OUT.zarr --truth SPEC``: accuracy of a run against a synthetic truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

__all__ = ["evaluate_command"]


@click.command("evaluate")
@click.argument("output")
@click.option("--truth", required=True, metavar="SPEC",
              help='The synthetic movie: JSON text or a JSON file {"generator": "synthetic_hard", '
                   '"kwargs": {"n_frames": 20, "seed": 0}}, or a store written by write_synthetic_zarr.')
@click.option("--reference-frame", type=int, default=0, show_default=True,
              help="Frame at which label ids are mapped to true objects.")
@click.option("--json", "json_path", default=None, metavar="FILE",
              help="Also write the full report (per-frame lists) as JSON to FILE ('-' for stdout).")
def evaluate_command(output, truth, reference_frame, json_path) -> None:
    """Report flow, label and track accuracy of the run OUTPUT against a synthetic truth."""
    from .dataset import InputError
    from .evaluate import evaluate

    try:
        rep = evaluate(output, truth, reference_frame=reference_frame)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    text = json.dumps(rep.to_dict(), indent=1)
    if json_path == "-":
        click.echo(text)
        return
    click.echo(rep.summary())
    if json_path:
        Path(json_path).write_text(text)
