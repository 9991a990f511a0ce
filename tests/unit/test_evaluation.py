"""Evaluation that would catch a network that has not learnt: planes, patients, a linear bar."""

from pathlib import Path

import numpy as np
import pytest

from dicomnode.imaging.degrade import Degradation
from dicomnode.training.corpus import CorpusImage, plane_of, pseudonym
from dicomnode.training.evaluate import (
    bootstrap_ci,
    cluster_bootstrap_ci,
    evaluate_image,
    standard_methods,
    summarize_rows,
)
from dicomnode.training.linear import fit_linear_filter


@pytest.mark.parametrize(
    ("orientation", "plane"),
    [
        ([1, 0, 0, 0, 1, 0], "axial"),
        ([1, 0, 0, 0, 0, -1], "coronal"),
        ([0, 1, 0, 0, 0, -1], "sagittal"),
        ([1, 0, 0, 0, 0.948, -0.317], "axial"),  # a gantry tilt of 18.5 degrees
        ([1, 0, 0, 0, 0.707, -0.707], "oblique"),
        (None, "unknown"),
    ],
)
def test_the_plane_comes_from_the_orientation(orientation, plane: str) -> None:
    assert plane_of(orientation) == plane


def test_patients_not_images_are_the_unit_of_the_cluster_interval() -> None:
    # Two patients, many near-identical images each: per image the mean looks certain, per
    # patient (two samples) it does not.
    values = np.array([1.0] * 20 + [-0.2] * 20) + np.random.default_rng(0).normal(0, 0.01, 40)
    clusters = ["a"] * 20 + ["b"] * 20
    image_low, image_high = bootstrap_ci(values)
    patient_low, patient_high = cluster_bootstrap_ci(values, clusters)
    assert image_high - image_low < 0.5 < patient_high - patient_low
    assert patient_low < 0 < patient_high  # two patients cannot show a gain
    assert np.isnan(cluster_bootstrap_ci(values, ["a"] * 40)[0])


def phantom(seed: int, group: str) -> CorpusImage:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (96, 96)).astype(np.float32)
    for _ in range(30):  # blocks of random intensity: edges at every scale
        r, c, h, w = rng.integers(0, 80, 4)
        values[r : r + h // 4 + 4, c : c + w // 4 + 4] += rng.uniform(50, 300)
    padding = np.zeros(values.shape, bool)
    return CorpusImage(
        path=Path(f"{group}.dcm"),
        frame=0,
        modality="MR",
        group=group,
        series=group,
        values=values,
        padding=padding,
        plane="axial",
    )


def test_a_fitted_linear_filter_beats_bicubic_and_rows_carry_plane_and_patient() -> None:
    degradation = Degradation(scale=2)
    linear = fit_linear_filter(
        [phantom(s, f"p{s}") for s in range(4)], degradation, size=7, samples=20_000
    )
    methods = standard_methods(2, model=None, linear={"MR": linear})
    tests = [phantom(10 + s, f"q{s}") for s in range(3)]
    rows = [row for image in tests for row in evaluate_image(image, 2, methods, degradation).rows]
    summary = summarize_rows(rows)
    assert summary["linear"]["gain_db_vs_bicubic"] > 0.2
    assert summary["linear"]["n_patients"] == 3
    assert set(summary["linear"]["by_modality_plane"]) == {"MR/axial"}
    assert {row.patient for row in rows} == {pseudonym(f"q{s}") for s in range(3)}
    assert summary["linear"]["worst_gain_db"] <= summary["linear"]["gain_db_vs_bicubic"]
