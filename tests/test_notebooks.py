"""The notebooks in ``notebooks/`` run top to bottom (small mode) and write their figures.

Each notebook is executed with nbclient on the ``python3`` kernel in a temporary working
folder, with ``DASK_TRACKING_NOTEBOOK_SMALL=1`` and ``DASK_TRACKING_NOTEBOOK_OUT`` pointing
into ``tmp_path``. A cell error fails the test (nbclient raises ``CellExecutionError``);
then the PNG figures are checked to be real, non-blank images and the ``metrics.json`` each
notebook writes is checked for plausible numbers.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path

import pytest


nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
# as tests/conftest.py: ../shared/data beside the checkout; DASK_TRACKING_SHARED_DATA overrides
SHARED_DATA = Path(os.environ.get("DASK_TRACKING_SHARED_DATA", ROOT.parent / "shared" / "data"))
YEAST = SHARED_DATA / "nellie_yeast.zarr"
NOTEBOOKS = ROOT / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Seconds one notebook may take in small mode (all three together: < 5 minutes on 2 cores).
CELL_TIMEOUT = 240


def execute(name: str, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Path, object]:
    """Execute ``notebooks/<name>`` in ``tmp_path``; return its output folder and the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    out_root = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    # a "python3" kernel spec for this interpreter, first on JUPYTER_PATH: a stale user kernel spec
    # (one that names a deleted environment) must not decide which Python runs the notebook
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    settings = {
        "JUPYTER_PATH": os.pathsep.join([str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH", "")]),
        "DASK_TRACKING_NOTEBOOK_SMALL": "1",
        "DASK_TRACKING_NOTEBOOK_OUT": str(out_root),
        "DASK_TRACKING_SHARED_DATA": str(SHARED_DATA),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    settings.update(env or {})
    unset = ("DASK_SCHEDULER_ADDRESS", "DASK_TRACKING_NELLIE_SOURCE")  # the notebooks start their own cluster
    saved = {k: os.environ.get(k) for k in (*settings, *unset)}
    os.environ.update(settings)  # the kernel inherits this process's environment
    for k in unset:
        os.environ.pop(k, None)
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        start = time.perf_counter()
        client.execute()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out_root / Path(name).stem, nb


def check_png(path: Path) -> None:
    """``path`` is a PNG of a sensible size whose pixels are not all one colour."""
    assert path.is_file(), f"{path.name} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 200 and height >= 150, f"{path.name} is only {width} x {height}"
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(path)[..., :3]
    assert float(np.ptp(pixels)) > 0.2, f"{path.name} is blank"
    # more than empty axes (about 3% of the pixels are ink there) and some colour (data drawn:
    # every figure of the notebooks draws its data in colour)
    background = pixels[0, 0]
    ink = np.mean(np.any(np.abs(pixels - background) > 0.05, axis=-1))
    colour = np.mean(np.ptp(pixels, axis=-1) > 0.2)
    assert ink > 0.04 and colour > 0.002, f"{path.name} is nearly empty ({ink:.3f} ink, {colour:.4f} colour)"


def no_errors(nb) -> None:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"cell errored: {output.get('ename')}"


def test_build_script_matches_notebooks():
    """The committed notebooks are exactly what ``notebooks/_build.py`` writes, with no outputs."""
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import _build
    finally:
        sys.path.remove(str(NOTEBOOKS))
    for name in _build.NOTEBOOKS:
        on_disk = nbformat.read(NOTEBOOKS / name, as_version=4)
        built = _build.build(name)
        assert [c.source for c in on_disk.cells] == [c.source for c in built.cells], (
            f"{name} differs from notebooks/_build.py: run python notebooks/_build.py")
        assert all(not c.get("outputs") for c in on_disk.cells if c.cell_type == "code")
        tagged = [c for c in on_disk.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "DASK_TRACKING_NOTEBOOK_SMALL" in tagged[0].source
        assert (NOTEBOOKS / name).stat().st_size < 1_000_000


def test_quickstart(tmp_path):
    out, nb = execute("01-quickstart.ipynb", tmp_path)
    no_errors(nb)
    for png in ("flow-vectors.png", "tracks.png", "labels-through-time.png", "accuracy.png"):
        check_png(out / png)
    m = json.loads((out / "metrics.json").read_text())
    assert m["flow_rows"] > 0
    # markers are re-detected per frame: a flow vector is about a voxel or two off the truth
    assert m["flow_median_error_voxels"] < 3
    # the tracks follow the motion: closer to where the seeds truly went than staying put
    assert m["track_median_error_last_frame_voxels"] < m["track_median_true_travel_last_frame_voxels"]
    assert m["label_accuracy"] > 0.9
    assert min(m["labelled_share_per_frame"]) > 0.5
    assert (out / "quickstart.zarr" / "zarr.json").is_file()
    # the dashboard link was printed
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "dashboard: http" in text


def test_nellie_yeast(tmp_path):
    if not (YEAST / "zarr.json").exists():
        pytest.skip(f"the Nellie yeast sample is not at {YEAST} (set DASK_TRACKING_SHARED_DATA)")
    out, nb = execute("02-nellie-yeast.ipynb", tmp_path)
    no_errors(nb)
    for png in ("compat-vs-default.png", "flow-vectors.png", "labels-through-time.png", "ctc-tracks.png"):
        check_png(out / png)
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames"] == 4
    assert len(m["parity"]) == 4 and all(m["parity"].values()), m["parity"]
    assert 0 < m["flow_rows_default"] <= m["flow_rows_compat"]
    assert m["ctc_tracks"] > 0 and m["napari_rows"] > 0
    assert (out / "napari" / "tracks.npz").stat().st_size > 0
    assert (out / "ctc" / "res_track.txt").stat().st_size > 0
    assert sorted(p.name for p in (out / "ctc").glob("mask*.tif")) == [f"mask{t:03d}.tif" for t in range(4)]


def test_scaling(tmp_path):
    out, nb = execute("03-scaling.ipynb", tmp_path)
    no_errors(nb)
    check_png(out / "memory-and-tasks.png")
    report = out / "performance-report.html"
    assert report.is_file() and report.stat().st_size > 10_000
    assert "bokeh" in report.read_text(errors="replace").lower()
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_computed"] == m["frames"] == 5
    assert m["resumed_frames_computed"] == 0
    assert m["flow_rows"] > 0 and m["tasks"] > 0 and m["peak_cluster_memory_bytes"] > 0
