"""Model files that are not what they seem, made from the shipped ones: for the start-up
checks of an archive and for models Keras cannot load."""

import json
import zipfile
from pathlib import Path

from dicomnode.registry import shipped_models_dir


def damaged(model: Path) -> None:
    """A shipped model with one byte of its weights changed: a whole zip, a failing CRC."""
    with zipfile.ZipFile(shipped_models_dir() / "srcnn-x1.keras") as archive:
        weights = archive.getinfo("model.weights.h5")
    data = bytearray((shipped_models_dir() / "srcnn-x1.keras").read_bytes())
    middle = weights.header_offset + 30 + len(weights.filename) + weights.compress_size // 2
    data[middle] ^= 0xFF
    model.write_bytes(bytes(data))


def rewritten(model: Path, source: str = "srcnn-x1.keras", **members: bytes) -> None:
    """A shipped model archive with `members` (name: bytes, dots as underscores) replaced."""
    with zipfile.ZipFile(shipped_models_dir() / source) as shipped:
        contents = {name: shipped.read(name) for name in shipped.namelist()}
    contents.update({name.replace("_", "."): data for name, data in members.items()})
    with zipfile.ZipFile(model, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def shipped_config(source: str = "srcnn-x1.keras") -> dict:
    with zipfile.ZipFile(shipped_models_dir() / source) as shipped:
        return json.loads(shipped.read("config.json"))


def another_network(model: Path) -> None:
    """The shipped network with twice the filters in its first layer (a one-off experiment)."""
    config = shipped_config()
    config["config"]["layers"][2]["config"]["filters"] = 128
    rewritten(model, config_json=json.dumps(config).encode())


def foreign(model: Path) -> None:
    """What the archive shows is the 9-1-5's, but its weights are no Keras weights file."""
    rewritten(model, model_weights_h5=b"\x89HDF\r\n\x1a\n" + bytes(1000))
