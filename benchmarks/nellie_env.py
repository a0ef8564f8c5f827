"""Create the Nellie 1.0.4 virtual environment used by the side-by-side benchmarks.

One command, idempotent::

    python benchmarks/nellie_env.py

It creates ``benchmarks/work/nellie-venv`` and installs ``nellie==1.0.4`` from PyPI
**without** its GUI dependencies (napari, Qt): ``pip install --no-deps nellie==1.0.4``
and then only what Nellie's tracking modules and ``nellie.im_info.verifier`` import.
The numerical libraries are pinned to the versions of this project's environment so
that both sides compute with the same numpy/scipy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

WORK = Path(__file__).resolve().parent / "work"
VENV = WORK / "nellie-venv"
NELLIE = "nellie==1.0.4"
#: What nellie.tracking.{hu_tracking, voxel_reassignment, all_tracks_for_label} and
#: nellie.im_info.verifier import (found by importing them in an empty venv).
CORE = ("numpy", "scipy", "scikit-image", "tifffile", "ome-types", "nd2", "imagecodecs", "psutil")
#: Pinned to the version installed here, so both sides use the same numerics.
PIN_LIKE_HERE = ("numpy", "scipy", "scikit-image", "tifffile", "ome-types")
CHECK = ("import nellie.tracking.hu_tracking, nellie.tracking.voxel_reassignment, "
         "nellie.tracking.all_tracks_for_label, nellie.im_info.verifier; "
         "import nellie, numpy, scipy; print(nellie.device_type, numpy.__version__, scipy.__version__)")


def python() -> Path:
    """The venv's interpreter."""
    return VENV / "bin" / "python"


def _requirements() -> list[str]:
    out = []
    for name in CORE:
        if name in PIN_LIKE_HERE:
            try:
                out.append(f"{name}=={metadata.version(name)}")
                continue
            except metadata.PackageNotFoundError:
                pass
        out.append(name)
    return out


def is_ready() -> bool:
    """True if the venv exists and imports Nellie's tracking modules."""
    if not python().exists():
        return False
    r = subprocess.run([str(python()), "-c", CHECK], capture_output=True, text=True)
    return r.returncode == 0


def ensure(*, force: bool = False, quiet: bool = True) -> Path:
    """Create and fill the venv if needed; return its python."""
    if is_ready() and not force:
        return python()
    WORK.mkdir(parents=True, exist_ok=True)
    if not python().exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    pip = [str(python()), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run(pip + ["--no-deps", NELLIE], check=True)
    subprocess.run(pip + _requirements(), check=True)
    r = subprocess.run([str(python()), "-c", CHECK], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"Nellie venv does not import its tracking modules:\n{r.stderr}")
    return python()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--force", action="store_true", help="reinstall even if the venv works")
    a = p.parse_args(argv)
    py = ensure(force=a.force)
    r = subprocess.run([str(py), "-c", CHECK], capture_output=True, text=True, check=True)
    print(f"{py}: nellie 1.0.4 ready (device, numpy, scipy: {r.stdout.strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
