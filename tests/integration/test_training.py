"""Training and evaluation on real series: a leak-free split, determinism, an honest ranking."""

import json
from pathlib import Path

import numpy as np
import pytest

from dicomnode.imaging.degrade import Degradation
from dicomnode.imaging.srcnn import load_model
from dicomnode.registry import MODELS_DIR
from dicomnode.training.corpus import load_images, split_by_group
from dicomnode.training.evaluate import evaluate_image, standard_methods, summarize_rows
from dicomnode.training.pairs import PatchSampler, make_pair
from dicomnode.training.train import TrainingSettings, train_srcnn
from tests.support.cli import dicomnode
from tests.support.series import SHARED_DATA

CT_TRAIN = SHARED_DATA / "ct-chest" / "train"
CT_TEST = SHARED_DATA / "ct-chest" / "test"
MR_TRAIN = SHARED_DATA / "mr-brain-t1" / "train"


@pytest.fixture(scope="module")
def ct_train_images():
    return load_images([CT_TRAIN])


def test_split_never_puts_a_patient_on_both_sides(ct_train_images) -> None:
    images = ct_train_images + load_images([MR_TRAIN])
    train, validation = split_by_group(images, 0.2, seed=1)
    assert {i.group for i in train}.isdisjoint({i.group for i in validation})
    assert len(train) + len(validation) == len(images)
    ct_groups = {i.group for i in validation if i.modality == "CT"}
    assert 1 <= len(ct_groups) <= 2  # 20 % of 7 patients
    # The single MR subject cannot be split without leaking: it all trains.
    assert all(i.modality == "CT" for i in validation)


def test_same_seed_same_model_and_metrics(tmp_path: Path, ct_train_images) -> None:
    images = [
        i for i in ct_train_images if i.group in sorted({j.group for j in ct_train_images})[:3]
    ]
    settings = TrainingSettings(
        scale=2, updates=256, epochs=2, seed=5, patch_size=32, validation_patches=32
    )
    first = train_srcnn(images, tmp_path / "a" / "srcnn-x2.keras", settings)
    second = train_srcnn(images, tmp_path / "b" / "srcnn-x2.keras", settings)
    assert first.best_validation_loss == second.best_validation_loss
    weights_a = load_model(Path(first.model)).network.get_weights()
    weights_b = load_model(Path(second.model)).network.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))
    assert (tmp_path / "a" / "srcnn-x2.loss.png").stat().st_size > 1000
    history = json.loads((tmp_path / "a" / "srcnn-x2.history.json").read_text())
    assert len(history["history"]["val_loss"]) == first.epochs_run == 2
    # the record: steps and updates as asked, a cosine learning rate falling to its floor,
    # and pseudonymous groups only (no PatientID in a file that ships)
    assert (first.steps, first.updates) == (8, 256)
    rates = history["history"]["lr"]
    assert rates[0] > rates[1] and rates[1] == pytest.approx(settings.final_learning_rate)
    patient_ids = {i.group for i in images}
    assert not patient_ids & set(first.train_groups + first.validation_groups)


def test_patches_are_fresh_and_turned_every_batch(ct_train_images) -> None:
    pairs = [make_pair(i, Degradation(1)) for i in ct_train_images[:2]]
    sampler = PatchSampler(pairs, 32, 8, seed=3, noise_factor=1.5)
    first, again, other = sampler.batch(0), sampler.batch(0), sampler.batch(1)
    assert np.array_equal(first[0], again[0])  # reproducible from the seed and index
    assert not np.array_equal(first[1], other[1])  # a new batch, new patches
    # input noise at scale 1: the same patches, with noise on the input only
    plain = PatchSampler(pairs, 32, 8, seed=3).batch(0)
    assert np.array_equal(first[1], plain[1])
    assert np.std(first[0] - first[1]) > np.std(plain[0] - plain[1])


def test_evaluation_ranks_nearest_neighbour_below_bicubic() -> None:
    # Axial slices: the shared coronal/sagittal reformats are built from thick slices, blocky
    # along one axis, which nearest-neighbour happens to reproduce well.
    images = load_images(sorted(CT_TEST.glob("*/axial-*.dcm")))[:4]
    methods = standard_methods(2, model=None, include_nearest=True)
    rows = [
        row for image in images for row in evaluate_image(image, 2, methods, Degradation(2)).rows
    ]
    summary = summarize_rows(rows)
    assert summary["bicubic"]["gain_db_vs_bicubic"] == 0.0
    assert summary["nearest"]["gain_db_vs_bicubic"] < -1.0
    assert summary["nearest"]["gain_ci95"][1] < 0
    assert summary["nearest"]["ssim_mean"] < summary["bicubic"]["ssim_mean"]


@pytest.mark.skipif(not (MODELS_DIR / "srcnn-x2.keras").exists(), reason="no shipped x2 model")
def test_evaluate_command_writes_the_files_and_json(tmp_path: Path) -> None:
    result = dicomnode(
        "evaluate",
        str(CT_TEST / "A072894"),
        "--scale",
        "2",
        "--out",
        str(tmp_path),
        "--json",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    for method in ("bicubic", "baseline", "srcnn"):
        entry = data["methods"][method]
        assert {"psnr_mean", "ssim_mean", "gain_db_vs_bicubic", "n_images"} <= entry.keys()
        assert len(entry["gain_ci95"]) == 2
    assert data["methods"]["srcnn"]["gain_db_vs_bicubic"] > 0
    for name in ("metrics_per_image.csv", "metrics_summary.csv", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 100
