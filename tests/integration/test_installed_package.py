"""What docker/Dockerfile does, without a container engine: `pip install .` (not editable) of the
files it copies, into a fresh virtualenv outside the checkout; then the installed `dicomnode`
enhances a series with its default model and serves C-ECHO.

Nothing is downloaded: the new environment sees this interpreter's site-packages (the
dependencies, setuptools) through a .pth file, and the package is built without isolation. The
commands run with neither PYTHONPATH nor the checkout as working directory, so only the installed
copy can be imported.
"""

import csv
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from dicomnode.imaging.enhance import PIXEL_REVISION
from dicomnode.imaging.pixels import to_modality
from tests.support.data import MR_T1C, dicom_files
from tests.support.dcmtk import echoscu
from tests.support.dockerfile import copied_sources
from tests.support.node import write_config
from tests.support.ports import free_port, wait_for_port
from tests.support.series import sop_instance_uid

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# not editable, as in the Dockerfile; nothing fetched (the dependencies are already there)
OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir")


@dataclass(frozen=True)
class Installed:
    """A virtualenv holding dicomnode as `pip install .` leaves it, and a place to run it."""

    venv: Path
    workdir: Path  # outside the checkout: no config/, no source tree
    env: dict[str, str]

    @property
    def models(self) -> Path:
        return self.venv / "share" / "dicomnode" / "models"

    def run(
        self, program: str, *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / program), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    assert importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel"), (
        "setuptools and wheel must be installed to build the package offline: "
        "pip install -e '.[test]'"
    )
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # the Docker build context: only what the Dockerfile copies
    for name in copied_sources(REPO / "docker" / "Dockerfile"):
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        and not key.startswith("DICOMNODE_")
    }
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)
    python = str(venv / "bin" / "python")
    new_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    # this interpreter's site-packages, after the new venv's own: dependencies without a download
    ours = sysconfig.get_path("purelib", vars={"base": sys.prefix, "platbase": sys.prefix})
    Path(new_site, "dependencies.pth").write_text(ours + "\n")
    pip = subprocess.run(
        [python, "-m", "pip", "install", *OFFLINE, str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=root,
    )
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    workdir = root / "work"
    workdir.mkdir()
    return Installed(venv, workdir, env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_installed_package_runs_with_the_models_it_installed(installed: Installed) -> None:
    shown = installed.run(
        "python",
        "-c",
        "import dicomnode, dicomnode.registry as r; print(dicomnode.__file__); print(r.MODELS_DIR)",
    )
    assert shown.returncode == 0, shown.stderr
    module, models = shown.stdout.split()
    assert Path(module).is_relative_to(installed.venv)
    assert Path(models) == installed.models.resolve()
    shipped = sorted(p.name for p in (REPO / "models").iterdir())
    assert sorted(p.name for p in installed.models.iterdir()) == shipped
    for name in shipped:
        assert sha256(installed.models / name) == sha256(REPO / "models" / name), name


def test_the_installed_package_declares_and_carries_its_licence(installed: Installed) -> None:
    """Apache-2.0 asks that whoever receives the software receives the licence with it."""
    shown = installed.run(
        "python",
        "-c",
        "import importlib.metadata as m; d = m.distribution('dicomnode');"
        " print(d.metadata['License-Expression']);"
        " print(*(d.locate_file(f) for f in d.files if f.name == 'LICENSE'))",
    )
    assert shown.returncode == 0, shown.stderr
    expression, licences = shown.stdout.splitlines()
    assert expression == "Apache-2.0"
    assert licences, "no LICENSE in the installed distribution: does the Dockerfile copy it?"
    assert Path(licences).read_bytes() == (REPO / "LICENSE").read_bytes()


def test_installed_enhance_writes_a_derived_series_with_the_default_model(
    installed: Installed,
) -> None:
    sources = installed.workdir / "in"
    sources.mkdir()
    for path in dicom_files(MR_T1C):
        shutil.copy2(path, sources / path.name)
    out = installed.workdir / "out"
    result = installed.run("dicomnode", "enhance", str(sources), str(out), "-m", "srcnn")
    assert result.returncode == 0, result.stderr[-2000:]
    written = {p: dcmread(p) for p in out.rglob("*.dcm")}
    images = {p: ds for p, ds in written.items() if ds.Modality == "MR"}
    assert len(images) == 2 and sum(ds.Modality == "SR" for ds in written.values()) == 1
    originals = {sop_instance_uid(p): dcmread(p) for p in sources.iterdir()}
    for ds in images.values():
        source = originals[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert (ds.Rows, ds.Columns) == (source.Rows, source.Columns)
        assert not np.array_equal(ds.pixel_array, source.pixel_array)
        rows, cols = int(ds.Rows), int(ds.Columns)
        roi = (slice(rows // 4, rows * 3 // 4), slice(cols // 4, cols * 3 // 4))
        derived_mean = float(to_modality(ds).values[0][roi].mean())
        source_mean = float(to_modality(source).values[0][roi].mean())
        assert derived_mean == pytest.approx(source_mean, rel=0.05)
    # the MR model the package installed, identified by its hash
    with (out / "metrics.csv").open() as handle:
        versions = {row["version"] for row in csv.DictReader(handle)}
    model = sha256(installed.models / "srcnn-mr-x1.keras")[:12]
    assert versions == {f"srcnn-x1-{model}-r{PIXEL_REVISION}"}


def test_installed_serve_answers_c_echo(installed: Installed) -> None:
    port = free_port()
    config = write_config(
        installed.workdir / "serve.toml",
        {
            "node": {
                "host": "127.0.0.1",
                "port": port,
                "data_dir": str(installed.workdir / "data"),
                "min_free_disk_mb": 1,
            }
        },
        [],
    )
    log_path = installed.workdir / "serve.log"
    # the default enhancement (srcnn for CT, MR, CR, DX): serve refuses to start without the
    # models, so answering at all says it found the installed ones
    with log_path.open("wb") as log:
        node = subprocess.Popen(
            [str(installed.venv / "bin" / "dicomnode"), "serve", "--config", str(config)],
            cwd=installed.workdir,
            env=installed.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, timeout=120)
        except TimeoutError:
            pytest.fail(f"serve never listened: {log_path.read_text()[-2000:]}")
        echo = echoscu(port)
        assert echo.returncode == 0, echo.stdout + echo.stderr + log_path.read_text()
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            code = node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            code = node.wait()
    assert code == 0, log_path.read_text()[-2000:]
