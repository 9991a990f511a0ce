"""Train the 9-1-5 SRCNN: patches from training groups only, MSE on the residual, early stopping.

Deterministic for a seed (patch sampling, weight initialisation, shuffling, and TensorFlow's
deterministic kernels). The loss ignores a `HALO`-pixel border of each patch, where 'same'
padding sees zeros that the full image would not have. Alongside the model file it writes the
per-epoch history (`<stem>.history.json`) and the loss curve (`<stem>.loss.png`).
"""

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dicomnode.imaging.degrade import Degradation
from dicomnode.imaging.srcnn import HALO, build_srcnn, file_sha256, import_tensorflow
from dicomnode.training.corpus import CorpusImage, split_by_group
from dicomnode.training.figures import plot_loss
from dicomnode.training.pairs import make_pair, sample_patches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    scale: int = 2
    epochs: int = 30
    seed: int = 0
    patch_size: int = 48
    train_patches: int = 8192
    validation_patches: int = 1024
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 5
    validation_fraction: float = 0.2
    blur_sigma: float = 1.0  # scale 1 only: see dicomnode.imaging.degrade


@dataclass(frozen=True)
class TrainingReport:
    model: str
    sha256: str
    scale: int
    epochs_run: int
    best_epoch: int
    best_validation_loss: float
    seconds: float
    train_images: int
    validation_images: int
    train_groups: list[str]
    validation_groups: list[str]
    settings: dict

    def as_dict(self) -> dict:
        return asdict(self)


def _halo_mse(y_true, y_pred):  # type: ignore[no-untyped-def]
    import keras

    inner = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
    return keras.ops.mean(keras.ops.square(y_true[inner] - y_pred[inner]))


def train_srcnn(
    images: Sequence[CorpusImage],
    out: Path,
    settings: TrainingSettings,
    on_batch: Callable[[int, int, dict], None] | None = None,
) -> TrainingReport:
    """Train on `images` (split here by group), save the model to `out`, report what happened.

    `on_batch(epoch, batches_done, logs)` is called after each batch (the CLI's progress bar).
    """
    started = time.perf_counter()
    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(settings.seed)

    train, validation = split_by_group(images, settings.validation_fraction, settings.seed)
    if not validation:
        raise ValueError("the validation split is empty: give images of at least two patients")
    degradation = Degradation(scale=settings.scale, blur_sigma=settings.blur_sigma)
    x_train, y_train = sample_patches(
        [make_pair(i, degradation) for i in train], settings.train_patches, settings.patch_size, rng
    )
    x_val, y_val = sample_patches(
        [make_pair(i, degradation) for i in validation],
        settings.validation_patches,
        settings.patch_size,
        rng,
    )
    model = build_srcnn(settings.scale, seed=settings.seed)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=_halo_mse)

    class Progress(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
            if on_batch:
                on_batch(self.epoch, batch + 1, logs or {})

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            logs = logs or {}
            log.info("epoch=%d loss=%.3g val_loss=%.3g", epoch + 1, logs["loss"], logs["val_loss"])

    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    reduce = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
    history = model.fit(
        x_train,
        y_train,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        validation_data=(x_val, y_val),
        callbacks=[Progress(), stopper, reduce],
        shuffle=True,
        verbose=0,
    ).history
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    history = {k: [float(v) for v in values] for k, values in history.items()}
    best = int(np.argmin(history["val_loss"]))
    report = TrainingReport(
        model=str(out),
        sha256=file_sha256(out),
        scale=settings.scale,
        epochs_run=len(history["loss"]),
        best_epoch=best + 1,
        best_validation_loss=history["val_loss"][best],
        seconds=round(time.perf_counter() - started, 1),
        train_images=len(train),
        validation_images=len(validation),
        train_groups=sorted({i.group for i in train}),
        validation_groups=sorted({i.group for i in validation}),
        settings=asdict(settings),
    )
    stem = out.with_suffix("")
    Path(f"{stem}.history.json").write_text(
        json.dumps({"report": report.as_dict(), "history": history}, indent=2)
    )
    plot_loss(history, Path(f"{stem}.loss.png"), f"SRCNN x{settings.scale}")
    return report
