"""The CLI's environment and paths, as an admin meets them: misspelt DICOMNODE_* variables,
`config show` naming overrides and hiding passwords, relative paths, and admin commands that
never make a database where the node has none."""

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from dicomnode.db import open_database
from tests.support.cli import dicomnode


def _config(folder: Path, body: str = '[node]\ndata_dir = "data"\n') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "node.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("DICOMNODE_NOD_PORT", "DICOMNODE_NODE_PORT"),
        ("DICOMNODE_DESTINATION", "DICOMNODE_DESTINATIONS"),
        ("DICOMNODE_NODE_PROT", "DICOMNODE_NODE_PORT"),
    ],
)
def test_a_misspelt_variable_stops_serve_naming_it_and_the_one_meant(
    tmp_path: Path, variable: str, meant: str
) -> None:
    config = _config(tmp_path)
    result = dicomnode("serve", "--config", str(config), env={variable: "11113"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: environment variable {variable}")
    assert f"did you mean {meant}?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    result = dicomnode(
        "jobs", "list", "--config", str(_config(tmp_path)), env={"DICOMNODE_NODE_PORT": "eleven"}
    )
    assert result.returncode == 2
    assert "setting node.port (from DICOMNODE_NODE_PORT): 'eleven' is not a number" in (
        result.stderr
    )


def test_config_show_names_each_override_and_masks_the_password(tmp_path: Path) -> None:
    config = _config(tmp_path)
    env = {
        "DICOMNODE_NODE_PORT": "2104",
        "DICOMNODE_NODE_DATABASE_URL": "postgresql+psycopg://dn:s3cret@db/dn",
        "DICOMNODE_DESTINATIONS": '[{"name": "pacs", "ae_title": "P", "host": "h", "port": 104}]',
    }
    shown = dicomnode("config", "show", "--config", str(config), env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == (
        f"# source: {config} + environment (DICOMNODE_DESTINATIONS, "
        "DICOMNODE_NODE_DATABASE_URL, DICOMNODE_NODE_PORT)"
    )
    assert "port = 2104  # from DICOMNODE_NODE_PORT" in lines
    assert (
        'database_url = "postgresql+psycopg://dn:***@db/dn"  # from DICOMNODE_NODE_DATABASE_URL'
        in (lines)
    )
    assert "[[destinations]]  # from DICOMNODE_DESTINATIONS" in lines
    assert 'ae_title = "DICOMNODE"' in lines  # from the file's defaults: no comment
    assert "s3cret" not in shown.stdout

    as_json = json.loads(dicomnode("config", "show", "--json", "-c", str(config), env=env).stdout)
    assert as_json["overrides"] == {
        "node.port": "DICOMNODE_NODE_PORT",
        "node.database_url": "DICOMNODE_NODE_DATABASE_URL",
        "destinations": "DICOMNODE_DESTINATIONS",
    }
    assert as_json["node"]["database_url"] == "postgresql+psycopg://dn:***@db/dn"


def test_config_show_without_overrides_names_only_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    shown = dicomnode("config", "show", "--config", str(config))
    assert shown.stdout.splitlines()[0] == f"# source: {config}"
    assert "# from" not in shown.stdout
    # Without destinations the listing ends saying so, not with nothing.
    assert shown.stdout.splitlines()[-1] == (
        "# no [[destinations]]: series are kept as `stored` jobs until one is configured"
    )


def test_relative_paths_in_the_file_mean_next_to_it_from_any_folder(tmp_path: Path) -> None:
    config = _config(tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = Path("..") / "site" / "node.toml"  # the issue's `-c ../rel.toml`
    shown = json.loads(
        dicomnode("config", "show", "--json", "-c", str(relative), cwd=elsewhere).stdout
    )
    assert shown["node"]["data_dir"] == str(config.parent / "data")
    assert shown["node"]["database_url"] == f"sqlite:///{config.parent / 'data'}/dicomnode.sqlite"

    from_env = dicomnode(
        "config",
        "show",
        "--json",
        "-c",
        str(config),
        env={"DICOMNODE_NODE_DATA_DIR": "spooldata"},
        cwd=elsewhere,
    )
    assert json.loads(from_env.stdout)["node"]["data_dir"] == str(elsewhere / "spooldata")


READ_ONLY = [
    ("jobs", "list"),
    ("jobs", "list", "--json"),
    ("jobs", "show", "1"),
    ("doctor",),
    ("doctor", "--json"),
    ("purge", "--dry-run"),
    ("config", "show"),
]
WRITING = [("jobs", "retry", "1"), ("jobs", "cancel", "1"), ("purge",), ("doctor", "--repair")]


@pytest.mark.parametrize("command", READ_ONLY + WRITING, ids=" ".join)
def test_admin_commands_never_make_a_database_where_there_is_none(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = _config(tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = dicomnode(*command, "-c", str(Path("..") / "site" / "node.toml"), cwd=elsewhere)
    if command == ("config", "show"):
        assert result.returncode == 0
    else:
        assert result.returncode == 2, result.stdout + result.stderr
        database = config.parent / "data" / "dicomnode.sqlite"
        assert result.stderr.startswith(f"error: no database at {database}: ")
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["elsewhere", "node.toml", "site"]


def test_read_only_commands_refuse_a_database_of_an_older_version(tmp_path: Path) -> None:
    config = _config(tmp_path)
    database = tmp_path / "data" / "dicomnode.sqlite"
    db = open_database(f"sqlite:///{database}")  # as `serve` makes it
    with db.engine.begin() as connection:
        connection.execute(text("ALTER TABLE jobs DROP COLUMN released"))
    db.dispose()
    listing = dicomnode("jobs", "list", "-c", str(config))
    assert listing.returncode == 2
    assert "lacks jobs.released" in listing.stderr and "dicomnode serve" in listing.stderr
    columns = [row[1] for row in _pragma(database, "table_info(jobs)")]
    assert "released" not in columns  # read, not changed


def _pragma(database: Path, pragma: str) -> list[tuple[object, ...]]:
    import sqlite3

    with sqlite3.connect(database) as connection:
        return connection.execute(f"PRAGMA {pragma}").fetchall()
