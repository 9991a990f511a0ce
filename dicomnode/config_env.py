"""`DICOMNODE_<SECTION>_<KEY>` environment overrides: read, checked and remembered by variable.

Part of the settings layer (only `config.py` calls it). A misspelt variable would otherwise be
ignored in silence while the node runs on the file's value, so every `DICOMNODE_*` variable must
name a setting or be one of the few that are not settings; the error names the variable and,
where one is close, the one that was probably meant. Which variable set which key is kept, so
errors in a value and `dicomnode config show` can name it.
"""

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from dicomnode.errors import ConfigError

ENV_PREFIX = "DICOMNODE_"
DESTINATIONS_VAR = "DICOMNODE_DESTINATIONS"  # the whole [[destinations]] list, as JSON
PEERS_VAR = "DICOMNODE_PEERS"  # the whole [[peers]] list, as JSON
TABLE_VARS = {"destinations": DESTINATIONS_VAR, "peers": PEERS_VAR}  # array-of-tables settings


@dataclass(frozen=True)
class EnvOverrides:
    """The overrides found in one environment."""

    sections: dict[str, dict[str, str]] = field(default_factory=dict)  # section -> key -> value
    variables: dict[str, str] = field(default_factory=dict)  # "node.port" -> its variable
    tables: dict[str, str] = field(default_factory=dict)  # "destinations" -> its JSON text


def setting_variable(section: str, key: str) -> str:
    """The variable that overrides `section.key`: `DICOMNODE_NODE_PORT` for node.port."""
    return f"{ENV_PREFIX}{section}_{key}".upper()


def _closest(name: str, candidates: Iterable[str]) -> str | None:
    # Compared without the shared prefix, which would make every pair look alike.
    tails = {c[len(ENV_PREFIX) :]: c for c in candidates}
    match = difflib.get_close_matches(name[len(ENV_PREFIX) :], list(tails), n=1, cutoff=0.75)
    return tails[match[0]] if match else None


def _unknown_variable(
    name: str, section: str | None, known: list[str], all_names: list[str]
) -> str:
    suggestion = _closest(name, all_names)
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    if section is not None:
        key = name[len(ENV_PREFIX) + len(section) + 1 :].lower()
        listing = "" if suggestion else f" (known in [{section}]: {', '.join(known)})"
        return f"environment variable {name}: {section}.{key} is not a setting{listing}{hint}"
    return (
        f"environment variable {name} is not a setting{hint} (settings are "
        f"DICOMNODE_<SECTION>_<KEY>, {DESTINATIONS_VAR} and {PEERS_VAR}; unset it or fix its name)"
    )


def read_env_overrides(
    environ: Mapping[str, str],
    sections: Mapping[str, type],
    not_settings: Iterable[str],
    reserved_prefixes: Iterable[str] = (),
) -> EnvOverrides:
    """Every `DICOMNODE_*` variable of `environ`, sorted by section; ConfigError naming the first
    one that is neither a setting of `sections` (dataclasses), nor in `not_settings`, nor under
    one of `reserved_prefixes`."""
    others = {name.upper() for name in not_settings}
    reserved = tuple(prefix.upper() for prefix in reserved_prefixes)
    keys = {name: sorted(f.name for f in fields(cls)) for name, cls in sections.items()}
    all_names = [setting_variable(s, k) for s, ks in keys.items() for k in ks]
    all_names += [*TABLE_VARS.values(), *others]
    table_of = {variable: table for table, variable in TABLE_VARS.items()}
    found = EnvOverrides()
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in others or upper.startswith(reserved):
            continue
        if upper in table_of:
            found.tables[table_of[upper]] = environ[name]
            continue
        rest = upper[len(ENV_PREFIX) :]
        section = next((s for s in sections if rest.startswith(s.upper() + "_")), None)
        key = rest[len(section) + 1 :].lower() if section else ""
        if section is None or key not in keys[section]:
            known = keys[section] if section else []
            raise ConfigError(_unknown_variable(name, section, known, all_names))
        found.sections.setdefault(section, {})[key] = environ[name]
        found.variables[f"{section}.{key}"] = name
    return found


def naming_the_variable(error: ConfigError, variables: Mapping[str, str]) -> ConfigError:
    """`error` about a setting the environment set, with the variable named beside the key:
    `setting node.port (from DICOMNODE_NODE_PORT): 'eleven' is not a number`."""
    if error.setting is None:
        return error
    # destinations[0].port: DICOMNODE_DESTINATIONS holds the whole list (peers likewise).
    variable = variables.get(error.setting) or variables.get(error.setting.split("[")[0])
    if variable is None:
        return error
    prefix = f"setting {error.setting}:"
    message = str(error)
    if message.startswith(prefix):
        message = f"setting {error.setting} (from {variable}):{message[len(prefix) :]}"
    else:
        message = f"{message} (from {variable})"
    return ConfigError(message, setting=error.setting)
