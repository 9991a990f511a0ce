"""Reading a Dockerfile's instructions: there is no container engine here, so tests check what
the files say and do what they do (copy the same files, run the same `pip install`)."""

import shlex
from pathlib import Path


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        pending = ""
    return found


def arguments(path: Path, keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction (e.g. "COPY", "RUN")."""
    return [args for kind, args in instructions(path) if kind == keyword]


def environment(path: Path) -> dict[str, str]:
    """The variables its ENV instructions set (KEY=VALUE form), quotes removed."""
    variables: dict[str, str] = {}
    for args in arguments(path, "ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            variables[key] = value
    return variables


def copied_sources(path: Path) -> list[str]:
    """What its COPY instructions take from the build context (not from another stage)."""
    sources: list[str] = []
    for args in arguments(path, "COPY"):
        tokens = shlex.split(args)
        if not any(token.startswith("--from") for token in tokens):
            sources += [token for token in tokens if not token.startswith("--")][:-1]
    return sources
