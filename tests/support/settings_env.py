"""The environment variables the settings read, to check files that set them (Dockerfiles,
compose files) against `dicomnode.config`: the node refuses an unknown DICOMNODE_* variable at
start, so a misspelt one in a container file would stop the container."""

import typing

from dicomnode.config import NOT_SETTING_ENV_VARS, Settings
from dicomnode.config_env import ENV_PREFIX, TABLE_VARS, setting_variable


def setting_variables() -> set[str]:
    """DICOMNODE_CONFIG, DICOMNODE_DESTINATIONS, DICOMNODE_PEERS and DICOMNODE_<SECTION>_<KEY>."""
    sections = {k: v for k, v in Settings().as_dict().items() if isinstance(v, dict)}
    names = {setting_variable(s, key) for s, fields in sections.items() for key in fields}
    return names | set(NOT_SETTING_ENV_VARS) | set(TABLE_VARS.values())


def unknown_setting_variables(names: typing.Iterable[str]) -> list[str]:
    """The DICOMNODE_* names among `names` that no setting reads."""
    known = setting_variables()
    return sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in known)
