"""The method registry: one place that knows each method, its codes and its model files."""

from pathlib import Path

import pytest

from dicomnode.config import EnhanceSettings, Settings
from dicomnode.errors import ConfigError
from dicomnode.pipeline.methods import configured_methods, load_models
from dicomnode.registry import BASELINE, METHODS, MODELS_DIR, SRCNN, MethodSpec, register


def test_a_modality_uses_its_own_model_and_falls_back_to_the_general_one(tmp_path: Path) -> None:
    enhance = EnhanceSettings(model_dir=str(tmp_path), scale=1)
    (tmp_path / "srcnn-x1.keras").touch()
    (tmp_path / "srcnn-ct-x1.keras").touch()
    assert SRCNN.model_for(enhance, "CT") == tmp_path / "srcnn-ct-x1.keras"
    assert SRCNN.model_for(enhance, "MR") == tmp_path / "srcnn-x1.keras"  # none of its own
    assert SRCNN.model_for(enhance, "") == tmp_path / "srcnn-x1.keras"
    assert SRCNN.model_file(enhance, 2, "MR") == tmp_path / "srcnn-mr-x2.keras"


def test_the_shipped_models_include_ct_and_mr_restoration() -> None:
    enhance = EnhanceSettings()
    assert SRCNN.model_for(enhance, "CT") == MODELS_DIR / "srcnn-ct-x1.keras"
    assert SRCNN.model_for(enhance, "MR") == MODELS_DIR / "srcnn-mr-x1.keras"
    assert SRCNN.model_for(enhance, "DX") == MODELS_DIR / "srcnn-x1.keras"
    assert all(path.is_file() for path in MODELS_DIR.glob("srcnn-*.keras"))


def test_codes_and_offsets_come_from_the_spec() -> None:
    assert [code[0] for code in SRCNN.codes(1)] == ["113087"]  # smoothing
    assert [code[0] for code in BASELINE.codes(2)] == ["113085", "113089"]  # resampling, unsharp
    assert BASELINE.series_offset(EnhanceSettings(baseline_series_offset=7)) == 7
    with pytest.raises(ValueError, match="uses no model"):
        BASELINE.model_file(EnhanceSettings())


def test_config_knows_exactly_the_registered_methods() -> None:
    with pytest.raises(ConfigError, match="'magic' is not a method"):
        EnhanceSettings(methods=["magic"]).validate()
    spec = MethodSpec("magic", "tests.support.injected_methods:build_slow", "srcnn_series_offset")
    register(spec)
    try:
        EnhanceSettings(methods=["magic"]).validate()
        with pytest.raises(ValueError, match="already registered"):
            register(MethodSpec("magic", "other:build", "srcnn_series_offset"))
    finally:
        del METHODS["magic"]


def test_a_plugin_whose_version_lacks_the_pixel_revision_is_refused_naming_it() -> None:
    """The node's pixel code is part of what a plugin's derived pixels are: its version, and so
    its derived UIDs, must change with PIXEL_REVISION."""
    builder = "tests.support.injected_methods:build_unrevised"
    register(MethodSpec("unrevised", builder, "srcnn_series_offset"))
    try:
        settings = Settings(enhance=EnhanceSettings(methods=["baseline", "unrevised"]))
        said = r"unrevised: its version 'unrevised-1' does not end in the node's pixel revision"
        with pytest.raises(ConfigError, match=said):
            load_models(settings)
        with pytest.raises(ConfigError, match=said):
            configured_methods(settings, "CT")
    finally:
        del METHODS["unrevised"]
