"""Settings: defaults, the TOML file, DICOMNODE_* overrides, and errors that name the key."""

import re
from pathlib import Path

import pytest

from dicomnode.config import load_settings
from dicomnode.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_documented_default_file_loads_with_the_keys_the_issue_names() -> None:
    settings = load_settings(REPO / "config" / "dicomnode.toml", environ={})
    assert settings.node.ae_title == "DICOMNODE"
    assert settings.node.port == 11112
    assert settings.node.allowed_calling_aets == []
    assert settings.completion.series_quiet_seconds == 30
    assert [d.name for d in settings.destinations] == ["pacs"]
    assert settings.destinations[0].port == 4242


def test_documented_file_states_the_built_in_defaults() -> None:
    documented = load_settings(REPO / "config" / "dicomnode.toml", environ={}).as_dict()
    built_in = load_settings(None, environ={}).as_dict()
    documented.pop("destinations")
    built_in.pop("destinations")
    assert documented == built_in


def test_empty_database_url_means_sqlite_inside_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    settings = load_settings(path, environ={})
    assert settings.node.effective_database_url == f"sqlite:///{tmp_path / 'data'}/dicomnode.sqlite"


def test_environment_overrides_single_keys_with_typed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "[node]\nport = 104\n")
    settings = load_settings(
        path,
        environ={
            "DICOMNODE_NODE_PORT": "11113",
            "DICOMNODE_NODE_ALLOWED_CALLING_AETS": "CT1, MR2",
            "DICOMNODE_COMPLETION_SERIES_QUIET_SECONDS": "2.5",
            "DICOMNODE_DESTINATIONS": '[{"name": "a", "ae_title": "A", "host": "h", "port": 1}]',
        },
    )
    assert settings.node.port == 11113
    assert settings.node.allowed_calling_aets == ["CT1", "MR2"]
    assert settings.completion.series_quiet_seconds == 2.5
    assert settings.destinations[0].ae_title == "A"


def test_config_env_var_selects_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nae_title = "FROMENV"\n')
    assert load_settings(None, environ={"DICOMNODE_CONFIG": str(path)}).node.ae_title == "FROMENV"


@pytest.mark.parametrize(
    ("text", "environ", "named"),
    [
        ("[node]\nprot = 1\n", {}, "node.prot"),
        ("[nodes]\nport = 1\n", {}, "nodes"),
        ("[node]\nport = 70000\n", {}, "node.port"),
        ('[node]\nae_title = "MUCH_TOO_LONG_AE_TITLE"\n', {}, "node.ae_title"),
        ('[node]\non_duplicate = "merge"\n', {}, "node.on_duplicate"),
        ("[completion]\nseries_quiet_seconds = 0\n", {}, "completion.series_quiet_seconds"),
        ("", {"DICOMNODE_WORKER_WORKERS": "two"}, "worker.workers"),
        ("", {"DICOMNODE_RETRY_BACKOFF": "1"}, "retry.backoff"),
        ('[baseline]\ndenoise = "median"\n', {}, "baseline.denoise"),
        ("[baseline]\nunsharp_sigma = 0\n", {}, "baseline.unsharp_sigma"),
        ("[qa]\nnoise_ratio_fail = 1.0\n", {}, "qa.noise_ratio_fail"),
        ('[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\n', {}, "destinations[0]"),
        (
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 1\n'
            '[[destinations]]\nname = "p"\nae_title = "Q"\nhost = "h"\nport = 2\n',
            {},
            "destinations",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(write(tmp_path, text), environ=environ)


def test_missing_explicit_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})
