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
        nbytes = sum(a.nbytes for a in ds.arrays().values())
        click.echo(f"  size: {nbytes / 1e9:.3f} GB uncompressed (six volumes)")
        if not no_markers:
            validate(ds, values=True)
            counts = (ds.markers > 0).sum(axis=tuple(range(1, ds.markers.ndim))).compute()
            click.echo(f"  markers per frame: {' '.join(str(int(c)) for c in counts)}")
            click.echo(f"  markers: min {int(counts.min())}, max {int(counts.max())}, "
                       f"total {int(counts.sum())}")
    except (InputError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)


# ----------------------------------------------------------------------------- run
def _setup_logging(verbose: int) -> None:
    """dask_tracking's own INFO lines always; -v adds its DEBUG lines, -vv dask's INFO too."""
    import logging

    import distributed  # noqa: F401  (its import sets its loggers' levels: set ours after)

    logging.basicConfig(level=logging.INFO if verbose >= 2 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("dask_tracking").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    if verbose < 2:  # distributed configures its own INFO handler; keep its warnings only
        logging.getLogger("distributed").setLevel(logging.WARNING)


def _cluster_options(f):
    f = click.option("--gpu", is_flag=True, help="Start a dask_cuda.LocalCUDACluster (one worker per GPU).")(f)
    f = click.option("--memory-limit", default=None, metavar="SIZE",
                     help="Memory per local worker, e.g. 4GiB (default: 75% of RAM / workers).")(f)
    f = click.option("--workers", type=int, default=None, metavar="N",
                     help="Local worker processes (default: one per CPU core).")(f)
    f = click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Connect to an existing scheduler (default: $DASK_SCHEDULER_ADDRESS).")(f)
    return f


def _open_cluster(scheduler, workers, memory_limit, gpu, *, announce=True):
    from .cluster import cluster

    session = cluster("gpu" if gpu else "local", n_workers=workers, memory_limit=memory_limit,
                      scheduler=scheduler)
    if announce:
        click.echo(f"cluster: {session.description}", err=True)
        if session.dashboard_link:
            click.echo(f"dashboard: {session.dashboard_link}", err=True)
    return session


def _accuracy_choice(value: str | None):
    """The ``--accuracy`` text as ``run``'s ``accuracy``: None, True, False or names."""
    if value is None:
        return None
    v = value.strip().lower()
    return True if v == "all" else False if v == "none" else value


@main.command("run")
@click.argument("source")
@click.option("-o", "--output", required=True, metavar="OUT.zarr", help="Output zarr store.")
@_scale_option
@_cluster_options
@click.option("--compat", type=click.Choice(["nellie", "fixed"]), default="fixed", show_default=True,
              help="'nellie': Nellie 1.0.4 bit for bit; 'fixed': its bugs fixed.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT.zarr.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.zarr.")
@click.option("--tracks", is_flag=True, help="Also write label tracks (napari rows).")
@click.option("--max-distance-um", type=float, default=1.0, show_default=True,
              help="Flow gate speed in um/s.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--accuracy", default=None, metavar="all|none|NAMES",
              help="Accuracy options of the default mode (all on by default; none with --compat nellie): "
                   "'all', 'none' (the reference method with its bugs fixed) or comma-separated names from "
                   "refine, one_to_one, object_vote, living_tracks.")
@click.option("--window-frames", type=int, default=None, metavar="N",
              help="Frames per graph of the flow and the label chains (>= 2; default: about 2,048 frame-blocks, at least 4 "
                   "frames). Same output for every N; a smaller N holds a smaller graph.")
@click.option("-v", "--verbose", count=True, help="Log what runs (-v info, -vv debug).")
def run_command(source, output, scale, scheduler, workers, memory_limit, gpu, compat, resume, overwrite,
                tracks, max_distance_um, no_progress, accuracy, window_frames, verbose) -> None:
    """Track SOURCE (zarr, OME-Zarr, Nellie folder or raw movie) into OUT.zarr."""
    from .pipeline import open_source, run
    from .dataset import validate
    from .io.output import check_output_path

    _setup_logging(verbose)
    try:
        compat_mode = None if compat == "fixed" else compat
        check_output_path(output, resume=resume, overwrite=overwrite)
        from .accuracy import resolve_accuracy

        try:
            resolve_accuracy(_accuracy_choice(accuracy), compat_mode)
        except InputError as exc:
            raise InputError(f"--accuracy {accuracy!r}: {exc}; on the command line: --accuracy all, "
                             "--accuracy none or comma-separated names") from None
        from .pipeline import window_frames_checked

        try:
            window_frames_checked(window_frames)
        except InputError as exc:
            raise InputError(f"--window-frames: {exc}") from None
        ds = validate(open_source(source, parse_scale(scale), compat=compat_mode))
        with _open_cluster(scheduler, workers, memory_limit, gpu) as session:
            result = run(ds, output, compat=compat_mode, client=session.client, resume=resume,
                         overwrite=overwrite, tracks=tracks, max_distance_um=max_distance_um,
                         progress=not no_progress, gpu=gpu,
                         accuracy=_accuracy_choice(accuracy), window_frames=window_frames)
        click.echo(result.summary())
    except (InputError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        _fail(exc)


# ---------------------------------------------------------------------------- demo
@main.command("demo")
@click.option("-o", "--output", default=None, metavar="DIR",
              help="Folder for demo.zarr and demo.png (default: a new temporary folder).")
@click.option("--ndim", type=click.Choice(["2", "3"]), default="3", show_default=True)
@click.option("--frames", type=int, default=6, show_default=True)
@click.option("--workers", type=int, default=None, metavar="N",
              help="Run on a LocalCluster of N workers (default: dask's threads, quickest).")
@click.option("-v", "--verbose", count=True)
def demo_command(output, ndim, frames, workers, verbose) -> None:
    """Track a built-in synthetic movie; print a summary and write a PNG figure."""
    from .demo import run_demo

    _setup_logging(verbose)
    try:
        if workers:
            with _open_cluster(None, workers, None, False) as session:
                report = run_demo(output, ndim=int(ndim), n_frames=frames, client=session.client)
        else:
            report = run_demo(output, ndim=int(ndim), n_frames=frames)
        click.echo(report.summary())
    except (InputError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)


# -------------------------------------------------------------------------- export
@main.command("export")
@click.argument("store")
@click.option("--to", "fmt", type=click.Choice(["nellie", "ctc", "napari", "geff"]), required=True,
              help="Target format.")
@click.argument("directory")
@click.option("--overwrite", is_flag=True, help="Replace files already in DIRECTORY.")
def export_command(store, fmt, directory, overwrite) -> None:
    """Export a run's output STORE to DIRECTORY as nellie, ctc, napari or geff files."""
    from .io.output import export

    try:
        paths = export(store, fmt, directory, overwrite=overwrite)
        for p in paths:
            click.echo(str(p))
    except (InputError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)


from .prepare.command import prepare_command  # noqa: E402

main.add_command(prepare_command, "prepare")

from .evaluate_command import evaluate_command  # noqa: E402

main.add_command(evaluate_command, "evaluate")


if __name__ == "__main__":  # pragma: no cover
    main()
