"""The environment variables the settings read, to check files that set them (Dockerfiles,
compose files) against `dicomnode.config`: a misspelt section is otherwise silently ignored."""

import dataclasses
import typing

from dicomnode.config import CONFIG_ENV_VAR, ENV_PREFIX, Settings


def setting_variables() -> set[str]:
    """DICOMNODE_CONFIG, DICOMNODE_DESTINATIONS and DICOMNODE_<SECTION>_<KEY> for every key."""
    hints = typing.get_type_hints(Settings)
    names = {CONFIG_ENV_VAR, f"{ENV_PREFIX}DESTINATIONS"}
    for section in dataclasses.fields(Settings):
        kind = hints[section.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            names |= {
                f"{ENV_PREFIX}{section.name}_{key.name}".upper() for key in dataclasses.fields(kind)
            }
    return names


def unknown_setting_variables(names: typing.Iterable[str]) -> list[str]:
    """The DICOMNODE_* names among `names` that no setting reads."""
    known = setting_variables()
    return sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in known)
