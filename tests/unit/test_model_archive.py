"""A model file told whole or not from its archive alone (`model_archive`), as `serve` does
before it listens: every damage is a sentence naming it, never an exception."""

import random
import zipfile
from pathlib import Path

import pytest

from dicomnode.model_archive import archive_problem, network_problem
from dicomnode.registry import shipped_models_dir

SHIPPED = shipped_models_dir() / "srcnn-x1.keras"


def _with_method(model: Path, method: int) -> None:
    """The shipped model with the compression method of its weights' central directory entry
    set to `method` (8: deflate, over stored data; 99: one zipfile does not know)."""
    data = bytearray(SHIPPED.read_bytes())
    with zipfile.ZipFile(SHIPPED) as archive:
        names = archive.namelist()
    directory = 0
    for _ in names:  # walk the central directory to the weights' entry
        directory = data.index(b"PK\x01\x02", directory + 1)
        name_length = int.from_bytes(data[directory + 28 : directory + 30], "little")
        if data[directory + 46 : directory + 46 + name_length] == b"model.weights.h5":
            break
    data[directory + 10 : directory + 12] = method.to_bytes(2, "little")
    model.write_bytes(bytes(data))


def test_the_shipped_models_are_whole() -> None:
    for model in shipped_models_dir().glob("*.keras"):
        assert archive_problem(model) is None, model


@pytest.mark.parametrize("method", [8, 99], ids=["deflate over stored data", "unknown"])
def test_a_member_of_another_compression_method_is_named_not_raised(
    tmp_path: Path, method: int
) -> None:
    model = tmp_path / "model.keras"
    _with_method(model, method)
    problem = archive_problem(model)
    assert problem is not None and problem.startswith("is damaged: ")


def test_no_random_damage_escapes_as_an_exception(tmp_path: Path) -> None:
    model, rng = tmp_path / "model.keras", random.Random(13)
    source = SHIPPED.read_bytes()
    for _ in range(200):
        damaged = bytearray(source)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        model.write_bytes(bytes(damaged))
        assert archive_problem(model) is not None  # a sentence, whatever the damage


def test_each_shipped_model_says_its_scale_and_another_scale_is_refused() -> None:
    for model in shipped_models_dir().glob("*.keras"):
        scale = int(model.stem[-1])  # srcnn-ct-x2.keras
        assert archive_problem(model, scale) is None, model
        other = 2 if scale == 1 else 1
        assert archive_problem(model, other) == (
            f"holds a x{scale} model (srcnn_x{scale}), not the x{other} that "
            f"enhance.scale = {other} needs"
        )


@pytest.mark.parametrize(
    ("described", "problem"),
    [
        ([], "is not a model of dicomnode's: its config.json describes no Keras model"),
        ({"config": {"layers": "none"}}, "is not a model of dicomnode's"),
        (
            {"config": {"layers": [1, None, {"class_name": "Conv2D", "config": {"filters": 64}}]}},
            "is not the 9-1-5 SRCNN: expected SRCNN layers ((64, 9), (32, 1), (1, 5)), "
            "found ((64, None),)",
        ),
        (
            {
                "config": {
                    "name": ["srcnn_x1"],
                    "layers": [
                        {"class_name": "Conv2D", "config": c}
                        for c in (
                            {"filters": 64, "kernel_size": 9},
                            {"filters": 32, "kernel_size": [1, 1]},
                            {"filters": 1, "kernel_size": [5, 5]},
                        )
                    ],
                }
            },
            "does not say its scale: its model is named ['srcnn_x1'], not srcnn_x1 ... srcnn_x4",
        ),
    ],
    ids=["a list", "layers not a list", "one layer", "a name that is no text"],
)
def test_a_config_of_any_shape_gets_a_sentence(described: object, problem: str) -> None:
    said = network_problem(described)
    assert said is not None and said.startswith(problem)
