"""`dicomnode doctor` finds orphans, missing files and stale temp files, repairs what is safe."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import pacs_destination
from tests.support.cli import dicomnode
from tests.support.dcmtk import storescu
from tests.support.orthanc import Orthanc


def test_doctor_reports_and_repairs_then_the_orphan_is_forwarded(
    tmp_path: Path, node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory([pacs_destination(orthanc)]).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(lambda js: js and js[0]["status"] == "done")
    node.stop()

    spool = node.data_dir / "spool"
    stored = sorted((spool / "instances").rglob("*.dcm"))
    missing = stored[0]
    missing.unlink()  # a row without its file
    orphan = dcmread(ct_series[1])  # a file without its row: a new instance of a new series
    orphan.SOPInstanceUID = orphan.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    orphan.SeriesInstanceUID = generate_uid()
    orphan_path = spool / "instances" / orphan.StudyInstanceUID / orphan.SeriesInstanceUID
    orphan_path.mkdir(parents=True)
    orphan.save_as(orphan_path / f"{orphan.SOPInstanceUID}.dcm")
    garbage = orphan_path / "1.2.3.999.dcm"  # a file without a row that is not DICOM at all
    garbage.write_bytes(b"not dicom" * 100)
    stray_outbox = spool / "outbox" / "77" / "1.2.3" / "1.2.3.4.dcm"  # job 77 never existed
    stray_outbox.parent.mkdir(parents=True)
    stray_outbox.write_bytes(b"derived")
    part = spool / "tmp" / "dead.part"
    shutil.copy(ct_series[2], part)
    old = time.time() - 3600
    for path in (
        orphan_path / f"{orphan.SOPInstanceUID}.dcm",
        garbage,
        part,
        stray_outbox.parents[1],
    ):
        os.utime(path, (old, old))
    time.sleep(1.1)  # a temp file's age is its ctime's (a link to an old copy is new): --min-age 1

    checked = node.cli("doctor", "--json", "--min-age", "1", check=False)
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    assert [m["path"] for m in report["missing_files"]] == [str(missing)]
    orphan_file = str(orphan_path / f"{orphan.SOPInstanceUID}.dcm")
    assert sorted(report["orphan_files"]) == sorted([orphan_file, str(garbage)])
    assert report["stale_temp_files"] == [str(part)] and part.exists()
    assert report["orphan_outboxes"] == [77]
    said = node.cli("doctor", "--wide", "--min-age", "1", check=False).stdout
    assert "orphan files: 2" in said and "--repair indexes the orphan files" in said

    repaired = json.loads(
        node.cli("doctor", "--repair", "--json", "--min-age", "1", check=False).stdout
    )
    assert repaired["indexed"] == [orphan_file]
    quarantined = spool / "quarantine" / garbage.relative_to(spool / "instances")
    assert repaired["quarantined"] == [str(garbage)]
    assert quarantined.read_bytes() == b"not dicom" * 100 and not garbage.exists()
    assert repaired["disk_low"] is False and repaired["free_disk_mb"] > 0
    assert not part.exists()
    assert repaired["removed_outboxes"] == [77] and not stray_outbox.exists()
    assert repaired["problems_left"] == 1  # the missing file: only a resend can bring it back

    node.start()  # the indexed orphan's series becomes a job and reaches the PACS
    node.wait_for_jobs(
        lambda js: any(
            j["series_uid"] == orphan.SeriesInstanceUID and j["status"] == "done" for j in js
        )
    )
    arrived = {
        orthanc.get(f"/instances/{i}/simplified-tags").json()["SOPInstanceUID"]
        for i in orthanc.instance_ids()
    }
    assert str(orphan.SOPInstanceUID) in arrived


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_data_dir_moved_by_hand_is_found_and_its_rows_pointed_at_it_not_sent_again(
    tmp_path: Path, node_factory, orthanc: Orthanc, ct_series: list[Path], how: str
) -> None:
    """The rows name each file by its full path: after an admin moved the data folder (a bigger
    disk), every row's file was "missing" and every file an "orphan", and `--repair` indexed
    them all as new arrivals: the whole spool would have gone to the PACS again. The files are
    now found by their place in the spool's layout and the rows pointed at them; so they are
    when the old folder is kept (copied, `cp -a`, until checked)."""
    node = node_factory([pacs_destination(orthanc)]).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(lambda js: js and js[0]["status"] == "done")
    node.stop()
    moved = tmp_path / "bigger-disk" / "data"
    moved.parent.mkdir()
    if how == "moved":
        shutil.move(node.data_dir, moved)
    else:  # and one file missed by the copy: only in the old folder, which is no longer ours
        shutil.copytree(node.data_dir, moved)
        min(moved.rglob("*.dcm")).unlink()
    relocatable = len(ct_series) - (how == "copied")
    config = tmp_path / "moved.toml"
    config.write_text(f'[node]\ndata_dir = "{moved}"\n')

    refused = dicomnode("serve", "--config", str(config))  # before doctor: refused, told why
    assert refused.returncode == 2, refused.stderr
    assert "the database names its spool files in another folder" in refused.stderr
    assert "Run `dicomnode doctor --repair`" in refused.stderr
    # Copied without their times (`cp -r`), the files are new: not judged yet, and their rows
    # not "missing" meanwhile (a resend was called for)
    now = time.time()
    for file in moved.rglob("*.dcm"):
        os.utime(file, (now, now))
    early = json.loads(dicomnode("doctor", "--json", "--config", str(config)).stdout)
    assert early["missing_files"] == [] and early["moved_files"] == []
    assert early["young_files"] == relocatable
    for file in moved.rglob("*.dcm"):
        os.utime(file, (now - 3600, now - 3600))
    found = dicomnode("doctor", "--json", "--min-age", "0", "--config", str(config))
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert len(report["moved_files"]) == relocatable
    assert len(report["outside_files"]) == len(ct_series) - relocatable
    assert report["orphan_files"] == [] and report["missing_files"] == []
    assert all(item["to"].startswith(str(moved)) for item in report["moved_files"])

    repair = ["doctor", "--repair", "--json", "--min-age", "0", "--config", str(config)]
    repaired = dicomnode(*repair)
    assert repaired.returncode == int(how == "copied"), repaired.stdout  # outside: left to do
    assert len(json.loads(repaired.stdout)["relocated"]) == relocatable
    if how == "copied":
        return
    assert dicomnode(*repair).returncode == 0  # nothing left
    listed = json.loads(dicomnode("jobs", "list", "--json", "--config", str(config)).stdout)
    assert [job["status"] for job in listed["jobs"]] == ["done"]  # no new job: nothing resent
