"""`dicomnode config show`: the effective settings, after the file and the environment."""

import json
from typing import Annotated, Any

import typer

from dicomnode.cli.common import ConfigOption, console, settings_from

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # TOML basic strings and arrays of them share JSON's syntax


@app.command("show")
def show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Print the effective configuration (file, then DICOMNODE_* overrides, then defaults)."""
    settings = settings_from(config)
    data = settings.as_dict()
    if as_json:
        print(
            json.dumps(
                {"source": str(settings.source) if settings.source else None, **data}, indent=2
            )
        )
        return
    lines = [f"# source: {settings.source or 'built-in defaults'}"]
    for section, values in data.items():
        if section in ("destinations", "peers"):
            continue
        lines.append(f"\n[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    for table in ("destinations", "peers"):
        for entry in data[table]:
            lines.append(f"\n[[{table}]]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in entry.items()]
    console.print("\n".join(lines), highlight=False, markup=False)
