"""DICOMNODE_* variables: unknown ones refused by name, errors in values name the variable, and
relative paths in a settings file read against the file's folder."""

import re
from pathlib import Path

import pytest

from dicomnode.config import load_settings
from dicomnode.errors import ConfigError


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("DICOMNODE_NOD_PORT", "did you mean DICOMNODE_NODE_PORT?"),
        ("DICOMNODE_DESTINATION", "did you mean DICOMNODE_DESTINATIONS?"),
        ("DICOMNODE_NODE_PROT", "node.prot is not a setting; did you mean DICOMNODE_NODE_PORT?"),
        ("DICOMNODE_RETRY_BACKOFF", "known in [retry]: initial_delay_seconds, jitter"),
        ("DICOMNODE_COLOUR", "settings are DICOMNODE_<SECTION>_<KEY>"),
    ],
)
def test_an_unknown_variable_is_refused_by_name_with_the_likely_one(
    variable: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ={variable: "1"})
    assert str(raised.value).startswith(f"environment variable {variable}")
    assert message in str(raised.value)


def test_the_refusal_never_shows_the_value_of_the_variable() -> None:
    secret = "postgresql+psycopg://dn:s3cret@db/dn"
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ={"DICOMNODE_NODE_DATABASE_ULR": secret})
    assert "s3cret" not in str(raised.value)
    assert "did you mean DICOMNODE_NODE_DATABASE_URL?" in str(raised.value)


def test_variables_that_are_not_settings_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[node]\nport = 104\n")
    environ = {"DICOMNODE_CONFIG": str(path), "DICOMNODE_TEST_SLOW_SECONDS": "3", "HOME": "/x"}
    settings = load_settings(None, environ=environ)
    assert settings.node.port == 104 and settings.overrides == {}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"DICOMNODE_NODE_PORT": "eleven"},
            "setting node.port (from DICOMNODE_NODE_PORT): 'eleven'",
        ),
        ({"DICOMNODE_NODE_PORT": "70000"}, "setting node.port (from DICOMNODE_NODE_PORT): 70000"),
        (
            {"DICOMNODE_ENHANCE_QA_ACTION": "ignore"},
            "setting enhance.qa_action (from DICOMNODE_ENHANCE_QA_ACTION): 'ignore'",
        ),
        (
            {"DICOMNODE_DESTINATIONS": '[{"name": "p", "ae_title": "P", "host": "h", "port": 0}]'},
            "setting destinations[0].port (from DICOMNODE_DESTINATIONS): 0 is not a TCP port",
        ),
    ],
)
def test_a_bad_value_from_the_environment_names_its_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, environ=environ)


def test_a_variable_that_is_no_json_is_blamed_not_the_file(tmp_path: Path) -> None:
    """It was "config file X: setting DICOMNODE_DESTINATIONS: ...": the admin edited the file."""
    path = tmp_path / "node.toml"
    path.write_text("[node]\nport = 11112\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={"DICOMNODE_DESTINATIONS": "not json"})
    said = str(raised.value)
    assert said.startswith("setting destinations (from DICOMNODE_DESTINATIONS): not valid JSON")
    assert str(path) not in said


def test_a_bad_value_from_the_file_names_the_file_not_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[node]\nport = 70000\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={"DICOMNODE_NODE_AE_TITLE": "X"})
    message = str(raised.value)
    assert message.startswith(f"config file {path}: setting node.port: 70000")
    assert "DICOMNODE_" not in message
    assert raised.value.setting == "node.port"


def test_settings_remember_which_variable_set_which_key() -> None:
    settings = load_settings(
        None,
        environ={
            "DICOMNODE_NODE_PORT": "2104",
            "DICOMNODE_DESTINATIONS": "[]",
            "DICOMNODE_RETRY_MAX_ATTEMPTS": "3",
        },
    )
    assert settings.overrides == {
        "node.port": "DICOMNODE_NODE_PORT",
        "retry.max_attempts": "DICOMNODE_RETRY_MAX_ATTEMPTS",
        "destinations": "DICOMNODE_DESTINATIONS",
    }


def test_relative_paths_in_the_file_are_read_against_its_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "tls").mkdir(parents=True)
    for name in ("node.pem", "node.key", "pacs-ca.pem"):
        (site / "tls" / name).write_text("checked for existence only here")
    path = site / "node.toml"
    path.write_text(
        '[node]\ndata_dir = "data"\ndatabase_url = "sqlite:///db/jobs.sqlite"\n'
        'tls_certificate = "tls/node.pem"\ntls_private_key = "tls/node.key"\n'
        '[enhance]\nmodel_dir = "../models"\n'
        '[[destinations]]\nname = "pacs"\nae_title = "P"\nhost = "h"\nport = 104\ntls = true\n'
        'tls_ca_certificates = "tls/pacs-ca.pem"\n'
    )
    settings = load_settings(path, environ={})
    assert settings.node.data_path == site / "data"
    assert settings.node.effective_database_url == f"sqlite:///{site}/db/jobs.sqlite"
    assert settings.node.tls_certificate == str(site / "tls" / "node.pem")
    assert settings.node.tls_private_key == str(site / "tls" / "node.key")
    assert settings.enhance.model_dir == str(site / "../models")
    assert settings.destinations[0].tls_ca_certificates == str(site / "tls" / "pacs-ca.pem")


def test_absolute_and_empty_paths_and_other_databases_stay_as_written(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\ndata_dir = "/srv/dicomnode"\n'
        'database_url = "postgresql+psycopg://dn@db/dn"\ntls_ca_certificates = ""\n'
    )
    node = load_settings(path, environ={}).node
    assert node.data_dir == "/srv/dicomnode"
    assert node.database_url == "postgresql+psycopg://dn@db/dn"
    assert node.tls_ca_certificates == ""


def test_relative_paths_from_the_environment_are_read_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "site" / "node.toml"
    path.parent.mkdir()
    path.write_text('[node]\ndata_dir = "data"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(path, environ={"DICOMNODE_NODE_DATA_DIR": "spooldata"})
    assert settings.node.data_path == elsewhere / "spooldata"
