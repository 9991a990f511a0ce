"""Train the 9-1-5 SRCNN on a GPU in pure JAX: several seeds at once, patches drawn on the GPU.

`dicomnode train` (Keras 3) draws its patches in Python, one at a time: on a CPU that is a small
part of a step, on a GPU it is all of it. This script trains the same network on the same pairs
(`dicomnode.training.pairs.make_pair`: the same degradation, working range and softened copies)
with the same recipe (fresh patches for every batch, half of them structured, half of them
fainter, turned by one of the square's 8 symmetries; MSE inside the 6-pixel halo; Adam as Keras
has it; a cosine learning rate; the best of `--checkpoints` validations kept), but draws every
batch on the GPU inside a compiled loop, and trains one model per seed side by side.

It writes, for each seed, the best weights as `seed<N>.npz` (layer names as in `build_srcnn`)
and the whole record as `history.json`, again at every checkpoint, so a run stopped early still
leaves usable weights. `scripts/gpu_weights_to_keras.py` turns the weights into the `.keras`
file the node loads (on a CPU with TensorFlow).

    python3 scripts/train_on_gpu.py DATA... --modality MR --scale 2 \
        --members 0:1e-3 1:1e-3 2:1e-3 0:1e-3:plain --batch 128 --seconds 360 --out OUT

With `--seconds`, a timed warm-up sets the step count that fits (printed, and recorded as the
`--steps` that reproduces the run); `--steps` fixes it. Needs jax, numpy, scikit-image, pydicom.
"""

import argparse
import functools
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicomnode.imaging.degrade import Degradation
from dicomnode.imaging.srcnn import HALO, LAYERS
from dicomnode.training.corpus import load_images, pseudonym, split_by_group
from dicomnode.training.pairs import (
    MIN_PATCH_STD,
    STRUCTURED_FRACTION,
    Pair,
    make_pair,
    sample_patches,
)

ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}  # Keras 3's defaults
HE_TRUNCATION = 0.87962566103423978  # Keras's HeNormal: a normal truncated at 2 sd, rescaled


@dataclass(frozen=True)
class Member:
    """One model trained in the run: `SEED:RATE` (the recipe: softened copies, fainter
    patches) or `SEED:RATE:plain` (the images as they are: no softened copies, none fainter)."""

    seed: int
    learning_rate: float
    plain: bool = False

    @classmethod
    def parse(cls, text: str) -> "Member":
        seed, rate, *recipe = text.split(":")
        if recipe not in ([], ["plain"]):
            raise ValueError(f"member {text!r}: SEED:RATE or SEED:RATE:plain")
        return cls(int(seed), float(rate), bool(recipe))

    @property
    def name(self) -> str:
        return f"seed{self.seed}-lr{self.learning_rate:g}{'-plain' if self.plain else ''}"


def _pair_job(args: tuple) -> Pair:
    image, scale, soften = args
    return make_pair(image, Degradation(scale=scale), soften)


def structured_positions(target: np.ndarray, size: int) -> np.ndarray:
    """Top-left corners (row, col) of the `size`² windows of `target` whose standard deviation
    is at least MIN_PATCH_STD: the patches `PatchSampler` retries for."""
    padded = np.pad(target.astype(np.float64), ((1, 0), (1, 0)))
    s1 = padded.cumsum(0).cumsum(1)
    s2 = (padded**2).cumsum(0).cumsum(1)

    def window(s: np.ndarray) -> np.ndarray:
        return s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]

    n = size * size
    var = window(s2) / n - (window(s1) / n) ** 2
    rows, cols = np.nonzero(np.sqrt(np.maximum(var, 0)) >= MIN_PATCH_STD)
    return np.stack([rows, cols], 1).astype(np.int32)


def init_params(jax, seed: int) -> dict:  # type: ignore[no-untyped-def]
    """Keras's initial weights for build_srcnn: He-normal kernels, zero biases, last kernel 0."""
    key = jax.random.PRNGKey(seed)
    params, channels = {}, 1
    for index, (filters, size) in enumerate(LAYERS):
        name = f"conv{index + 1}"
        shape = (size, size, channels, filters)
        if index == len(LAYERS) - 1:
            kernel = jax.numpy.zeros(shape)
        else:
            key, sub = jax.random.split(key)
            std = math.sqrt(2.0 / (size * size * channels)) / HE_TRUNCATION
            kernel = std * jax.random.truncated_normal(sub, -2.0, 2.0, shape)
        params[name] = {"kernel": kernel, "bias": jax.numpy.zeros((filters,))}
        channels = filters
    return params


def forward(jax, params: dict, x):  # type: ignore[no-untyped-def]
    """build_srcnn's network: centre, three 'same' convolutions (ReLU between), add the input."""
    y = x - 0.5
    for index in range(len(LAYERS)):
        layer = params[f"conv{index + 1}"]
        y = jax.lax.conv_general_dilated(
            y, layer["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = y + layer["bias"]
        if index < len(LAYERS) - 1:
            y = jax.nn.relu(y)
    return x + y


def halo_mse(jnp, pred, target):  # type: ignore[no-untyped-def]
    inner = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
    return jnp.mean(jnp.square(pred[inner] - target[inner]))


def cosine(jnp, peak: float, final: float, steps: int, step):  # type: ignore[no-untyped-def]
    """keras.optimizers.schedules.CosineDecay(peak, steps, alpha=final/peak) at `step`."""
    alpha = final / peak
    progress = jnp.minimum(step, steps) / steps
    return peak * ((1 - alpha) * 0.5 * (1 + jnp.cos(math.pi * progress)) + alpha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--modality", default=None)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--members", type=Member.parse, nargs="+", default=[Member(0, 1e-3)])
    parser.add_argument("--final-learning-rate", type=float, default=1e-5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--soften", type=float, nargs="+", default=[0.0, 0.7, 1.2])
    parser.add_argument("--contrast-min", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=0, help="steps per compiled call (0: timed)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.steps and not args.seconds:
        parser.error("give --steps, or --seconds to fit the steps to")
    if args.scale == 1:
        sys.exit("scale 1 needs input noise and undegraded patches: use dicomnode train")
    members = args.members
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    images = load_images(args.data)
    if args.modality:
        images = [i for i in images if i.modality == args.modality.upper()]
    train, validation = split_by_group(images, 0.2, members[0].seed)
    jobs = [(image, args.scale, soft) for image in train for soft in args.soften]
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        made = pool.map(_pair_job, jobs + [(i, args.scale, 0.0) for i in validation])
    pairs, validation_pairs = made[: len(jobs)], made[len(jobs) :]
    print(
        f"pairs: {len(pairs)} training, {len(validation)} validation images, "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )

    import jax
    import jax.numpy as jnp

    size = args.patch
    rows = max(p.target.shape[0] for p in pairs)
    cols = max(p.target.shape[1] for p in pairs)
    stack_in = np.zeros((len(pairs), rows, cols), np.float32)
    stack_out = np.zeros_like(stack_in)
    limits = np.zeros((len(pairs), 2), np.int32)  # the last valid top-left corner, +1
    areas = np.zeros(len(pairs))
    structured = []
    plain = np.array([soft == 0.0 for _, _, soft in jobs])  # the images as they are
    for n, pair in enumerate(pairs):
        target = pair.target
        h, w = target.shape
        stack_in[n, :h, :w], stack_out[n, :h, :w] = pair.net_input, target
        limits[n] = (h - size + 1, w - size + 1)
        areas[n] = target.size
        corners = structured_positions(target, size)
        structured.append(np.column_stack([np.full(len(corners), n, np.int32), corners]))
    structured_all = np.concatenate(structured)
    print(
        f"structured windows: {len(structured_all)} of {int(np.prod(limits, 1).sum())}", flush=True
    )

    def validation_set(seed: int) -> tuple[np.ndarray, np.ndarray]:
        # as dicomnode train: 2,048 patches of the validation images (else the training ones)
        source = validation_pairs or pairs
        return sample_patches(source, 2048, size, np.random.default_rng(seed + 1))

    # passed to the compiled loop as arguments: closed over, they would be baked into it
    data = {
        "in": jnp.asarray(stack_in),
        "out": jnp.asarray(stack_out),
        "limits": jnp.asarray(limits),
        "weights": jnp.asarray(areas / areas.sum()),
        "structured": jnp.asarray(structured_all),
        "weights_plain": jnp.asarray(areas * plain / (areas * plain).sum()),
        "structured_plain": jnp.asarray(structured_all[plain[structured_all[:, 0]]]),
    }
    batch = args.batch
    n_structured = int(batch * STRUCTURED_FRACTION)
    log_cmin = math.log(args.contrast_min)

    def patch(data, index, r, c):
        corner = (index, r, c)
        cut = (1, size, size)
        return (
            jax.lax.dynamic_slice(data["in"], corner, cut)[0],
            jax.lax.dynamic_slice(data["out"], corner, cut)[0],
        )

    def turn(x, k):  # one of the 8 symmetries of the square: k // 2 quarter turns, k % 2 mirror
        views = [jnp.rot90(x, t) for t in range(4)]
        views = [v for view in views for v in (view, view[:, ::-1])]
        return jax.lax.switch(k, [lambda _, v=v: v for v in views], None)

    def draw(data, key, member):
        """A batch as PatchSampler draws it: half structured, half anywhere; half of them
        fainter (unless plain); each turned."""
        suffix = "_plain" if member.plain else ""
        structured, weights = data[f"structured{suffix}"], data[f"weights{suffix}"]
        k1, k2, k3, k4, k5, k6, k7 = jax.random.split(key, 7)
        pick = jax.random.randint(k1, (n_structured,), 0, structured.shape[0])
        s_idx, s_r, s_c = structured[pick].T
        u_idx = jax.random.choice(k2, len(pairs), (batch - n_structured,), p=weights)
        u_r = jax.random.randint(k3, u_idx.shape, 0, data["limits"][u_idx, 0])
        u_c = jax.random.randint(k4, u_idx.shape, 0, data["limits"][u_idx, 1])
        idx = jnp.concatenate([s_idx, u_idx])
        r, c = jnp.concatenate([s_r, u_r]), jnp.concatenate([s_c, u_c])
        x, y = jax.vmap(patch, in_axes=(None, 0, 0, 0))(data, idx, r, c)
        if args.contrast_min < 1.0 and not member.plain:
            faint = jax.random.uniform(k5, (batch,)) < 0.5
            gain = jnp.where(faint, jnp.exp(jax.random.uniform(k6, (batch,), minval=log_cmin)), 1)
            centre = y.mean(axis=(1, 2), keepdims=True)
            x = centre + gain[:, None, None] * (x - centre)
            y = centre + gain[:, None, None] * (y - centre)
        k = jax.random.randint(k7, (batch,), 0, 8)
        x, y = jax.vmap(turn)(x, k), jax.vmap(turn)(y, k)
        return x[..., None], y[..., None]

    def loss_fn(params, x, y):
        return halo_mse(jnp, forward(jax, params, x), y)

    grad_fn = jax.value_and_grad(loss_fn)

    def member_step(data, state, key, step, member, total):
        params, m, v = state
        x, y = draw(data, key, member)
        loss, grads = grad_fn(params, x, y)
        lr = cosine(jnp, member.learning_rate, args.final_learning_rate, total, step)
        t = step + 1
        alpha = lr * jnp.sqrt(1 - ADAM["beta_2"] ** t) / (1 - ADAM["beta_1"] ** t)
        m = jax.tree.map(lambda m, g: ADAM["beta_1"] * m + (1 - ADAM["beta_1"]) * g, m, grads)
        v = jax.tree.map(lambda v, g: ADAM["beta_2"] * v + (1 - ADAM["beta_2"]) * g * g, v, grads)
        params = jax.tree.map(
            lambda p, m, v: p - alpha * m / (jnp.sqrt(v) + ADAM["epsilon"]), params, m, v
        )
        return (params, m, v), loss

    def steps_of(states, keys, step, total, data):
        """One step of every member."""
        new, losses = [], []
        for member, state, key in zip(members, states, keys, strict=True):
            state, loss = member_step(
                data, state, jax.random.fold_in(key, step), step, member, total
            )
            new.append(state)
            losses.append(loss)
        return tuple(new), jnp.stack(losses)

    @functools.cache
    def make_chunk(count: int):
        """`count` steps in one compiled call: a scan, or (count 1) the step itself. XLA on a CPU
        runs convolutions inside a loop ~10x slower than outside one; a GPU may differ, so
        `--chunk 0` times both."""

        @jax.jit
        def chunk(states, keys, start, total, data):
            if count == 1:
                return steps_of(states, keys, start, total, data)

            def body(states, i):
                return steps_of(states, keys, start + i, total, data)

            states, losses = jax.lax.scan(body, states, jnp.arange(count))
            return states, losses.mean(axis=0)

        return chunk

    val_loss = jax.jit(lambda params, x, y: loss_fn(params, x, y))

    def fresh_states():
        states = []
        for member in members:
            params = init_params(jax, member.seed)
            zeros = jax.tree.map(jnp.zeros_like, params)  # Adam's moments (arrays are immutable)
            states.append((params, zeros, zeros))
        return tuple(states)

    def seconds_per_step(count: int) -> float:
        """Compile `count`-step chunks and time 400 steps of them."""
        chunk, states = make_chunk(count), fresh_states()
        states, _ = chunk(states, keys, 0, 10**6, data)
        jax.block_until_ready(states)
        t0 = time.perf_counter()
        calls = max(1, 400 // count)
        for n in range(1, calls + 1):
            states, _ = chunk(states, keys, n * count, 10**6, data)
        jax.block_until_ready(states)
        per_step = (time.perf_counter() - t0) / (calls * count)
        print(f"chunks of {count}: {per_step * 1e3:.3f} ms per step", flush=True)
        return per_step

    keys = tuple(jax.random.PRNGKey(1000 + m.seed) for m in members)
    chunk_steps, steps = args.chunk, args.steps
    if not chunk_steps or not steps:
        timings = {c: seconds_per_step(c) for c in ([chunk_steps] if chunk_steps else [1, 100])}
        chunk_steps = min(timings, key=timings.get)
        if not steps:
            remaining = args.seconds - (time.perf_counter() - started) - 40  # compile, checks
            steps = max(chunk_steps, int(remaining / timings[chunk_steps]))
            print(f"{len(members)} models at batch {batch}: --steps {steps}", flush=True)
    steps = math.ceil(steps / (args.checkpoints * chunk_steps)) * args.checkpoints * chunk_steps
    chunk = make_chunk(chunk_steps)
    states = fresh_states()
    validation_sets = [validation_set(m.seed) for m in members]
    best = [math.inf] * len(members)
    history: dict = {
        "command": " ".join(sys.argv),
        "steps": steps,
        "batch": batch,
        "updates": steps * batch,
        "device": f"{jax.devices()[0]} ({jax.devices()[0].device_kind})",
        "jax": jax.__version__,
        "members": [{"name": m.name, **m.__dict__} for m in members],
        "train_groups": sorted({pseudonym(i.group) for i in train}),
        "validation_groups": sorted({pseudonym(i.group) for i in validation}),
        "train_images": len(train),
        "validation_images": len(validation),
        "pairs": len(pairs),
        "checkpoints": [],
    }
    per_checkpoint = steps // args.checkpoints
    train_started = time.perf_counter()
    for checkpoint in range(1, args.checkpoints + 1):
        losses = []
        for start in range(
            (checkpoint - 1) * per_checkpoint, checkpoint * per_checkpoint, chunk_steps
        ):
            states, loss = chunk(states, keys, start, steps, data)
            losses.append(loss)
        train_loss = np.mean(np.stack([np.asarray(x) for x in losses]), axis=0)
        record = {
            "checkpoint": checkpoint,
            "step": checkpoint * per_checkpoint,
            "seconds": round(time.perf_counter() - train_started, 1),
            "members": [],
        }
        for n, (member, state) in enumerate(zip(members, states, strict=True)):
            x_val, y_val = validation_sets[n]
            loss = float(val_loss(state[0], jnp.asarray(x_val), jnp.asarray(y_val)))
            lr = float(
                cosine(
                    np,
                    member.learning_rate,
                    args.final_learning_rate,
                    steps,
                    checkpoint * per_checkpoint,
                )
            )
            record["members"].append(
                {"name": member.name, "loss": float(train_loss[n]), "val_loss": loss, "lr": lr}
            )
            if loss < best[n]:
                best[n] = loss
                weights = {
                    f"{layer}/{part}": np.asarray(value)
                    for layer, parts in state[0].items()
                    for part, value in parts.items()
                }
                name = f"{member.name}.npz"
                np.savez(
                    args.out / name,
                    **weights,
                    member=member.name,
                    checkpoint=checkpoint,
                    val_loss=loss,
                )
        history["checkpoints"].append(record)
        history["wall_seconds"] = round(time.perf_counter() - started, 1)
        (args.out / "history.json").write_text(json.dumps(history, indent=1))
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
