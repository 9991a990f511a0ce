"""Training and evaluation on real series: a leak-free split, determinism, an honest ranking.

Tiny runs on the real slices the repository holds (tests/data): three CT patients (chest, abdomen,
head; three vendors) and one MR subject. Real training uses a corpus such as ../shared/data.
"""

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomnode.imaging.degrade import Degradation
from dicomnode.imaging.srcnn import load_model
from dicomnode.registry import MODELS_DIR
from dicomnode.training.corpus import load_images, split_by_group
from dicomnode.training.evaluate import evaluate_image, standard_methods, summarize_rows
from dicomnode.training.pairs import PatchSampler, make_pair
from dicomnode.training.train import (
    SCALE_1_RECIPE,
    TrainingSettings,
    partial_model_path,
    train_srcnn,
)
from tests.support.cli import dicomnode
from tests.support.data import CT_BODY, CT_CHEST, CT_FOLDERS, CT_HEAD_GE, MR_T1


def _unboxed(said: str) -> str:
    """A CLI error without the box rich draws round it, nor any space (it wraps anywhere)."""
    return re.sub(r"[\s│]", "", said)


@pytest.fixture(scope="module")
def ct_train_images():
    return load_images(list(CT_FOLDERS))


def test_split_never_puts_a_patient_on_both_sides(ct_train_images) -> None:
    images = ct_train_images + load_images([MR_T1])
    train, validation = split_by_group(images, 0.2, seed=1)
    assert {i.group for i in train}.isdisjoint({i.group for i in validation})
    assert len(train) + len(validation) == len(images)
    assert len({i.group for i in ct_train_images}) == 3
    ct_groups = {i.group for i in validation if i.modality == "CT"}
    assert len(ct_groups) == 1  # 20 % of 3 patients, at least one
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


def test_undegraded_patches_have_the_target_as_input(ct_train_images) -> None:
    pairs = [make_pair(i, Degradation(1)) for i in ct_train_images[:2]]
    plain_in, plain_out = PatchSampler(pairs, 32, 16, seed=5, noise_factor=1.5).batch(0)
    mixed_in, mixed_out = PatchSampler(
        pairs, 32, 16, seed=5, noise_factor=1.5, clean_fraction=0.5
    ).batch(0)
    assert np.array_equal(mixed_out, plain_out)  # the same patches, only some inputs differ
    clean = [n for n in range(16) if np.array_equal(mixed_in[n], mixed_out[n])]
    assert 0 < len(clean) < 16  # about half
    degraded = [n for n in range(16) if n not in clean]
    # the others are degraded: blurred (and noisy), not the target
    assert all(np.abs(mixed_in[n] - mixed_out[n]).max() > 1e-3 for n in degraded)
    assert not any(np.array_equal(plain_in[n], plain_out[n]) for n in range(16))


def test_fainter_patches_are_the_same_pairs_scaled_about_their_mean(ct_train_images) -> None:
    pairs = [make_pair(i, Degradation(2)) for i in ct_train_images[:2]]
    plain_in, plain_out = PatchSampler(pairs, 32, 16, seed=4).batch(0)
    faint_in, faint_out = PatchSampler(pairs, 32, 16, seed=4, contrast_min=0.1).batch(0)
    gains = []
    for n in range(16):
        centre = plain_out[n].mean()
        if np.std(plain_out[n]) == 0:  # a flat patch (air) stays flat either way
            assert faint_out[n] == pytest.approx(plain_out[n], abs=1e-6)
            continue
        gain = np.std(faint_out[n]) / np.std(plain_out[n])
        # input and target alike: still a true pair of the (linear) degradation
        assert faint_out[n] == pytest.approx(centre + gain * (plain_out[n] - centre), abs=1e-5)
        assert faint_in[n] == pytest.approx(centre + gain * (plain_in[n] - centre), abs=1e-5)
        gains.append(gain)
    assert min(gains) >= 0.1 - 1e-6 and max(gains) <= 1 + 1e-6
    assert 0 < sum(g < 0.999 for g in gains) < 16  # about half of them, the rest as they were


def test_softened_pairs_hold_less_fine_detail(ct_train_images) -> None:
    image = ct_train_images[0]
    sharp = make_pair(image, Degradation(2))
    soft = make_pair(image, Degradation(2), soften=1.2)
    detail = lambda a: float(np.var(np.diff(a, axis=0)) + np.var(np.diff(a, axis=1)))  # noqa: E731
    assert detail(soft.target) < 0.5 * detail(sharp.target)
    assert detail(soft.net_input) < detail(sharp.net_input)  # degraded from the softer image
    assert soft.target.mean() == pytest.approx(sharp.target.mean(), abs=1e-3)


def test_evaluation_ranks_nearest_neighbour_below_bicubic() -> None:
    # Axial slices: the coronal/sagittal reformats are built from thick slices, blocky along one
    # axis, which nearest-neighbour happens to reproduce well.
    images = [i for i in load_images(list(CT_FOLDERS)) if i.plane == "axial"]
    assert len(images) == 6
    methods = standard_methods(2, model=None, include_nearest=True)
    rows = [
        row for image in images for row in evaluate_image(image, 2, methods, Degradation(2)).rows
    ]
    summary = summarize_rows(rows)
    assert summary["bicubic"]["gain_db_vs_bicubic"] == 0.0
    assert summary["nearest"]["gain_db_vs_bicubic"] < -1.0
    assert summary["nearest"]["gain_ci95"][1] < 0
    assert summary["nearest"]["ssim_mean"] < summary["bicubic"]["ssim_mean"]


def test_evaluate_command_writes_the_files_and_json(tmp_path: Path) -> None:
    result = dicomnode(
        "evaluate",
        str(CT_CHEST),
        "--scale",
        "2",
        "--out",
        str(tmp_path),
        "--json",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = _strict_json(result.stdout)  # NaN is no JSON: JavaScript and jq refused it
    assert _strict_json((tmp_path / "summary.json").read_text()) == data
    # one patient: no interval over patients (null, where it was NaN)
    assert data["methods"]["srcnn"]["gain_ci95_by_patient"] in (None, [None, None])
    for method in ("bicubic", "baseline", "srcnn"):
        entry = data["methods"][method]
        assert {"psnr_mean", "ssim_mean", "gain_db_vs_bicubic", "n_images"} <= entry.keys()
        assert len(entry["gain_ci95"]) == 2
    assert data["methods"]["srcnn"]["gain_db_vs_bicubic"] > 0
    assert data["evaluated"] == [str(CT_CHEST)] and data["linear_fitted_on"] == []
    for name in ("metrics_per_image.csv", "metrics_summary.csv", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 100


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_refuses_a_linear_filter_without_the_evaluated_modality(tmp_path: Path) -> None:
    """`--linear-from a b` takes only `a` (b becomes data): a clear refusal, not a traceback."""
    result = dicomnode(
        "evaluate",
        *(str(CT_HEAD_GE), str(MR_T1)),
        *("--linear-from", str(CT_BODY), "--out", str(tmp_path)),
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    said = _unboxed(result.stderr)
    assert "noMRimagesin" in said and "--linear-from" in said
    assert not (tmp_path / "metrics_per_image.csv").exists()


def test_train_command_runs_from_a_clone_on_the_repository_slices(tmp_path: Path) -> None:
    """The README's example: a quick run on tests/data (real training uses a corpus)."""
    out = tmp_path / "srcnn-ct-x1.keras"
    folders = [str(CT_CHEST), str(CT_BODY), str(CT_HEAD_GE)]
    result = dicomnode(
        "train",
        *folders,
        *("--modality", "CT", "--scale", "1", "--updates", "1000", "--epochs", "2"),
        *("--out", str(out)),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_model(out).scale == 1
    report = json.loads((tmp_path / "srcnn-ct-x1.history.json").read_text())["report"]
    assert (report["train_images"], report["validation_images"]) in {(6, 1), (4, 3)}
    # the shipped x1 models' recipe, not x2's (softened and fainter copies: a x1 model that
    # sharpened real CT 5.7x)
    recipe = {key: report["settings"][key] for key in SCALE_1_RECIPE}
    assert recipe == {"soften_sigmas": [0.0], "contrast_min": 1.0, "clean_fraction": 0.25}
    groups = report["train_groups"] + report["validation_groups"]
    assert len(groups) == 3 and all(re.fullmatch(r"[0-9a-f]{12}", g) for g in groups)
    assert (tmp_path / "srcnn-ct-x1.loss.png").stat().st_size > 1000


def test_train_refuses_to_replace_a_model_without_force(tmp_path: Path) -> None:
    """Without --out, `train` writes the model the node uses: an admin trying the command
    replaced the shipped one at the first checkpoint of the run."""
    out = tmp_path / "models" / "srcnn-ct-x1.keras"
    out.parent.mkdir()
    out.write_bytes(b"the node's model")
    config = tmp_path / "dicomnode.toml"
    config.write_text(f'[enhance]\nmodel_dir = "{out.parent}"\n')
    args = ("train", str(CT_BODY), "--modality", "CT", "--scale", "1", "--updates", "1000")
    refused = dicomnode(*args, "--epochs", "1", "--config", str(config), timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    said = _unboxed(refused.stderr)
    assert f"{out}exists" in said and "--force" in said
    assert out.read_bytes() == b"the node's model"
    elsewhere = dicomnode(*args, "--out", str(tmp_path / "model.h5"), timeout=300)
    assert elsewhere.returncode == 2
    assert "endsin.keras" in _unboxed(elsewhere.stderr)

    forced = dicomnode(*args, "--epochs", "1", "--config", str(config), "--force", timeout=600)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert load_model(out).scale == 1
    assert not partial_model_path(out).exists()  # the run's model replaced it whole


def test_shipped_training_histories_name_no_patient() -> None:
    histories = sorted(MODELS_DIR.glob("*.history.json"))
    assert histories
    for path in histories:
        report = json.loads(path.read_text())["report"]
        groups = report["train_groups"] + report["validation_groups"]
        assert groups and all(re.fullmatch(r"[0-9a-f]{12}", g) for g in groups), path.name


def test_train_and_evaluate_refuse_what_they_cannot_use_in_one_line_before_the_work(
    tmp_path: Path,
) -> None:
    """A researcher's mistakes, each one `error:` line and no traceback: before, a modality
    the data lacks and a model of another scale ended in a traceback, an unwritable --out
    only after the training, and a damaged image was left out of the scores unsaid."""
    no_mr = dicomnode(
        "train", str(CT_HEAD_GE), "--modality", "MR", "--updates", "1000", "--epochs", "1",
        "--out", str(tmp_path / "mr.keras"), timeout=300,
    )  # fmt: skip
    assert no_mr.returncode == 1 and "Traceback" not in no_mr.stderr
    assert "error: no MR image among the training data (found: CT)" in no_mr.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    nowhere = dicomnode(
        "train", str(CT_HEAD_GE), "--updates", "1000", "--epochs", "1",
        "--out", str(blocked / "model.keras"), timeout=300,
    )  # fmt: skip
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    assert f"error: operating system error {blocked}: exists and is not a folder" in (
        nowhere.stderr
    )
    assert "epoch" not in nowhere.stdout  # refused before it trained
    data = tmp_path / "data"
    data.mkdir()
    for source in sorted(CT_HEAD_GE.glob("*.dcm"))[:2]:
        (data / source.name).write_bytes(source.read_bytes())
    (data / "cut.dcm").write_bytes((sorted(CT_HEAD_GE.glob("*.dcm"))[0]).read_bytes()[:3000])
    other_scale = dicomnode(
        "evaluate", str(data), "--out", str(tmp_path / "ev"),
        "--model", str(MODELS_DIR / "srcnn-ct-x2.keras"), timeout=300,
    )  # fmt: skip
    assert other_scale.returncode == 1 and "Traceback" not in other_scale.stderr
    assert (
        f"error: {MODELS_DIR / 'srcnn-ct-x2.keras'}: holds a x2 model, not the x1 evaluated "
        "(--scale 1)"
    ) in other_scale.stderr
    assert f"skipped file={data / 'cut.dcm'} reason=" in other_scale.stderr
