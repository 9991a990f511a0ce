"""SRCNN inference: tiling is seamless, the residual sits on bicubic, models load or say why."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from dicomnode.config import EnhanceSettings, Settings
from dicomnode.errors import ConfigError
from dicomnode.imaging.degrade import Degradation, resample
from dicomnode.imaging.enhance import PIXEL_REVISION, SrcnnMethod, enhance_stack
from dicomnode.imaging.metrics import self_check
from dicomnode.imaging.srcnn import (
    HALO,
    INPUT_RANGE,
    TILE_OVERLAP,
    ModelError,
    SrcnnRunner,
    build_srcnn,
    file_sha256,
    from_network,
    import_tensorflow,
    load_model,
    tiles_for,
)
from dicomnode.pipeline.methods import configured_methods, load_models, srcnn_runner
from dicomnode.registry import shipped_models_dir


@pytest.fixture(scope="module")
def model_x1():
    """Random weights everywhere (a fresh model's last layer is zero: it would hide seams)."""
    network = build_srcnn(1, seed=7)
    last = network.get_layer("conv3")
    rng = np.random.default_rng(7)
    last.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in last.get_weights()])
    return from_network(network)


def zero_residual(scale: int):
    """An untrained network: its residual branch outputs 0, so it returns its input."""
    return from_network(build_srcnn(scale, seed=3))


def stack(n: int, rows: int, cols: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, rows, cols), dtype=np.float32)


def test_overlap_covers_the_receptive_field() -> None:
    assert HALO == 6 and TILE_OVERLAP > HALO


def test_tiles_cover_every_pixel_once() -> None:
    covered = np.zeros((100, 75), int)
    for tile in tiles_for((100, 75), 32):
        covered[tile.write] += 1
    assert (covered == 1).all()


def test_tiled_output_equals_untiled(model_x1) -> None:
    images = stack(3, 101, 77)
    untiled = SrcnnRunner(model_x1).restore(images)
    tiled = SrcnnRunner(model_x1, tile=24).restore(images)
    assert np.abs(tiled - untiled).max() <= 1e-5


def test_tiled_output_equals_untiled_averaged_over_views(model_x1) -> None:
    """Each view of a non-square stack is tiled on its own grid (a quarter-turned view is
    W x H): still seamless."""
    images = stack(2, 61, 45)
    untiled = SrcnnRunner(model_x1).restore(images, views=8)
    tiled = SrcnnRunner(model_x1, tile=24).restore(images, views=8)
    assert np.abs(tiled - untiled).max() <= 1e-5


def test_averaged_over_eight_views_the_output_turns_with_the_image(model_x1) -> None:
    """A network trained on turned patches is nearly, not exactly, equivariant; averaged over
    the square's 8 symmetries it is exactly: how an image was stored no longer matters."""
    method = SrcnnMethod(SrcnnRunner(model_x1), views=8)
    plain = SrcnnMethod(SrcnnRunner(model_x1))
    images = stack(2, 40, 32)
    turned = np.ascontiguousarray(np.rot90(images, 1, axes=(1, 2)))
    expected = np.rot90(method(images), 1, axes=(1, 2))
    assert np.abs(method(turned) - expected).max() < 1e-5
    assert np.abs(plain(turned) - np.rot90(plain(images), 1, axes=(1, 2))).max() > 1e-3


def test_convolutions_run_at_full_float32_on_any_device() -> None:
    """TF32, a GPU's default, put the shipped models' outputs 3 HU from the CPU's: a GPU and a
    CPU worker would make other pixels under the same derived UIDs."""
    tf = import_tensorflow()
    assert tf.config.experimental.tensor_float_32_execution_enabled() is False


def test_the_views_are_part_of_the_method_version(model_x1) -> None:
    """The version goes into the derived UIDs: output averaged over views must not take the
    UIDs of the model's plain output."""
    runner = SrcnnRunner(model_x1)
    assert SrcnnMethod(runner).version == f"{model_x1.version}-r{PIXEL_REVISION}"
    assert SrcnnMethod(runner, views=8).version == f"{model_x1.version}-views8-r{PIXEL_REVISION}"


def test_scale_two_averages_the_network_over_views_of_the_bicubic_upsampling() -> None:
    """An untrained network returns its input in every view: the average is bicubic itself."""
    image = stack(1, 30, 20)[0]
    out = SrcnnRunner(zero_residual(2)).enhance(image, views=8)
    np.testing.assert_allclose(out, resample(image, (60, 40)), atol=1e-6)


def test_the_node_runs_srcnn_over_the_configured_views(tmp_path: Path, model_x1) -> None:
    model_x1.network.save(tmp_path / "srcnn-x1.keras")
    for views in (1, 4):
        settings = Settings(
            enhance=EnhanceSettings(model_dir=str(tmp_path), scale=1, srcnn_views=views)
        )
        (method,) = configured_methods(settings, "CT")
        assert isinstance(method, SrcnnMethod) and method.views == views


def test_by_default_all_eight_views_on_a_gpu_and_one_on_a_cpu(model_x1) -> None:
    """On a GPU the 8 passes cost milliseconds a slice; on a CPU they would make a job ~3x
    longer, so the default (0, auto) takes one there."""
    assert EnhanceSettings().srcnn_views == 0
    assert SrcnnMethod(SrcnnRunner(model_x1, device="/CPU:0"), views=0).views == 1
    on_gpu = SrcnnMethod(SrcnnRunner(model_x1, device="/GPU:0"), views=0)
    assert on_gpu.views == 8 and on_gpu.version.endswith(f"-views8-r{PIXEL_REVISION}")
    assert SrcnnMethod(SrcnnRunner(model_x1, device="/GPU:0"), views=2).views == 2


def test_a_view_count_that_is_no_group_is_refused_when_the_method_is_built(model_x1) -> None:
    with pytest.raises(ValueError, match=r"views must be one of \(1, 2, 4, 8\) or 0 \(auto\)"):
        SrcnnMethod(SrcnnRunner(model_x1), views=3)


def test_a_small_memory_budget_tiles_instead_of_failing(model_x1) -> None:
    images = stack(2, 160, 160)
    untiled = SrcnnRunner(model_x1).restore(images)
    small = SrcnnRunner(model_x1, memory_budget=64 * 64 * 800)  # smaller than one image
    assert np.abs(small.restore(images) - untiled).max() <= 1e-5


def test_scale_two_is_a_residual_over_bicubic() -> None:
    image = stack(1, 30, 20)[0]
    out = SrcnnRunner(zero_residual(2)).enhance(image)
    assert out.shape == (60, 40)
    np.testing.assert_allclose(out, resample(image, (60, 40)), atol=1e-6)


def test_runner_reports_the_device_it_chose(model_x1) -> None:
    runner = SrcnnRunner(model_x1)
    assert runner.device in ("/CPU:0", "/GPU:0")
    assert runner.device_description.startswith(runner.device[1:4])


def test_saved_model_loads_with_its_hash_and_scale(tmp_path: Path, model_x1) -> None:
    path = tmp_path / "srcnn-x1.keras"
    model_x1.network.save(path)
    loaded = load_model(path)
    assert loaded.scale == 1 and loaded.sha256 == file_sha256(path)
    assert loaded.version == f"srcnn-x1-{loaded.sha256[:12]}"
    images = stack(1, 40, 40)
    np.testing.assert_array_equal(
        SrcnnRunner(loaded).restore(images), SrcnnRunner(model_x1).restore(images)
    )


def test_missing_or_foreign_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.keras: model file not found"):
        load_model(tmp_path / "nope.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"junk\.keras: is not a \.keras model archive"):
        load_model(junk)
    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ModelError, match=r"foreign\.keras: is not a Keras 3 model archive"):
        load_model(foreign)
    with zipfile.ZipFile(foreign, "a") as archive:
        archive.writestr("model.weights.h5", b"not HDF5")
    with pytest.raises(ModelError, match=r"foreign\.keras: is not a Keras 3 model archive: its"):
        load_model(foreign)
    # What the archive shows is the 9-1-5's; only Keras finds that its weights are none.
    with zipfile.ZipFile(shipped_models_dir() / "srcnn-x1.keras") as shipped:
        config = shipped.read("config.json")
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("config.json", config)
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(1000))
    with pytest.raises(ModelError, match=r"foreign\.keras: cannot load the model: "):
        load_model(foreign)


def test_a_network_that_is_not_9_1_5_is_refused() -> None:
    import keras

    inputs = keras.Input((None, None, 1))
    other = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs), name="srcnn_x1")
    with pytest.raises(ModelError, match="expected SRCNN layers"):
        from_network(other)


def test_self_check_of_bicubic_itself_gains_nothing() -> None:
    ct = np.random.default_rng(2).normal(40, 200, (64, 64)).astype(np.float32)
    method = SrcnnMethod(SrcnnRunner(zero_residual(2)))

    def restore(low: np.ndarray) -> np.ndarray:
        return enhance_stack(low[None], "CT", method).values[0]

    check = self_check(ct, restore, Degradation(scale=2))
    assert check.gain_db == pytest.approx(0.0, abs=1e-3)


def test_self_check_scores_nearest_neighbour_below_bicubic() -> None:
    yy, xx = np.mgrid[:64, :64]
    image = (np.sin(xx / 3.0) * np.cos(yy / 4.0) * 500).astype(np.float32)

    def nearest(low: np.ndarray) -> np.ndarray:
        return np.kron(low, np.ones((2, 2), np.float32))

    assert self_check(image, nearest, Degradation(scale=2)).gain_db < -1.0


def test_borders_are_mirrored_so_no_frame_is_drawn(model_x1) -> None:
    # A network that sees only its own mirror image at the border treats a border pixel like
    # an inner one: on a flat image every output pixel is the same.
    flat = np.full((1, 40, 50), 0.3, np.float32)
    out = SrcnnRunner(model_x1).restore(flat)
    assert np.ptp(out) < 1e-5
    # Mirrored, the border of a real image matches what a larger image would give there.
    big = stack(1, 80, 79)
    big = (big + np.flip(big, axis=2)) / 2  # mirror-symmetric about its middle column, 39
    half = np.ascontiguousarray(big[:, :, :40])  # cut there: mirrored, it is `big` again
    runner = SrcnnRunner(model_x1)
    assert np.abs(runner.restore(half)[..., -1] - runner.restore(big)[..., 39]).max() < 1e-4


def test_a_pixel_far_beyond_the_working_range_is_given_at_its_edge(model_x1) -> None:
    """A few dead detector pixels 22 units below the range (an Elekta portal image) made their
    neighbours ring: the generic x2 model lost 4.9 dB there. Given at the edge of INPUT_RANGE,
    they change their surroundings as a pixel at that edge does, and keep their own offset."""
    image = 0.5 + 0.1 * stack(1, 48, 48)
    dead = image.copy()
    dead[0, 20, 20] = dead[0, 30, 25] = -22.0
    edge = np.where(dead == -22.0, INPUT_RANGE[0], dead).astype(np.float32)
    runner = SrcnnRunner(model_x1)
    out_dead, out_edge = runner.restore(dead), runner.restore(edge)
    assert np.abs((out_dead - dead) - (out_edge - edge)).max() < 1e-5
    bright = np.where(dead == -22.0, 1e4, dead).astype(np.float32)  # and above it alike
    top = np.where(dead == -22.0, INPUT_RANGE[1], dead).astype(np.float32)
    assert np.abs((runner.restore(bright) - bright) - (runner.restore(top) - top)).max() < 1e-3


def test_ct_padding_is_filled_before_the_method_sees_it(model_x1) -> None:
    image = np.full((1, 64, 64), 40.0, np.float32)
    padding = np.zeros_like(image, bool)
    padding[:, :, :16] = True  # outside the reconstruction circle
    stored = np.where(padding, -3024.0, image).astype(np.float32)
    air = np.where(padding, -1024.0, image).astype(np.float32)
    method = SrcnnMethod(SrcnnRunner(model_x1))
    with_padding = enhance_stack(stored, "CT", method, padding=padding).values
    filled = enhance_stack(air, "CT", method, padding=padding).values
    # the -3024 HU step never reaches the real pixels beside it
    assert np.abs(with_padding - filled)[~padding].max() < 1e-3


def test_a_node_warms_up_each_model_it_loads_once(tmp_path: Path, model_x1) -> None:
    """`load_models` (a node's start) runs each model it loads through one full batch, so the
    first job does not pay for tracing the network; a model loaded before is not run again."""
    model_x1.network.save(tmp_path / "srcnn-x1.keras")
    settings = Settings(enhance=EnhanceSettings(model_dir=str(tmp_path), scale=1))
    assert load_models(settings) == len(settings.enhance.modalities)  # one file for all
    runner = srcnn_runner(tmp_path / "srcnn-x1.keras")
    assert runner._forward.experimental_get_tracing_count() == 1
    calls = []
    runner.warm_up = lambda *shape: calls.append(shape)  # type: ignore[method-assign]
    load_models(settings)
    assert calls == []


def test_a_model_that_loads_but_cannot_run_is_named_and_not_kept(
    tmp_path: Path, model_x1, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the warm-up (on a real device: out of memory, a missing kernel) is a
    ConfigError naming the file, not a traceback; the model is not cached, so the node's next
    try (`ModelLoading`) loads and warms it up again rather than take it as loaded."""
    model_x1.network.save(tmp_path / "srcnn-x1.keras")
    settings = Settings(enhance=EnhanceSettings(model_dir=str(tmp_path), scale=1))

    def fails(self: SrcnnRunner, shape: tuple[int, int] = (512, 512)) -> None:
        raise RuntimeError("OOM when allocating tensor\nwith shape [10,524,524,64]")

    monkeypatch.setattr(SrcnnRunner, "warm_up", fails)
    with pytest.raises(ConfigError) as raised:
        load_models(settings)
    assert str(raised.value) == (
        f"setting enhance.methods: {tmp_path / 'srcnn-x1.keras'} loads but cannot run: "
        "OOM when allocating tensor"
    )
    with pytest.raises(ConfigError):
        load_models(settings)  # tried again, not taken from the cache


def test_a_try_that_failed_warms_up_every_model_it_left_cold_at_the_next(
    tmp_path: Path, model_x1, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CT's own model and the one for the other modalities: when the first warm-up fails,
    the other was loaded but never warmed, and the next try took it for warmed (so a model
    out of device memory was declared loaded)."""
    model_x1.network.save(tmp_path / "srcnn-x1.keras")
    model_x1.network.save(tmp_path / "srcnn-ct-x1.keras")
    settings = Settings(enhance=EnhanceSettings(model_dir=str(tmp_path), scale=1))
    warmed: list[SrcnnRunner] = []
    out_of_memory = [RuntimeError("OOM when allocating tensor")]

    def warm_up(self: SrcnnRunner, shape: tuple[int, int] = (512, 512)) -> None:
        if out_of_memory:
            raise out_of_memory.pop()
        warmed.append(self)

    monkeypatch.setattr(SrcnnRunner, "warm_up", warm_up)
    with pytest.raises(ConfigError, match="loads but cannot run"):
        load_models(settings)
    assert load_models(settings) == len(settings.enhance.modalities)
    assert len(warmed) == 2  # the one that failed, loaded again, and the one left cold
    load_models(settings)
    assert len(warmed) == 2
