"""The enhancement methods a node runs, built once from the settings and shared by workers.

Loading an SRCNN model imports TensorFlow and takes seconds, so each model file is loaded once
per process (thread-safe) and its runner reused by every job.
"""

import threading
from pathlib import Path

from dicomnode.config import EnhanceSettings, QaSettings, Settings
from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.enhance import BaselineMethod, Method, SrcnnMethod
from dicomnode.imaging.qa import QaThresholds
from dicomnode.imaging.srcnn import MODELS_DIR, SrcnnRunner, load_model

_runners: dict[Path, SrcnnRunner] = {}
_lock = threading.Lock()


def model_path(enhance: EnhanceSettings) -> Path:
    folder = Path(enhance.model_dir) if enhance.model_dir else MODELS_DIR
    return folder / f"srcnn-x{enhance.scale}.keras"


def srcnn_runner(path: Path) -> SrcnnRunner:
    with _lock:
        if path not in _runners:
            _runners[path] = SrcnnRunner(load_model(path))
        return _runners[path]


def baseline_params(settings: Settings) -> BaselineParams:
    """The `[baseline]` settings as the imaging layer's parameter object."""
    return BaselineParams(**vars(settings.baseline))


def configured_methods(settings: Settings) -> list[Method]:
    """One Method per name in `[enhance] methods`, in that order."""
    methods: list[Method] = []
    for name in settings.enhance.methods:
        if name == "srcnn":
            methods.append(SrcnnMethod(srcnn_runner(model_path(settings.enhance))))
        else:
            methods.append(BaselineMethod(baseline_params(settings), scale=settings.enhance.scale))
    return methods


def qa_thresholds(qa: QaSettings) -> QaThresholds:
    return QaThresholds(**{measure: qa.limits(measure) for measure in qa.MEASURES})
