"""The Dockerfiles, read as data (no container engine here): every setting they set exists, a
mounted config keeps its destinations, the models go into the image, CPU and GPU images agree.

tests/integration/test_installed_package.py does what they do: copy the same files, `pip install`
them (not editable) and run the node from the installed package.
"""

import tomllib
from pathlib import Path

import pytest

from dicomnode.config import HttpSettings, NodeSettings, load_settings
from tests.support.dockerfile import arguments, copied_sources, environment, instructions
from tests.support.settings_env import unknown_setting_variables

REPO = Path(__file__).resolve().parents[2]
CPU = REPO / "docker" / "Dockerfile"
GPU = REPO / "docker" / "Dockerfile.gpu"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=lambda p: p.name)
def test_every_dicomnode_variable_it_sets_is_a_setting(dockerfile: Path) -> None:
    env = environment(dockerfile)
    assert any(name.startswith("DICOMNODE_") for name in env)
    assert unknown_setting_variables(env) == []


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=lambda p: p.name)
def test_a_mounted_config_keeps_its_destinations(
    dockerfile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the image's working directory holds no config/
    env = environment(dockerfile)
    plain = load_settings(environ=env)
    assert plain.destinations == [] and plain.source is None
    assert str(plain.node.data_path) == "/var/lib/dicomnode"
    assert plain.node.host == "0.0.0.0"  # reachable through the published port
    site = tmp_path / "site.toml"
    site.write_text(
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "pacs"\nport = 104\n'
    )
    mounted = load_settings(environ={**env, "DICOMNODE_CONFIG": str(site)})
    assert [(d.name, d.host, d.port) for d in mounted.destinations] == [("pacs", "pacs", 104)]


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=lambda p: p.name)
def test_the_package_is_installed_not_run_from_source_with_its_models(dockerfile: Path) -> None:
    assert {"pyproject.toml", "LICENSE", "dicomnode", "models"} <= set(copied_sources(dockerfile))
    for source in copied_sources(dockerfile):
        assert (REPO / source).exists(), source
    [install] = [run for run in arguments(dockerfile, "RUN") if "pip install" in run]
    assert " -e " not in install and "--editable" not in install
    # the models become part of the installed distribution (registry.shipped_models_dir)
    data_files = PYPROJECT["tool"]["setuptools"]["data-files"]
    assert data_files == {"share/dicomnode/models": ["models/*"]}
    expose = arguments(dockerfile, "EXPOSE")
    assert expose == [f"{NodeSettings().port} {HttpSettings().port}"]  # DICOM, /metrics
    assert arguments(dockerfile, "USER") == ["dicomnode"]


def test_the_gpu_image_is_the_cpu_image_plus_cuda() -> None:
    assert 'pip install --no-cache-dir ".[postgresql]"' in arguments(CPU, "RUN")[-1]
    assert 'pip install --no-cache-dir ".[gpu,postgresql]"' in arguments(GPU, "RUN")[-1]
    gpu_extra = PYPROJECT["project"]["optional-dependencies"]["gpu"]
    assert any(requirement.startswith("tensorflow[and-cuda]") for requirement in gpu_extra)
    # the same files, user, volume, port and command: the variants must not drift apart
    same = ("FROM", "COPY", "USER", "WORKDIR", "VOLUME", "EXPOSE", "CMD")
    for keyword in same:
        assert arguments(CPU, keyword) == arguments(GPU, keyword), keyword
    cpu_env, gpu_env = environment(CPU), environment(GPU)
    assert {k: v for k, v in gpu_env.items() if k.startswith("DICOMNODE_")} == cpu_env
    assert [kind for kind, _ in instructions(CPU)] == [kind for kind, _ in instructions(GPU)]


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=["cpu", "gpu"])
def test_the_images_carry_the_zone_files_that_tz_names(dockerfile: Path) -> None:
    """Without them glibc takes every TZ for UTC, and derived series of a source without
    TimezoneOffsetFromUTC are stamped hours off the modality's times."""
    assert any("install" in run and "tzdata" in run for run in arguments(dockerfile, "RUN"))


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=lambda p: p.name)
def test_the_users_home_is_not_the_data_volume(dockerfile: Path) -> None:
    """Libraries cache in the home (matplotlib, Keras): not among the spool's files."""
    [useradd] = [run for run in arguments(dockerfile, "RUN") if "useradd" in run]
    home = useradd.split("--home-dir", 1)[1].split()[0]
    assert arguments(dockerfile, "VOLUME") == ['["/var/lib/dicomnode"]']
    assert not home.startswith("/var/lib/dicomnode"), home


def test_the_build_context_leaves_out_the_venv_and_received_studies() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)
