"""Train the 9-1-5 SRCNN: fresh augmented patches, a cosine schedule, the best weights kept.

Patches are drawn fresh for every batch from the training groups only (`PatchSampler`: random
position, one of the 8 turns/flips, input noise at scale 1), so a run of a million patch updates
never repeats one. The learning rate follows a cosine from `learning_rate` to
`final_learning_rate` over the whole run: no plateau rule can stall it (an absolute `min_delta`
did, when the loss itself was ~1e-4). The validation loss is measured `epochs` times; the weights
with the lowest one are saved. The loss ignores a `HALO`-pixel border of each patch, where 'same'
padding sees zeros that the full image would not have.

Backend-neutral Keras 3: the same code trains with TensorFlow (CPU or GPU) or with JAX (a GPU host
without TensorFlow); the `.keras` file loads in either. Deterministic for a seed on one backend
and device. Alongside the model it writes `<stem>.history.json` (settings, split by pseudonymous
group, steps, updates, device, wall time, and per epoch the losses and learning rate) and
`<stem>.loss.png`.
"""

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.errors import DicomNodeError
from dicomnode.imaging.degrade import Degradation
from dicomnode.imaging.srcnn import HALO, build_srcnn, file_sha256, import_keras
from dicomnode.training.corpus import CorpusImage, pseudonym, split_by_group
from dicomnode.training.figures import plot_loss
from dicomnode.training.linear import fit_linear_filter
from dicomnode.training.pairs import PatchSampler, make_pair, sample_patches
from dicomnode.training.warm_start import start_as_linear

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    scale: int = 2
    modality: str | None = None  # train on this modality only (a per-modality model)
    updates: int = 1_000_000  # patch updates: steps x batch_size
    epochs: int = 20  # validation checkpoints over the run
    seed: int = 0
    patch_size: int = 48
    validation_patches: int = 2048
    batch_size: int = 32
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-5
    validation_fraction: float = 0.2
    blur_sigma: float = 1.0  # scale 1 only: see dicomnode.imaging.degrade
    noise_factor: float = 1.5  # scale 1 only: input noise up to this x the image's own
    threads: int = 0  # CPU threads for TensorFlow (0: all cores)
    start: str = "random"  # or "linear": start as the least-squares filter (warm_start.py)
    contrast_min: float = 0.1  # half the patches fainter by down to this factor (pairs.py)
    soften_sigmas: tuple[float, ...] = (0.0, 0.7, 1.2)  # each image also blurred by these (px)
    clean_fraction: float = 0.0  # scale 1 only: this share of patches undegraded (pairs.py)

    @property
    def steps(self) -> int:
        return math.ceil(self.updates / self.batch_size / self.epochs) * self.epochs

    @classmethod
    def shipped(cls, scale: int, **given: Any) -> "TrainingSettings":
        """The recipe the shipped models of `scale` were trained with (models/MODEL_CARD.md),
        `given` settings over it. At x1: the images as they are and a quarter of the patches
        undegraded; the softened and fainter copies that help x2 taught a x1 model to sharpen
        real CT 5.7x (QA held most series)."""
        return cls(scale=scale, **{**(SCALE_1_RECIPE if scale == 1 else {}), **given})


SCALE_1_RECIPE: dict[str, Any] = {
    "soften_sigmas": (0.0,),
    "contrast_min": 1.0,
    "clean_fraction": 0.25,
}


@dataclass(frozen=True)
class TrainingReport:
    model: str
    sha256: str
    scale: int
    modality: str | None
    steps: int
    updates: int
    epochs_run: int
    best_epoch: int
    best_validation_loss: float
    seconds: float
    device: str
    backend: str
    train_images: int
    validation_images: int
    train_groups: list[str]  # pseudonymous: a hash of each group (patient) id
    validation_groups: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _halo_mse(y_true, y_pred):  # type: ignore[no-untyped-def]
    keras = import_keras()
    inner = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
    return keras.ops.mean(keras.ops.square(y_true[inner] - y_pred[inner]))


def _device(keras: Any) -> str:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"GPU ({len(gpus)})" if gpus else f"CPU ({os.cpu_count()} cores)"
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    return backend


def _prepare_backend(keras: Any, settings: TrainingSettings) -> None:
    keras.utils.set_random_seed(settings.seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        if settings.threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)


def of_modality(images: Sequence[CorpusImage], modality: str | None) -> list[CorpusImage]:
    """The images of `modality` (all when None); DicomNodeError naming those there are when
    there is none, before TensorFlow loads."""
    if not modality:
        return list(images)
    chosen = [image for image in images if image.modality == modality.upper()]
    if not chosen:
        found = ", ".join(sorted({image.modality for image in images})) or "no image"
        raise DicomNodeError(
            f"no {modality.upper()} image among the training data (found: {found})"
        )
    return chosen


def train_srcnn(
    images: Sequence[CorpusImage],
    out: Path,
    settings: TrainingSettings,
    on_batch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainingReport:
    """Train on `images` (split here by group), save the model to `out`, report what happened.

    `on_batch(epoch, batches_done, logs)` is called after each batch (the CLI's progress bar).
    """
    started = time.perf_counter()
    images = of_modality(images, settings.modality)
    keras = import_keras()
    _prepare_backend(keras, settings)
    train, validation = split_by_group(images, settings.validation_fraction, settings.seed)
    if not validation:  # one patient (the shared MR): the checkpoints can only watch training
        log.warning("one group only: validation patches come from the training images")
    degradation = Degradation(scale=settings.scale, blur_sigma=settings.blur_sigma)
    train_pairs = [
        make_pair(image, degradation, soft) for image in train for soft in settings.soften_sigmas
    ]
    sampler = PatchSampler(
        train_pairs,
        settings.patch_size,
        settings.batch_size,
        seed=settings.seed,
        noise_factor=settings.noise_factor if settings.scale == 1 else 0.0,
        contrast_min=settings.contrast_min,
        clean_fraction=settings.clean_fraction if settings.scale == 1 else 0.0,
    )
    x_val, y_val = sample_patches(
        [make_pair(i, degradation) for i in validation] if validation else train_pairs,
        settings.validation_patches,
        settings.patch_size,
        np.random.default_rng(settings.seed + 1),
    )
    steps_per_epoch = settings.steps // settings.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        settings.learning_rate,
        decay_steps=settings.steps,
        alpha=settings.final_learning_rate / settings.learning_rate,
    )
    model = build_srcnn(settings.scale, seed=settings.seed)
    if settings.start == "linear":
        start_as_linear(model, fit_linear_filter(train, degradation, seed=settings.seed))
    elif settings.start != "random":
        raise ValueError(f"start must be 'linear' or 'random', not {settings.start!r}")
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=_halo_mse)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_model_path(out)
    history = model.fit(
        _batches(keras, sampler, steps_per_epoch),
        epochs=settings.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=(x_val, y_val),
        callbacks=[
            *_callbacks(keras, schedule, steps_per_epoch, on_batch),
            # the best model so far is on disk at every checkpoint: a long run that is stopped
            # still leaves a usable model, beside `out` (a node reading `out` meanwhile must
            # not load a model half-trained or half-written)
            keras.callbacks.ModelCheckpoint(partial, monitor="val_loss", save_best_only=True),
        ],
        verbose=0,
    ).history
    model.save(partial)
    partial.replace(out)  # atomic: the old model or the new one, whole
    history = {k: [float(v) for v in values] for k, values in history.items()}
    best = int(np.argmin(history["val_loss"]))
    report = TrainingReport(
        model=str(out),
        sha256=file_sha256(out),
        scale=settings.scale,
        modality=settings.modality,
        steps=settings.steps,
        updates=settings.steps * settings.batch_size,
        epochs_run=len(history["loss"]),
        best_epoch=best + 1,
        best_validation_loss=history["val_loss"][best],
        seconds=round(time.perf_counter() - started, 1),
        device=_device(keras),
        backend=keras.backend.backend(),
        train_images=len(train),
        validation_images=len(validation),
        train_groups=sorted({pseudonym(i.group) for i in train}),
        validation_groups=sorted({pseudonym(i.group) for i in validation}),
        settings=asdict(settings),
    )
    stem = out.with_suffix("")
    Path(f"{stem}.history.json").write_text(
        json.dumps({"report": report.as_dict(), "history": history}, indent=2)
    )
    plot_loss(history, Path(f"{stem}.loss.png"), f"SRCNN x{settings.scale}")
    return report


def partial_model_path(out: Path) -> Path:
    """Where a run keeps its best model until it ends (`<stem>.partial.keras`: Keras saves
    only to a `.keras` name)."""
    return out.with_name(f"{out.stem}.partial.keras")


def _batches(keras: Any, sampler: PatchSampler, steps_per_epoch: int) -> Any:
    """The sampler as a Keras dataset: batch i of epoch e is the sampler's batch e*steps+i."""

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        epoch = 0

        def __len__(self) -> int:
            return steps_per_epoch

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return sampler.batch(self.epoch * steps_per_epoch + index)

        def on_epoch_end(self) -> None:
            self.epoch += 1

    return Batches()


def _callbacks(
    keras: Any,
    schedule: Any,
    steps_per_epoch: int,
    on_batch: Callable[[int, int, dict[str, float]], None] | None,
) -> list[Any]:
    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        """Reports batches, logs each epoch, and keeps the weights of the best validation."""

        epoch = 0
        best = math.inf
        best_weights: list[np.ndarray] | None = None

        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
            if on_batch:
                on_batch(self.epoch, batch + 1, logs or {})

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            logs = logs if logs is not None else {}
            logs["lr"] = float(schedule((epoch + 1) * steps_per_epoch))
            if logs["val_loss"] < self.best:
                self.best, self.best_weights = logs["val_loss"], self.model.get_weights()
            log.info(
                "epoch=%d loss=%.3g val_loss=%.3g lr=%.2g",
                epoch + 1,
                logs["loss"],
                logs["val_loss"],
                logs["lr"],
            )

        def on_train_end(self, logs=None):  # type: ignore[no-untyped-def]
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return [Progress()]
