"""The enhancement methods the node knows: one `MethodSpec` each, looked up in one place.

Config validation, the job runner, the derived-image builder and the CLI all read this table, so
a new method (or a per-modality model) is one entry here plus the function that builds it. The
builder is named as `module:function` and imported only when a method is built: building SRCNN
imports TensorFlow, which the CLI and the receiver must never pay for, and the builders live in
the services layer, above this one.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from dicomnode.errors import ConfigError
from dicomnode.model_archive import archive_problem

if TYPE_CHECKING:
    from dicomnode.config import EnhanceSettings, Settings
    from dicomnode.imaging.enhance import Method

Code = tuple[str, str, str]  # (CodeValue, CodingSchemeDesignator, CodeMeaning)

# CID 7203 "Image Derivation" (PS3.16)
SMOOTHING: Code = ("113087", "DCM", "Smoothing")
SPATIAL_RESAMPLING: Code = ("113085", "DCM", "Spatial resampling")
UNSHARP_MASK: Code = ("113089", "DCM", "Unsharp mask")


def shipped_models_dir() -> Path:
    """The `models/` folder that ships with dicomnode (`enhance.model_dir` overrides it).

    From a checkout (a source tree with its pyproject.toml), the checkout's own `models/`;
    installed by `pip install .`, the copy in `<prefix>/share/dicomnode/models` (pyproject's
    data-files), found through the distribution's file list so any install prefix works.
    """
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    try:
        files = metadata.distribution("dicomnode").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.parts[-3:-1] == ("dicomnode", "models"):  # share/dicomnode/models/<file>
            return Path(file.locate()).resolve().parent
    return checkout / "models"  # neither: errors about a missing model name this folder


MODELS_DIR = shipped_models_dir()


@dataclass(frozen=True)
class MethodSpec:
    """Everything the node needs to know about one method, apart from running it."""

    name: str  # as in `[enhance] methods`, job details and derived series descriptions
    builder: str  # "module:function" taking (Settings, modality), returning an imaging `Method`
    series_offset_key: str  # the [enhance] key: derived SeriesNumber = source's + this
    derivation_codes: tuple[Code, ...] = ()  # beyond smoothing/resampling (PS3.3 C.7.6.1.1.3)
    model_prefix: str | None = None  # "<prefix>-x<scale>.keras" in the model folder; None: none

    def build(self, settings: "Settings", modality: str = "") -> "Method":
        """The runnable method for these settings and a series of `modality` (which picks the
        model, where a method has one per modality)."""
        module, function = self.builder.split(":")
        build: Callable[[Settings, str], Method] = getattr(
            importlib.import_module(module), function
        )
        return build(settings, modality)

    def series_offset(self, enhance: "EnhanceSettings") -> int:
        offset: int = getattr(enhance, self.series_offset_key)
        return offset

    def codes(self, scale: int) -> list[Code]:
        """DerivationCodeSequence items: what was done to the pixels at this scale."""
        return [SPATIAL_RESAMPLING if scale > 1 else SMOOTHING, *self.derivation_codes]

    def model_file(
        self, enhance: "EnhanceSettings", scale: int | None = None, modality: str | None = None
    ) -> Path:
        """Where this method's model for `scale` (default: the configured one) is looked for:
        `<prefix>-<modality>-x<scale>.keras` for one modality, `<prefix>-x<scale>.keras` for
        any."""
        if self.model_prefix is None:
            raise ValueError(f"method {self.name!r} uses no model file")
        folder = Path(enhance.model_dir) if enhance.model_dir else MODELS_DIR
        kind = f"-{modality.lower()}" if modality else ""
        return folder / f"{self.model_prefix}{kind}-x{scale or enhance.scale}.keras"

    def model_for(self, enhance: "EnhanceSettings", modality: str) -> Path:
        """The modality's own model when there is one, else the model for any modality."""
        own = self.model_file(enhance, modality=modality) if modality else None
        return own if own is not None and own.is_file() else self.model_file(enhance)


SRCNN = MethodSpec(
    name="srcnn",
    builder="dicomnode.pipeline.methods:build_srcnn",
    series_offset_key="srcnn_series_offset",
    model_prefix="srcnn",
)
BASELINE = MethodSpec(
    name="baseline",
    builder="dicomnode.pipeline.methods:build_baseline",
    series_offset_key="baseline_series_offset",
    derivation_codes=(UNSHARP_MASK,),
)
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (SRCNN, BASELINE)}


def register(spec: MethodSpec) -> None:
    """Add a method (from a module named in `enhance.plugins`); a name is taken only once."""
    if spec.name in METHODS and METHODS[spec.name] != spec:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    METHODS[spec.name] = spec


def method_spec(name: str) -> MethodSpec:
    """The spec of a configured method (names are validated when the settings are loaded)."""
    return METHODS[name]


def model_problems(settings: "Settings") -> list[str]:
    """What is wrong with the model files the configured methods would load, for any enabled
    modality, one "<path> <problem>" each: missing, or not a whole archive (checked at start,
    before the node listens: a node that would fail every job must not start; here, not beside
    the loading, so that the check costs no import of the imaging libraries)."""
    enhance = settings.enhance
    problems: dict[Path, str] = {}
    checked: set[Path] = set()  # a fallback model serves several modalities: read once
    for name in enhance.methods:
        spec = method_spec(name)
        if spec.model_prefix is None:
            continue
        looked_for: dict[Path, list[str]] = {}  # the modalities' own files, tried first
        for modality in enhance.modalities:
            path = spec.model_for(enhance, modality)
            if path == spec.model_file(enhance):
                own = spec.model_file(enhance, modality=modality)
                looked_for.setdefault(path, []).append(own.name)
            if path in checked:
                continue
            checked.add(path)
            problem = archive_problem(path, enhance.scale)
            if problem is not None:
                problems[path] = problem
        for path, names in looked_for.items():
            if problems.get(path) == "does not exist":
                problems[path] += f" (nor does {' or '.join(sorted(set(names)))})"
    return [f"{path} {problem}" for path, problem in problems.items()]


def check_models(settings: "Settings") -> None:
    """ConfigError naming each model file the configured methods lack, or cannot use
    (`model_problems`): `serve`, `worker` and `enhance` refuse before they do any work."""
    problems = model_problems(settings)
    if problems:
        enhance = settings.enhance
        raise ConfigError(
            f"setting enhance.methods: {', '.join(enhance.methods)} at enhance.scale = "
            f"{enhance.scale} needs model files: {'; '.join(problems)} (train one with "
            "`dicomnode train`, copy it again, or set enhance.model_dir)"
        )
