"""The enhancement methods a node runs, built once from the settings and shared by workers.

`registry.METHODS` says which methods exist; the builders here turn the settings into runnable
imaging `Method`s. Loading an SRCNN model imports TensorFlow and takes seconds, so each model file
is loaded once per process (thread-safe) and its runner reused by every job.
"""

import threading
from pathlib import Path

from dicomnode.config import QaSettings, Settings
from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.enhance import BaselineMethod, Method, SrcnnMethod
from dicomnode.imaging.qa import QaThresholds
from dicomnode.imaging.srcnn import SrcnnRunner, load_model
from dicomnode.registry import SRCNN, method_spec

_runners: dict[Path, SrcnnRunner] = {}
_lock = threading.Lock()


def srcnn_runner(path: Path) -> SrcnnRunner:
    with _lock:
        if path not in _runners:
            _runners[path] = SrcnnRunner(load_model(path))
        return _runners[path]


def build_srcnn(settings: Settings) -> Method:
    return SrcnnMethod(srcnn_runner(SRCNN.model_file(settings.enhance)))


def baseline_params(settings: Settings) -> BaselineParams:
    """The `[baseline]` settings as the imaging layer's parameter object."""
    return BaselineParams(**vars(settings.baseline))


def build_baseline(settings: Settings) -> Method:
    return BaselineMethod(baseline_params(settings), scale=settings.enhance.scale)


def configured_methods(settings: Settings) -> list[Method]:
    """One Method per name in `[enhance] methods`, in that order."""
    return [method_spec(name).build(settings) for name in settings.enhance.methods]


def qa_thresholds(qa: QaSettings) -> QaThresholds:
    return QaThresholds(**{measure: qa.limits(measure) for measure in qa.MEASURES})
