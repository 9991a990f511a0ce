"""The enhancement methods a node runs, built once from the settings and shared by workers.

`registry.METHODS` says which methods exist; the builders here turn the settings into runnable
imaging `Method`s. Loading an SRCNN model imports TensorFlow and takes seconds, so each model file
is loaded once per process (thread-safe) and its runner reused by every job.
"""

import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from dicomnode.config import QaSettings, Settings
from dicomnode.errors import ConfigError, DicomNodeError, first_line
from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.enhance import (
    PIXEL_REVISION,
    BaselineMethod,
    Method,
    SrcnnMethod,
    is_revised,
)
from dicomnode.imaging.qa import QaThresholds
from dicomnode.imaging.srcnn import ModelError, SrcnnRunner, load_model
from dicomnode.model_archive import scale_problem
from dicomnode.registry import SRCNN, method_spec

log = logging.getLogger(__name__)

_runners: dict[Path, SrcnnRunner] = {}
_warmed: set[Path] = set()  # the cached runners run once through a full batch
_lock = threading.Lock()
_fallbacks_logged: set[tuple[str, Path]] = set()


def srcnn_runner(path: Path) -> SrcnnRunner:
    with _lock:
        if path not in _runners:
            _runners[path] = SrcnnRunner(load_model(path))
        return _runners[path]


def build_srcnn(settings: Settings, modality: str = "") -> Method:
    """SRCNN with the modality's own model (`srcnn-<modality>-x<scale>.keras`) when there is
    one, else the model for any modality (said once per modality in the log)."""
    path = SRCNN.model_for(settings.enhance, modality)
    if modality and path == SRCNN.model_file(settings.enhance):
        with _lock:
            first = (modality, path) not in _fallbacks_logged
            _fallbacks_logged.add((modality, path))
        if first:
            own = SRCNN.model_file(settings.enhance, modality=modality).name
            log.info("no %s model %s: using %s", modality, own, path.name)
    runner = srcnn_runner(path)
    if runner.model.scale != settings.enhance.scale:  # `check_models` said so at start
        raise ModelError(f"{path}: {scale_problem(runner.model.scale, settings.enhance.scale)}")
    return SrcnnMethod(runner, views=settings.enhance.srcnn_views)


def baseline_params(settings: Settings) -> BaselineParams:
    """The `[baseline]` settings as the imaging layer's parameter object."""
    return BaselineParams(**vars(settings.baseline))


def build_baseline(settings: Settings, modality: str = "") -> Method:
    return BaselineMethod(baseline_params(settings), scale=settings.enhance.scale)


def _revised(method: Method, name: str) -> Method:
    """`method`, whose version ends in the node's pixel revision; a plugin's that does not is a
    ConfigError: the node's own pixel code (padding, working range, stored values) is part of
    what makes its pixels, so the revision must be part of its derived UIDs too."""
    if not is_revised(method.version):
        raise ConfigError(
            f"setting enhance.methods: {name}: its version {method.version!r} does not end in "
            f"the node's pixel revision '-r{PIXEL_REVISION}'; a plugin builds its version with "
            "dicomnode.imaging.enhance.revised()"
        )
    return method


def configured_methods(settings: Settings, modality: str = "") -> list[Method]:
    """One Method per name in `[enhance] methods`, in that order, for series of `modality`."""
    return [
        _revised(method_spec(name).build(settings, modality), name)
        for name in settings.enhance.methods
    ]


MethodsFor = Callable[[str], list[Method]]


def methods_for(settings: Settings) -> MethodsFor:
    """The configured methods as a function of a series' modality (for `enhance_series`)."""
    return partial(configured_methods, settings)


def load_models(settings: Settings) -> int:
    """Build every configured method that uses a model, for each enabled modality, so each
    model is loaded, warmed up (`SrcnnRunner.warm_up`) and cached for the jobs now; return how
    many were built.

    A model that exists but cannot be loaded (weights that do not fit) or run (out of device
    memory) raises ConfigError naming the file, and is not kept: `ModelLoading` says so and
    tries again. Nothing is loaded, and TensorFlow not imported, when no configured method uses
    a model. Then each configured method is built once for each enabled modality, as jobs build
    them: a plugin whose version lacks the pixel revision is a ConfigError here too, once, not a
    failure of every job.
    """
    enhance = settings.enhance
    built = 0
    for name in enhance.methods:
        spec = method_spec(name)
        if spec.model_prefix is None:
            continue
        for modality in enhance.modalities:
            try:
                spec.build(settings, modality)
            except DicomNodeError as exc:
                raise ConfigError(
                    f"setting enhance.methods: {name} for {modality}: {exc}; replace the file "
                    "(or set enhance.model_dir, enhance.scale)"
                ) from None
            built += 1
    with _lock:
        cold = sorted(set(_runners) - _warmed)
    for path in cold:  # each once, and the rest of a try that failed at the next
        try:
            _runners[path].warm_up()
        except Exception as exc:  # TensorFlow raises many types (out of memory, no kernel...)
            with _lock:  # not cached: the next try loads and warms it up again
                del _runners[path]
            raise ConfigError(
                f"setting enhance.methods: {path} loads but cannot run: {first_line(exc)}"
            ) from None
        with _lock:
            _warmed.add(path)
    for modality in enhance.modalities:  # each method as jobs build it (models now cached)
        configured_methods(settings, modality)
    return built


def qa_thresholds(qa: QaSettings) -> QaThresholds:
    return QaThresholds(**{measure: qa.limits(measure) for measure in qa.MEASURES})
