"""Whether a model file is a whole `.keras` archive, told without TensorFlow.

A node loads its models after it listens (TensorFlow takes seconds to import, which the
receiver must not wait for). A copy truncated by a full disk, or damaged on the way, would
then stop a node that had already accepted associations, and a service manager would restart
it into the same failure. What the archive itself shows (the zip's directory, each member's
CRC, the members Keras writes, the network its config.json describes and the scale its name
says) is read here, in milliseconds, so that such a file is refused before the node listens, as
a missing one is. What only Keras can tell (weights that do not fit the network) is still
found when the model is loaded.
"""

import json
import re
import zipfile
import zlib
from pathlib import Path

# What `keras.Model.save` writes into a `.keras` file (Keras 3).
_MEMBERS = ("config.json", "model.weights.h5")
# The network `dicomnode train` writes (`imaging/srcnn.build_srcnn`): its Conv2D layers as
# (filters, kernel size), first to last, and its name, which says the scale it was trained for.
LAYERS = ((64, 9), (32, 1), (1, 5))
SCALE_NAME = re.compile(r"srcnn_x([1-4])")
# The weights' file begins with it (Keras writes no user block before it).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def archive_problem(path: Path, scale: int | None = None) -> str | None:
    """Why `path` is not a whole `.keras` archive of the 9-1-5 SRCNN (for `scale`, when given),
    as the end of a sentence naming it; None when it is one."""
    if not path.is_file():
        return "does not exist"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()  # reads every member: a few hundred KB
            config = archive.read("config.json") if "config.json" in names else b""
            weights = b""
            if "model.weights.h5" in names:
                with archive.open("model.weights.h5") as member:
                    weights = member.read(len(_HDF5_SIGNATURE))
    except (zipfile.BadZipFile, EOFError):
        return "is not a .keras model archive (truncated or damaged copy?)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except (zlib.error, NotImplementedError, ValueError, RuntimeError) as exc:
        # A member's data or header damaged: another compression method, a broken stream.
        return f"is damaged: {type(exc).__name__}: {exc} (copy it again)"
    if damaged is not None:
        return f"is damaged: its member {damaged} fails its checksum (copy it again)"
    absent = [name for name in _MEMBERS if name not in names]
    if absent:
        return f"is not a Keras 3 model archive: it lacks {', '.join(absent)}"
    try:
        described = json.loads(config)
    except ValueError:
        return "is damaged: its config.json is not JSON (copy it again)"
    if weights != _HDF5_SIGNATURE:
        return "is not a Keras 3 model archive: its model.weights.h5 is no HDF5 file"
    return network_problem(described, scale)


def network_problem(described: object, scale: int | None = None) -> str | None:
    """Why a `.keras` archive's config.json (`described`) is not the 9-1-5 SRCNN for `scale`
    (any scale when None); None when it is."""
    model = described.get("config") if isinstance(described, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("layers"), list):
        return "is not a model of dicomnode's: its config.json describes no Keras model"
    convs = tuple(
        (layer["config"].get("filters"), _kernel(layer["config"].get("kernel_size")))
        for layer in model["layers"]
        if isinstance(layer, dict)
        and layer.get("class_name") == "Conv2D"
        and isinstance(layer.get("config"), dict)
    )
    if convs != LAYERS:
        return f"is not the 9-1-5 SRCNN: expected SRCNN layers {LAYERS}, found {convs}"
    name = model.get("name")
    match = SCALE_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        return f"does not say its scale: its model is named {name!r}, not srcnn_x1 ... srcnn_x4"
    if scale is not None and int(match.group(1)) != scale:
        return scale_problem(int(match.group(1)), scale, match.group(0))
    return None


def scale_problem(found: int, wanted: int, name: str = "") -> str:
    """A model (`name`d) of scale `found` where `enhance.scale` is `wanted`: the end of a
    sentence naming the file (a method's output grid is its model's)."""
    named = f" ({name})" if name else ""
    return f"holds a x{found} model{named}, not the x{wanted} that enhance.scale = {wanted} needs"


def _kernel(size: object) -> object:
    """A Conv2D's kernel size as one number (Keras writes [9, 9])."""
    return size[0] if isinstance(size, list | tuple) and size else size
