"""Loading the models once the node listens, and riding out models that will not load.

A node loads its models after its receiver answers and its router sends the originals
(TensorFlow takes seconds). What the archive alone tells, a missing or damaged file or another
network, has stopped the start before it listened (`registry.check_models`). What only loading
tells comes later: weights Keras cannot fit to the network, a warm-up out of device memory
(another process holds the GPU), a plugin without the pixel revision. Stopping then made the
node worse than a plain router: it dropped the associations it had accepted, and a service
manager restarted it into the same failure while the modality's studies waited. So the process
keeps receiving and sending originals, its derived jobs wait queued (they spend no attempt,
and say why: `db.models_wait`), and the models are tried again every RETRY_SECONDS: a file
replaced, or a device freed, brings the enhancement back without a restart.
"""

import logging
import threading
import time
from collections.abc import Callable

from dicomnode.config import Settings
from dicomnode.errors import ConfigError, first_line
from dicomnode.observe.counters import ENHANCEMENT_WAITING

log = logging.getLogger(__name__)

RETRY_SECONDS = 60.0
REMIND_SECONDS = 3600.0  # the same failure is said again at most this often


def _said(exc: Exception) -> str:
    """A load failure in one line: a ConfigError names the file and setting already."""
    return str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {first_line(exc)}"


class ModelLoading:
    """This process's models: loaded, or why not since when; each try is `load()`."""

    def __init__(
        self, settings: Settings, meanwhile: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`meanwhile`: what the process does while the models do not load, for the log."""
        self._settings = settings
        self._meanwhile = meanwhile
        self._clock = clock
        self._lock = threading.Lock()  # the first try (start) and the retry tick never overlap
        self.problem: str | None = None  # why the last try failed; None once loaded
        self._failing_since: float | None = None
        self._said_at = 0.0

    def load(self) -> bool:
        """Load and warm up every configured model (`methods.load_models`); True when they
        are. A failure is logged once (again when it changes, and each REMIND_SECONDS), with
        the traceback when it is no ConfigError, which would be a bug or a broken install."""
        # Imported here: the imaging libraries take a second, which the listener must not wait
        # for (and a test holds `load_models` back through the module).
        from dicomnode.pipeline import methods
        from dicomnode.pipeline.enhancement import prepare_enhancement

        with self._lock:
            try:
                built = methods.load_models(self._settings)
                prepare_enhancement()
            except Exception as exc:
                self._failed(_said(exc), None if isinstance(exc, ConfigError) else exc)
                return False
            if self._failing_since is not None:
                log.warning(
                    "models loaded after %.0f s without them; enhancement resumes methods=%s",
                    self._clock() - self._failing_since,
                    ",".join(self._settings.enhance.methods),
                )
            elif built:
                log.info("models loaded methods=%s", ",".join(self._settings.enhance.methods))
            self.problem, self._failing_since = None, None
            ENHANCEMENT_WAITING.set(0)
            return True

    def _failed(self, problem: str, unexpected: Exception | None) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
            ENHANCEMENT_WAITING.set(1)
        if problem != self.problem:
            log.error(
                "enhancement waits: %s; %s; the models are tried again every %.0f s",
                problem,
                self._meanwhile,
                RETRY_SECONDS,
                exc_info=unexpected,
            )
        elif now - self._said_at >= REMIND_SECONDS:
            log.warning(
                "enhancement still waits after %.0f s: %s",
                now - self._failing_since,
                problem,
            )
        else:
            log.debug("models still do not load: %s", problem)
            return
        self.problem, self._said_at = problem, now
