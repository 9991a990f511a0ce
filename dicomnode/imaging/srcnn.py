"""SRCNN inference: the 9-1-5 network, batched, tiled when large, on the GPU when there is one.

The network (Dong et al. 2014; the seed's architecture): Conv 9x9x64 ReLU → Conv 1x1x32 ReLU →
Conv 5x5x1, 'same' padding, one channel, plus a skip connection, so it learns the *residual* over
its input (the degraded image for scale 1, the bicubic upsampling for scale 2..4). It works in the
normalised working range (`normalize`).

TensorFlow is imported here and only here, the first time a model is built or loaded: the CLI and
the receiver never pay for it. The forward pass is one `tf.function` traced once for any batch and
image size; batches are sized from a memory budget and halved when the device runs out of memory.
Images larger than the budget are cut into tiles that overlap by more than the network's
receptive-field radius (`HALO` pixels), so every output pixel sees exactly the inputs it would see
untiled: no seams.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dicomnode.errors import DicomNodeError, first_line
from dicomnode.imaging.degrade import resample
from dicomnode.imaging.native_log import native_stderr_filtered, tf_min_log_level
from dicomnode.imaging.symmetry import averaged_over_views
from dicomnode.model_archive import LAYERS, SCALE_NAME, archive_problem

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

HALO = sum((k - 1) // 2 for _, k in LAYERS)  # 6: how far an output pixel sees
TILE_OVERLAP = 8  # > HALO, a multiple of 4 for friendlier shapes
# What the network is given, in working-range units: its training images' range (0 to 3.65,
# the MR slab's brightest pixels) with a unit of margin. A pixel further out (a dead or
# saturated detector pixel, a marker, metal past the HU scale) is given at the margin and keeps
# its distance from it in the output: its neighbours are not "sharpened" against a step no
# training image had (an Elekta portal image's few zero pixels, 22 units below its range, cost
# it 4.9 dB at x2; models/MODEL_CARD.md).
INPUT_RANGE = (-1.0, 5.0)
MACS_PER_PIXEL = 9 * 9 * 64 + 64 * 32 + 5 * 5 * 32  # 8,032 multiply-adds per output pixel
BYTES_PER_PIXEL = 4 * (1 + 64 + 32 + 1) * 2  # float32 activations in flight, with headroom
CPU_MEMORY_BUDGET = 2 << 30  # 10 slices of 512² per batch
GPU_MEMORY_BUDGET = 8 << 30


class ModelError(DicomNodeError):
    """A model file is missing, unreadable or not the 9-1-5 SRCNN."""


def import_tensorflow() -> Any:
    """Import TensorFlow on first use, with oneDNN kernels on (2x faster convolutions on CPU)
    and full float32 convolutions on a GPU.

    A GPU's default TF32 keeps 10 bits of mantissa: on an H200 the shipped models' outputs were
    7.8e-4 of the working range from the CPU's (3 HU on CT), against 2.1e-7 at full float32
    (models/MODEL_CARD.md, Inference speed). A GPU worker and a CPU worker must make the same
    pixels of a series: the derived UIDs do not say which device ran.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The C++ lines printed while TensorFlow loads ignore the level: see native_log.
    with native_stderr_filtered(tf_min_log_level()):
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # RuntimeError: the device is already initialised, so growth was set by an earlier call.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return tf


def import_keras() -> Any:
    """Keras 3 on its configured backend (KERAS_BACKEND; TensorFlow unless told otherwise), so
    training also runs where only JAX is installed, e.g. a GPU host."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import_tensorflow()
    import keras

    return keras


def build_srcnn(scale: int = 1, *, seed: int | None = None) -> keras.Model:
    """A fresh residual 9-1-5 SRCNN for `scale` (its name records the scale).

    Untrained, it returns its input exactly (the residual branch's last kernel is zero); pass a
    seed for reproducible initial weights.
    """
    keras = import_keras()

    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1), name="image")
    # Centre the working range on 0: ReLU features of a zero-mean input learn much faster.
    x = keras.layers.Rescaling(1.0, offset=-0.5, name="centre")(inputs)
    for index, (filters, size) in enumerate(LAYERS):
        last = index == len(LAYERS) - 1
        x = keras.layers.Conv2D(
            filters,
            size,
            padding="same",
            activation=None if last else "relu",
            # The residual branch starts at exactly 0, so an untrained model is bicubic.
            kernel_initializer="zeros" if last else keras.initializers.HeNormal(),
            name=f"conv{index + 1}",
        )(x)
    outputs = keras.layers.Add(name="residual")([inputs, x])
    return keras.Model(inputs, outputs, name=f"srcnn_x{scale}")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """A checked SRCNN with what identifies it in results: file, sha256 and scale."""

    network: keras.Model
    scale: int
    path: Path | None
    sha256: str

    @property
    def version(self) -> str:
        """Short identifier written into derived UIDs and reports."""
        return f"srcnn-x{self.scale}-{self.sha256[:12]}"


def check_architecture(network: keras.Model, source: str) -> int:
    """The scale a 9-1-5 SRCNN was trained for; ModelError if it is another network."""
    convs = [layer for layer in network.layers if layer.__class__.__name__ == "Conv2D"]
    found = tuple((layer.filters, layer.kernel_size[0]) for layer in convs)
    if found != LAYERS:
        raise ModelError(f"{source}: expected SRCNN layers {LAYERS}, found {found}")
    match = SCALE_NAME.fullmatch(network.name)
    if not match:
        raise ModelError(f"{source}: model name {network.name!r} does not say its scale")
    return int(match.group(1))


def load_model(path: Path) -> LoadedModel:
    """Load `path` (a .keras file written by `dicomnode train`) and check what it is."""
    if not path.is_file():
        raise ModelError(f"{path}: model file not found (see models/README.md)")
    if (problem := archive_problem(path)) is not None:  # Keras: "File not found" of a cut copy
        raise ModelError(f"{path}: {problem}")
    import_tensorflow()
    import keras

    try:
        network = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises several types for damaged or foreign files
        raise ModelError(f"{path}: cannot load the model: {first_line(exc)}") from exc
    scale = check_architecture(network, str(path))
    return LoadedModel(network, scale, path, file_sha256(path))


def from_network(network: keras.Model) -> LoadedModel:
    """Wrap an in-memory network (training, tests); its hash is that of its weights."""
    scale = check_architecture(network, network.name)
    digest = hashlib.sha256()
    for weight in network.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return LoadedModel(network, scale, None, digest.hexdigest())


def select_device() -> str:
    """'/GPU:0' when TensorFlow sees a GPU, else '/CPU:0'."""
    tf = import_tensorflow()
    return "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"


def describe_device(device: str) -> str:
    """What to record per job: the TensorFlow device and, for a GPU, its model name."""
    tf = import_tensorflow()
    if device.startswith("/GPU"):
        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        return f"GPU:0 ({details.get('device_name', 'unknown GPU')})"
    return f"CPU ({os.cpu_count()} cores)"


@dataclass(frozen=True)
class Tile:
    """Where a tile's input is read from (with overlap) and which part of its output is kept."""

    read: tuple[slice, slice]
    write: tuple[slice, slice]
    keep: tuple[slice, slice]


def _spans(length: int, core: int) -> Iterator[tuple[int, int, int, int]]:
    for start in range(0, length, core):
        stop = min(start + core, length)
        lo, hi = max(0, start - TILE_OVERLAP), min(length, stop + TILE_OVERLAP)
        yield lo, hi, start, stop


def tiles_for(shape: tuple[int, int], core: int) -> list[Tile]:
    """Tiles covering `shape` with `core`-pixel cores; a single tile when the image fits."""
    tiles = []
    for r_lo, r_hi, r_start, r_stop in _spans(shape[0], core):
        for c_lo, c_hi, c_start, c_stop in _spans(shape[1], core):
            tiles.append(
                Tile(
                    read=(slice(r_lo, r_hi), slice(c_lo, c_hi)),
                    write=(slice(r_start, r_stop), slice(c_start, c_stop)),
                    keep=(
                        slice(r_start - r_lo, r_stop - r_lo),
                        slice(c_start - c_lo, c_stop - c_lo),
                    ),
                )
            )
    return tiles


class SrcnnRunner:
    """Runs one loaded model on stacks of normalised images, on the chosen device."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str | None = None,
        memory_budget: int | None = None,
        tile: int | None = None,
    ) -> None:
        tf = import_tensorflow()
        self.model = model
        self.device = device or select_device()
        self.device_description = describe_device(self.device)
        gpu = self.device.startswith("/GPU")
        self.memory_budget = memory_budget or (GPU_MEMORY_BUDGET if gpu else CPU_MEMORY_BUDGET)
        self._tile = tile
        network = model.network
        self._forward = tf.function(
            lambda batch: network(batch, training=False),
            input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)],
        )
        self._tf = tf

    def _max_pixels(self) -> int:
        return max(64 * 64, self.memory_budget // BYTES_PER_PIXEL)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Forward pass of a (N, H, W) batch; halves the batch on out-of-memory."""
        tf = self._tf
        try:
            with tf.device(self.device):
                output: np.ndarray = self._forward(tf.constant(batch[..., None])).numpy()
                return output[..., 0]
        except tf.errors.ResourceExhaustedError:
            if len(batch) == 1:
                raise
            half = len(batch) // 2
            self.memory_budget //= 2
            log.warning("srcnn out of memory at batch %d on %s; halving", len(batch), self.device)
            return np.concatenate([self._run(batch[:half]), self._run(batch[half:])])

    def restore(self, images: np.ndarray, *, views: int = 1) -> np.ndarray:
        """The network's output for a (N, H, W) or (H, W) float32 stack on its own grid,
        averaged over `views` flips and quarter turns of it (`symmetry`; 1: as it is).

        The stack is mirrored `HALO` pixels out first: the convolutions' zero padding would
        otherwise be mid-grey in the centred working range and draw a frame along the border.
        Values beyond `INPUT_RANGE` are given at its edge and keep their distance from it.
        """
        stack = np.asarray(images, dtype=np.float32)
        single = stack.ndim == 2
        stack = stack[None] if single else stack
        given = np.clip(stack, *INPUT_RANGE)
        out = averaged_over_views(self._restore_mirrored, given, views)
        out += stack - given  # zero but for the pixels beyond INPUT_RANGE
        return out[0] if single else out

    def _restore_mirrored(self, stack: np.ndarray) -> np.ndarray:
        halo = ((0, 0), (HALO, HALO), (HALO, HALO))
        out = self._restore_padded(np.pad(stack, halo, mode="reflect"))
        return out[:, HALO:-HALO, HALO:-HALO]

    def warm_up(self, shape: tuple[int, int] = (512, 512)) -> None:
        """One forward pass of a full batch of `shape` images, so that the first job does not
        pay for what the first call costs (the graph's tracing, the kernels chosen for the
        batch's shape): a node warms its models when it starts."""
        per_pass = self.images_per_pass(shape) or 1
        self.enhance(np.zeros((per_pass, *shape), np.float32))

    def _batch(self, rows: int, cols: int) -> int | None:
        """Images per forward pass of a padded (N, rows, cols) stack; None: tiled, each tile of
        the whole stack in one pass."""
        if self._tile is not None or rows * cols > self._max_pixels():
            return None
        return max(1, self._max_pixels() // (rows * cols))

    def images_per_pass(self, shape: tuple[int, int]) -> int | None:
        """How many input images of `shape` one forward pass of `enhance` takes (None: large
        images are tiled, every image of a stack in each tile's pass). A caller that cuts a
        series into stacks of this many images gets the batches, and outputs, of one call."""
        scale = self.model.scale
        return self._batch(shape[0] * scale + 2 * HALO, shape[1] * scale + 2 * HALO)

    def _restore_padded(self, stack: np.ndarray) -> np.ndarray:
        """Batched, or tiled when large (tiles overlap by more than HALO: seamless)."""
        n, rows, cols = stack.shape
        core = self._tile or int(np.sqrt(self._max_pixels())) - 2 * TILE_OVERLAP
        batch = self._batch(rows, cols)
        if batch is not None:
            out = np.concatenate([self._run(stack[i : i + batch]) for i in range(0, n, batch)])
        else:
            out = np.empty_like(stack)
            for tile in tiles_for((rows, cols), core):
                part = self._run(np.ascontiguousarray(stack[(slice(None), *tile.read)]))
                out[(slice(None), *tile.write)] = part[(slice(None), *tile.keep)]
        return out

    def enhance(self, images: np.ndarray, *, views: int = 1) -> np.ndarray:
        """Upsample by the model's scale (shared cubic interpolator), then restore (averaged
        over `views` symmetries: the upsampling is done once)."""
        stack = np.asarray(images, dtype=np.float32)
        scale = self.model.scale
        if scale > 1:
            frames = stack[None] if stack.ndim == 2 else stack
            rows, cols = frames.shape[-2:]
            up = np.stack([resample(f, (rows * scale, cols * scale)) for f in frames])
            stack = up[0] if stack.ndim == 2 else up
        return self.restore(stack, views=views)
