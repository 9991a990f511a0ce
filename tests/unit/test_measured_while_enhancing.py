"""A job measures and writes each image while SRCNN runs the next batch (issue 16): cutting the
series into stacks of one forward pass each must not change a bit of the outputs, or a number of
the job."""

import json
import threading
import time
from pathlib import Path
from typing import Any

import highdicom
import numpy as np
import pytest
from pydicom import dcmread

from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.errors import ImageDeclined
from dicomnode.imaging import metrics
from dicomnode.imaging.enhance import Method, SrcnnMethod, revised
from dicomnode.imaging.metrics import RestoredForSelfCheck
from dicomnode.imaging.srcnn import BYTES_PER_PIXEL, HALO, SrcnnRunner, build_srcnn, from_network
from dicomnode.pipeline import derived_output, enhancement, scoring
from dicomnode.pipeline.derived_output import EncodedInstance
from dicomnode.pipeline.enhancement import enhance_series
from dicomnode.pipeline.offline import file_sink, series_in
from tests.integration.test_details_json import write_fixed_series

SIDE = 128  # CT_small, the images of `write_fixed_series`


def small_batch_runner(images_per_pass: int) -> SrcnnRunner:
    """A network with random weights in every layer, on a memory budget of a few 128² images."""
    network = build_srcnn(1, seed=5)
    rng = np.random.default_rng(5)
    last = network.get_layer("conv3")
    last.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in last.get_weights()])
    padded = (SIDE + 2 * HALO) ** 2
    budget = int((images_per_pass + 0.5) * padded * BYTES_PER_PIXEL)
    return SrcnnRunner(from_network(network), memory_budget=budget)


class Counted(SrcnnMethod):
    """SRCNN that records how many images each call was given."""

    def __init__(self, runner: SrcnnRunner) -> None:
        super().__init__(runner)
        self.calls: list[int] = []

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        self.calls.append(len(stack))
        return super().__call__(stack)


class WholeSeries:
    """The same runner behind a method the job does not know to batch: one call per series."""

    def __init__(self, runner: SrcnnRunner) -> None:
        self.runner = runner
        self.name, self.scale = "srcnn", runner.model.scale
        self.version, self.model_sha256 = revised(runner.model.version), runner.model.sha256
        self.device = runner.device_description
        self.calls: list[int] = []

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        self.calls.append(len(stack))
        return self.runner.enhance(stack)


@pytest.fixture(scope="module")
def runner() -> SrcnnRunner:
    return small_batch_runner(2)


@pytest.mark.parametrize("views", [1, 8])
def test_stacks_of_one_pass_give_the_bits_of_one_call(runner: SrcnnRunner, views: int) -> None:
    assert runner.images_per_pass((SIDE, SIDE)) == 2
    stack = np.random.default_rng(1).random((7, SIDE, SIDE), dtype=np.float32)
    whole = runner.enhance(stack, views=views)
    parts = [runner.enhance(stack[i : i + 2], views=views) for i in range(0, 7, 2)]
    assert np.array_equal(whole, np.concatenate(parts))


def without_timings(output: enhancement.SeriesOutput) -> dict[str, Any]:
    """A job's details, less the seconds its stages took."""
    details: dict[str, Any] = json.loads(json.dumps(output.outcome.as_dict()))
    details.pop("load_s")
    for entry in details["methods"]:
        entry.pop("timings")
    return details


def job_details(series: Path, out: Path, method: Method) -> dict[str, Any]:
    """The job's details for `series` with `method` as its only method, less the timings."""
    ((_, inputs),) = series_in(series).items()
    return without_timings(
        enhance_series(1, inputs, Settings(), lambda modality: [method], file_sink(out))
    )


def test_a_job_measured_batch_by_batch_reports_what_one_call_gives(
    tmp_path: Path, runner: SrcnnRunner
) -> None:
    write_fixed_series(tmp_path / "in", count=8)  # 7 images enhanced, the last one declined
    batched, whole = Counted(runner), WholeSeries(runner)
    by_batch = job_details(tmp_path / "in", tmp_path / "batched", batched)
    in_one_call = job_details(tmp_path / "in", tmp_path / "whole", whole)
    # The self-check's degraded copies first (its gains go into the derived images), then the
    # series a forward pass at a time, while the finished images are scored and written.
    assert batched.calls == [7, 2, 2, 2, 1]
    assert whole.calls == [7, 7]
    assert by_batch == in_one_call
    (method,) = by_batch["methods"]
    assert method["images"] == 7 and method["self_check_images"] == 7


def test_sources_measured_ahead_give_the_job_what_it_measures_itself(
    tmp_path: Path, runner: SrcnnRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker prepares the self-check and measures the sources while the originals have their
    head start (`LoadedSeries.measure_ahead`): the job then degrades and measures nothing
    itself, and its details are those it gives when it does it all."""
    write_fixed_series(tmp_path / "in", count=8)  # 7 images enhanced, the last one declined
    ((_, inputs),) = series_in(tmp_path / "in").items()
    settings, method = Settings(), Counted(runner)
    stopped, not_yet = threading.Event(), threading.Event()
    stopped.set()

    loaded = enhancement.load_series(inputs, settings)
    assert loaded.measure_ahead(settings, until=stopped) == 0  # the head start is over
    assert loaded.measure_ahead(settings, until=not_yet) == 7
    assert loaded.measure_ahead(settings, until=not_yet) == 0  # each is measured once

    measured_in_the_job: list[str] = []
    for module, name, what in [
        (scoring, "scored_source", "qa"),
        (metrics, "degrade", "degraded"),
        (metrics, "bicubic_restore", "bicubic"),
    ]:
        real = getattr(module, name)
        monkeypatch.setattr(
            module,
            name,
            lambda *a, real=real, what=what: measured_in_the_job.append(what) or real(*a),
        )
    sink = file_sink(tmp_path / "ahead")
    ahead = enhance_series(1, inputs, settings, lambda modality: [method], sink, loaded)
    assert measured_in_the_job == []
    in_the_job = job_details(tmp_path / "in", tmp_path / "in-the-job", method)
    assert without_timings(ahead) == in_the_job
    assert sorted(measured_in_the_job) == ["bicubic"] * 7 + ["degraded"] * 7 + ["qa"] * 7


def test_work_ahead_that_fails_is_left_to_the_job(
    tmp_path: Path, runner: SrcnnRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What raises while a worker measures ahead does not fail the job there: the job does that
    work again itself (where it fails, if it fails again, as it always did)."""
    write_fixed_series(tmp_path / "in", count=8)
    ((_, inputs),) = series_in(tmp_path / "in").items()
    settings, method = Settings(), Counted(runner)
    loaded = enhancement.load_series(inputs, settings)

    def fails_once(real: Any) -> Any:
        failed: list[bool] = []

        def once(*args: Any) -> Any:
            if not failed:
                failed.append(True)
                raise MemoryError("for the test")
            return real(*args)

        return once

    monkeypatch.setattr(scoring, "scored_source", fails_once(scoring.scored_source))
    monkeypatch.setattr(metrics, "degrade", fails_once(metrics.degrade))
    assert loaded.measure_ahead(settings, until=threading.Event()) == 0
    sink = file_sink(tmp_path / "ahead")
    ahead = enhance_series(1, inputs, settings, lambda modality: [method], sink, loaded)
    in_the_job = job_details(tmp_path / "in", tmp_path / "in-the-job", method)
    assert without_timings(ahead) == in_the_job


def test_a_self_check_that_cannot_be_scored_ends_the_job_before_the_series_is_enhanced(
    tmp_path: Path, runner: SrcnnRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The self-check is scored beside the enhancement; when its scoring fails, the job fails
    with that error, once, and the series is not enhanced to the end first (its outputs would
    all be held by the error meanwhile)."""

    def unscorable(self: RestoredForSelfCheck) -> list[Any]:
        raise ValueError("the self-check cannot be scored")

    monkeypatch.setattr(RestoredForSelfCheck, "scored", unscorable)
    write_fixed_series(tmp_path / "in", count=12)  # 11 images, 6 forward passes of 2
    method = Counted(runner)
    with pytest.raises(ValueError, match="the self-check cannot be scored"):
        job_details(tmp_path / "in", tmp_path / "out", method)
    assert method.calls[0] == 11  # the self-check's restoration
    assert len(method.calls) < 1 + 6
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class WaitsAtTheLastPass(Counted):
    """SRCNN whose last forward pass waits (a few seconds at most) until a derived image has
    been stored, and records whether one was."""

    def __init__(self, runner: SrcnnRunner, passes: int, stored: threading.Event) -> None:
        super().__init__(runner)
        self.passes, self.stored = passes, stored
        self.stored_before_the_last_pass: bool | None = None

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        if len(self.calls) == self.passes:  # the self-check's call, then every pass but one
            self.stored_before_the_last_pass = self.stored.wait(timeout=5)
        return super().__call__(stack)


class Signalling:
    """A folder sink that sets `stored` after each file it stores."""

    def __init__(self, out: Path) -> None:
        self.sink, self.stored = file_sink(out), threading.Event()

    def __call__(self, instance: EncodedInstance) -> SpooledInstance:
        spooled = self.sink(instance)
        self.stored.set()
        return spooled

    def holds(self, instance: EncodedInstance) -> bool:
        return self.sink.holds(instance)


def test_each_derived_image_is_stored_while_later_ones_are_enhanced(
    tmp_path: Path, runner: SrcnnRunner
) -> None:
    """Writing a file durably mostly waits on the disk: the job stores each derived image as
    soon as it is made, not all of them after the last one (issue 16)."""
    write_fixed_series(tmp_path / "in", count=12)  # 11 images, 6 forward passes of 2
    ((_, inputs),) = series_in(tmp_path / "in").items()
    sink = Signalling(tmp_path / "out")
    method = WaitsAtTheLastPass(runner, passes=6, stored=sink.stored)
    output = enhance_series(1, inputs, Settings(), lambda modality: [method], sink)
    assert method.calls == [11, 2, 2, 2, 2, 2, 1]
    assert method.stored_before_the_last_pass is True
    (images, (report,)) = output.by_method["srcnn"]
    assert len(images) == 11 and all(image.path.is_file() for image in images)
    assert report.path.is_file()


class FailsAtTheLastPass(WaitsAtTheLastPass):
    """Fails at the last pass, once an image has been stored (or a few seconds have passed)."""

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        if len(self.calls) == self.passes:
            self.stored_before_the_last_pass = self.stored.wait(timeout=5)
            raise RuntimeError("the last pass failed")
        return super().__call__(stack)


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def unreportable(*args: Any, **kwargs: Any) -> Any:
    raise ImageDeclined("the report cannot reference these images")


def test_a_series_that_does_not_go_out_leaves_no_file_behind(
    tmp_path: Path, runner: SrcnnRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images stored while the series was enhanced are taken back when it does not go out
    after all: its report cannot be built (the images are declined with the reason), or the
    enhancement fails before the last image (the job fails with the error)."""
    write_fixed_series(tmp_path / "in", count=12)
    ((_, inputs),) = series_in(tmp_path / "in").items()
    with monkeypatch.context() as patched:
        patched.setattr(derived_output, "metrics_report", unreportable)
        out = tmp_path / "unreported"
        output = enhance_series(
            1, inputs, Settings(), lambda modality: [Counted(runner)], file_sink(out)
        )
    assert output.by_method == {}
    reasons = [item.reason for item in output.outcome.declined]
    assert len(reasons) == 12  # 11 unreported, 1 not an image the job can enhance
    assert sum("metrics report not built" in reason for reason in reasons) == 11
    assert files_in(out) == []

    sink = Signalling(tmp_path / "failed")
    failing = FailsAtTheLastPass(runner, passes=6, stored=sink.stored)
    with pytest.raises(RuntimeError, match="the last pass failed"):
        enhance_series(1, inputs, Settings(), lambda modality: [failing], sink)
    assert failing.stored_before_the_last_pass is True  # there was something to take back
    assert files_in(tmp_path / "failed") == []


def test_a_report_highdicom_refuses_declines_the_series_without_quoting_the_patient(
    tmp_path: Path, runner: SrcnnRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """highdicom raises ValueError for a header value it does not take, sometimes quoting it:
    the series is declined with the reason, once (it used to end the job as an internal error,
    retried until dead), and the reason names no patient."""
    write_fixed_series(tmp_path / "in", count=4)
    ((_, inputs),) = series_in(tmp_path / "in").items()
    name = str(dcmread(inputs[0].path).PatientName)

    def refuses(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"Value {name!r} of Patient's Name is not valid for this report")

    monkeypatch.setattr(highdicom.sr, "ComprehensiveSR", refuses)
    out = tmp_path / "out"
    output = enhance_series(
        1, inputs, Settings(), lambda modality: [Counted(runner)], file_sink(out)
    )
    assert output.by_method == {}
    reasons = [item.reason for item in output.outcome.declined]
    refused = [reason for reason in reasons if "highdicom refused the metrics SR" in reason]
    assert len(refused) == 3  # the fourth image is not one the job can enhance
    assert all("<PatientName>" in reason and name not in reason for reason in refused)
    assert files_in(out) == []


def test_a_failed_run_leaves_what_an_earlier_run_wrote(
    tmp_path: Path, runner: SrcnnRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Derived UIDs are deterministic, so a second run into the same folder replaces the first
    run's images (the same but for their processing time): when it then fails, it takes back
    only what it created, and the first run's series is all there, its report untouched."""
    write_fixed_series(tmp_path / "in", count=12)
    ((_, inputs),) = series_in(tmp_path / "in").items()
    out = tmp_path / "out"
    first = enhance_series(
        1, inputs, Settings(), lambda modality: [Counted(runner)], file_sink(out)
    )
    (images, (report,)) = first.by_method["srcnn"]
    written = report.path.read_bytes()
    assert files_in(out) == sorted([report.path, *(image.path for image in images)])
    with monkeypatch.context() as patched:
        patched.setattr(derived_output, "metrics_report", unreportable)
        second = enhance_series(
            1, inputs, Settings(), lambda modality: [Counted(runner)], file_sink(out)
        )
    assert second.by_method == {}
    assert files_in(out) == sorted([report.path, *(image.path for image in images)])
    assert report.path.read_bytes() == written


def test_the_enhancement_pauses_while_too_many_outputs_wait_to_be_finished(
    tmp_path: Path, runner: SrcnnRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SRCNN outruns the finishing thread on a small machine; the outputs waiting for it are
    bounded (`MAX_BYTES_WAITING_TO_FINISH`), so a long series is not held in memory whole."""
    write_fixed_series(tmp_path / "in", count=12)  # 11 images of 128², 6 passes of 2
    monkeypatch.setattr(enhancement, "MAX_BYTES_WAITING_TO_FINISH", 3 * SIDE * SIDE * 4)
    derived: list[str] = []
    derive = enhancement.derive_image

    def slow_derive(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)  # a finishing thread much slower than the network
        image = derive(*args, **kwargs)
        derived.append("done")
        return image

    monkeypatch.setattr(enhancement, "derive_image", slow_derive)
    waiting_at_each_pass: list[int] = []

    class Watched(Counted):
        def __call__(self, stack: np.ndarray) -> np.ndarray:
            if self.calls:  # after the self-check: outputs enhanced, less those finished
                waiting_at_each_pass.append(sum(self.calls[1:]) - len(derived))
            return super().__call__(stack)

    details = job_details(tmp_path / "in", tmp_path / "out", Watched(runner))
    assert len(waiting_at_each_pass) == 6
    assert max(waiting_at_each_pass) <= 3  # three 128² float32 outputs fit, no more
    assert details["methods"][0]["images"] == 11


def test_images_waiting_for_the_disk_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that stalls (a full NFS queue) holds up the finishing thread after
    `MAX_WAITING_TO_STORE` encoded images, instead of letting them pile up in memory."""
    monkeypatch.setattr(derived_output, "MAX_WAITING_TO_STORE", 2)
    disk_free, writing = threading.Event(), threading.Event()

    class StalledDisk:
        def __call__(self, instance: EncodedInstance) -> SpooledInstance:
            writing.set()
            disk_free.wait(timeout=30)
            return instance.spooled(tmp_path / f"{instance.sop_instance_uid}.dcm")

        def holds(self, instance: EncodedInstance) -> bool:
            return False

    store = derived_output.ImageStore(StalledDisk())
    put: list[int] = []

    def finishing() -> None:
        for index in range(5):
            file = EncodedInstance("1.2", f"1.2.3.{index}", "1.2.3", "1.2.840.10008.1.2.1", b"")
            store.put(derived_output.DerivedImage(file, measures=None))  # type: ignore[arg-type]
            put.append(index)

    thread = threading.Thread(target=finishing, daemon=True)
    thread.start()
    assert writing.wait(timeout=10)
    time.sleep(0.3)  # what could be put without the bound would be put by now
    assert put == [0, 1]  # the first is being written, the second waits; the third blocks
    disk_free.set()
    thread.join(timeout=10)
    store.close()
    assert put == [0, 1, 2, 3, 4]
