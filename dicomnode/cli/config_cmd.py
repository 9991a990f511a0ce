"""`dicomnode config show`: the effective settings, after the file and the environment."""

import json
from typing import Any

import typer

from dicomnode.cli.common import (
    ConfigOption,
    JsonOption,
    console,
    print_json,
    reported_errors,
    settings_from,
)
from dicomnode.config import Settings
from dicomnode.startup_checks import check_files

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # TOML basic strings and arrays of them share JSON's syntax


def _source_line(settings: Settings) -> str:
    source = str(settings.source) if settings.source else "built-in defaults"
    variables = sorted(set(settings.overrides.values()))
    if variables:
        source += f" + environment ({', '.join(variables)})"
    return f"# source: {source}"


def _from(variable: str | None) -> str:
    """The comment that says which environment variable set a value (none: file or default)."""
    return f"  # from {variable}" if variable else ""


@app.command("show")
def show(
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the effective configuration (built-in defaults, the file over them, DICOMNODE_*
    variables over both) and check it as `serve` would.

    Each value an environment variable set says which one; database passwords show as ***.
    Exit 2 for a setting `serve` would refuse: a wrong key or value, a model file the methods
    lack, a TLS file that is not what its setting says (the settings are printed first).
    """
    settings = settings_from(config)
    _print(settings, as_json)
    worker = settings.worker
    with reported_errors():  # as `serve` would: its runners forward (`Node._planned_runners`)
        check_files(settings, listener=True, forwarding=worker.router or worker.workers > 0)


def _print(settings: Settings, as_json: bool) -> None:
    data = settings.as_dict()
    if as_json:
        source = str(settings.source) if settings.source else None
        print_json({"source": source, "overrides": settings.overrides, **data})
        return
    lines = [_source_line(settings)]
    for section, values in data.items():
        if section in ("destinations", "peers"):
            continue
        lines.append(f"\n[{section}]")
        lines += [
            f"{key} = {_toml_value(value)}" + _from(settings.overrides.get(f"{section}.{key}"))
            for key, value in values.items()
        ]
    if not data["destinations"]:
        kept = (
            "received and kept, their jobs done (node.receive_only)"
            if settings.node.receive_only
            else "kept as `stored` jobs until one is configured"
        )
        lines.append(f"\n# no [[destinations]]: series are {kept}")
    for table in ("destinations", "peers"):
        for entry in data[table]:
            lines.append(f"\n[[{table}]]" + _from(settings.overrides.get(table)))
            lines += [f"{key} = {_toml_value(value)}" for key, value in entry.items()]
    console.print("\n".join(lines), highlight=False, markup=False)
