"""Whether a model file is a whole `.keras` archive, told without TensorFlow.

A node loads its models after it listens (TensorFlow takes seconds to import, which the
receiver must not wait for). A copy truncated by a full disk, or damaged on the way, would
then stop a node that had already accepted associations, and a service manager would restart
it into the same failure. What the archive itself shows (the zip's directory, each member's
CRC, the members Keras writes) is read here, in milliseconds, so that such a file is refused
before the node listens, as a missing one is. What only Keras can tell (weights that do not
fit, another network) is still found when the model is loaded.
"""

import json
import zipfile
import zlib
from pathlib import Path

# What `keras.Model.save` writes into a `.keras` file (Keras 3).
_MEMBERS = ("config.json", "model.weights.h5")


def archive_problem(path: Path) -> str | None:
    """Why `path` is not a whole `.keras` archive, as the end of a sentence naming it; None
    when it is one."""
    if not path.is_file():
        return "does not exist"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()  # reads every member: a few hundred KB
            config = archive.read("config.json") if "config.json" in names else b""
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
        json.loads(config)
    except ValueError:
        return "is damaged: its config.json is not JSON (copy it again)"
    return None
