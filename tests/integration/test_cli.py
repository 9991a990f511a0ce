"""The admin CLI against a real node and a real Orthanc: echo, jobs, config, exit codes."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from dicomnode.registry import MODELS_DIR
from tests.conftest import pacs_destination
from tests.integration.test_cli_output import Site
from tests.support.cli import dicomnode
from tests.support.data import CT_HEAD_GE
from tests.support.dcmtk import echoscu, storescu
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port

JOB_KEYS = {
    "id",
    "study_uid",
    "series_uid",
    "status",
    "attempts",
    "instances",
    "error",
    "created_at",
    "updated_at",
    "deliveries",
}


def test_node_answers_c_echo_from_dcmtk(node_factory) -> None:
    """Every echo answered; one line per calling AE every 10 minutes (a monitor's echo every
    10 s was 8,640 lines a day)."""
    node = node_factory([]).start()
    for _ in range(3):
        result = echoscu(node.port)
        assert result.returncode == 0, result.stderr
    assert echoscu(node.port, calling_aet="MODALITY").returncode == 0
    echoes = [line.split(" INFO ")[1] for line in node.log().splitlines() if "C-ECHO" in line]
    assert echoes == [
        "dicomnode.receive.scp C-ECHO calling_aet=ECHOSCU",
        "dicomnode.receive.scp C-ECHO calling_aet=MODALITY",
    ]


def test_echo_command_reaches_a_configured_destination_and_reports_failures(
    node_factory, orthanc: Orthanc
) -> None:
    node = node_factory([pacs_destination(orthanc)])
    ok = node.cli("echo", "pacs")
    assert "C-ECHO to ORTHANC@127.0.0.1" in ok.stdout and "success" in ok.stdout
    by_address = node.cli("echo", f"127.0.0.1:{orthanc.dicom_port}")
    assert by_address.returncode == 0
    down = node.cli("echo", f"127.0.0.1:{free_port()}", check=False)
    assert down.returncode == 1 and "connection refused" in down.stderr
    usage = node.cli("echo", "no-such-destination", check=False)
    assert usage.returncode == 2 and "neither a configured destination" in usage.stderr
    bad_port = node.cli("echo", "127.0.0.1:99999", check=False)
    assert (
        bad_port.returncode == 2 and "127.0.0.1:99999: 99999 is not a TCP port" in bad_port.stderr
    )


def test_calling_ae_titles_outside_the_allowed_list_are_rejected(node_factory) -> None:
    node = node_factory([], node={"allowed_calling_aets": ["CT01"]}).start()
    assert echoscu(node.port, calling_aet="CT01").returncode == 0
    stranger = echoscu(node.port, calling_aet="STRANGER")
    assert stranger.returncode != 0
    assert "Association Rejected" in stranger.stderr
    assert (
        "association rejected: calling AE title not allowed (node.allowed_calling_aets) "
        "calling_aet=STRANGER"
    ) in node.log()


def test_jobs_commands_show_list_retry_and_cancel(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory([pacs_destination(orthanc)]).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")

    listing = json.loads(node.cli("jobs", "list", "--json").stdout)
    [job] = listing["jobs"]
    assert job.keys() >= JOB_KEYS
    assert job["deliveries"][0].keys() >= {"destination", "status", "attempts", "error"}
    shown = json.loads(node.cli("jobs", "show", str(job["id"]), "--json").stdout)
    assert shown["series_uid"] == job["series_uid"] and shown["instances"] == len(ct_series)
    dead = json.loads(node.cli("jobs", "list", "--status", "dead", "--json").stdout)
    assert dead == {"jobs": [], "total": 0}

    table = node.cli("jobs", "list").stdout
    assert job["series_uid"] in table and "done" in table and "pacs:done" in table

    refused = node.cli("jobs", "retry", str(job["id"]), check=False)
    assert refused.returncode == 1 and "only dead, failed, cancelled jobs" in refused.stderr
    missing = node.cli("jobs", "show", "999", check=False)
    assert missing.returncode == 1 and "job 999 does not exist" in missing.stderr
    bad_status = node.cli("jobs", "list", "--status", "finished", check=False)
    assert bad_status.returncode == 2
    # numbers past the database's integers: an OverflowError traceback from the driver
    for args in (
        ("jobs", "show", "9" * 23),
        ("jobs", "cancel", str(2**63)),
        ("jobs", "retry", "0"),
    ):
        out_of_range = node.cli(*args, check=False)
        assert out_of_range.returncode == 2 and "Traceback" not in out_of_range.stderr, args
        assert "Invalid value for 'ID'" in out_of_range.stderr, args


def test_cancelled_job_is_not_delivered_until_retried(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    # Long backoff: the job fails once against a closed port and waits; cancel it there.
    node = node_factory(
        [{**pacs_destination(orthanc), "port": free_port()}],
        retry={"initial_delay_seconds": 3600, "max_delay_seconds": 3600},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "failed")
    assert "cancelled" in node.cli("jobs", "cancel", "1").stdout
    assert node.jobs()[0]["status"] == "cancelled"
    assert node.cli("jobs", "retry", "1").returncode == 0
    assert node.jobs()[0]["status"] in {"queued", "processing", "forwarding", "failed"}


def test_bad_configuration_stops_serve_with_the_key_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[node]\nae_title = "A\\\\B"\n')
    result = dicomnode("serve", "--config", str(config))
    assert result.returncode == 2
    assert "setting node.ae_title" in result.stderr
    env_result = dicomnode("config", "show", env={"DICOMNODE_NODE_PORT": "eleven"})
    assert env_result.returncode == 2 and "setting node.port" in env_result.stderr


def test_serve_refuses_to_start_without_the_model_its_methods_need(tmp_path: Path) -> None:
    # No x3 model ships: every job would fail for hours; the node says so and does not start.
    config = tmp_path / "x3.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\nport = {free_port()}\n'
        '[enhance]\nmethods = ["srcnn"]\nscale = 3\n'
    )
    result = dicomnode("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "setting enhance.methods" in result.stderr and "srcnn-x3.keras" in result.stderr
    assert "Traceback" not in result.stderr
    checked = dicomnode("config", "show", "--config", str(config))  # an admin's check says so
    assert checked.returncode == 2 and "srcnn-x3.keras" in checked.stderr
    assert "scale = 3" in checked.stdout  # what was checked is printed


def test_serve_and_config_show_refuse_a_listener_tls_file_that_is_not_pem(tmp_path: Path) -> None:
    """Refused before the data_dir, the database or the spool is made."""
    not_pem = tmp_path / "node.pem"
    not_pem.write_text("not a certificate\n")
    config = tmp_path / "tls.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\nport = {free_port()}\n'
        f'tls_certificate = "{not_pem}"\ntls_private_key = "{not_pem}"\n'
    )
    for command in (["serve"], ["config", "show"]):
        result = dicomnode(*command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert "setting node.tls_certificate" in result.stderr and "node.pem" in result.stderr
    assert not (tmp_path / "data").exists()


def test_config_show_reads_the_destinations_tls_files_only_where_serve_would(
    tmp_path: Path,
) -> None:
    """A listener-only receiver (no router, no workers: the scale-out set-up) never forwards:
    `serve` does not read the destinations' TLS files there, so `config show` does not either."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    destination = (
        '[[destinations]]\nname = "pacs"\nae_title = "P"\nhost = "10.0.0.9"\nport = 104\n'
        f'tls = true\ntls_ca_certificates = "{not_pem}"\n'
    )
    forwarding = tmp_path / "forwarding.toml"
    forwarding.write_text(destination)
    refused = dicomnode("config", "show", "--config", str(forwarding))
    assert refused.returncode == 2 and "destinations[0].tls_ca_certificates" in refused.stderr
    receiver = tmp_path / "receiver.toml"
    receiver.write_text("[worker]\nworkers = 0\nrouter = false\n" + destination)
    assert dicomnode("config", "show", "--config", str(receiver)).returncode == 0


def test_config_show_prints_effective_values_after_overrides(tmp_path: Path) -> None:
    result = dicomnode(
        "config",
        "show",
        "--json",
        env={"DICOMNODE_NODE_PORT": "2104", "DICOMNODE_NODE_DATA_DIR": str(tmp_path)},
    )
    data = json.loads(result.stdout)
    assert data["node"]["port"] == 2104
    assert data["node"]["database_url"] == f"sqlite:///{tmp_path}/dicomnode.sqlite"


def imported_by(code: str, packages: set[str], prefix: str = "-") -> list[str]:
    """The `packages` and the modules named `prefix...` a fresh interpreter has imported once
    it has run `code`."""
    probe = (
        f"import sys\n{code}\n"
        f"found = {{m.split('.')[0] for m in sys.modules}} & set({sorted(packages)!r})\n"
        f"found |= {{m for m in sys.modules if m.startswith({prefix!r})}}\n"
        "print('IMPORTED', sorted(found), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    line = next((x for x in result.stderr.splitlines() if x.startswith("IMPORTED ")), None)
    assert line is not None, result.stderr[-2000:]
    return list(ast.literal_eval(line.removeprefix("IMPORTED ")))


def test_help_starts_without_heavy_imports() -> None:
    help_run = (
        "sys.argv = ['dicomnode', '--help']\n"
        "from dicomnode.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    heavy = {"tensorflow", "keras", "cv2", "sqlalchemy", "pynetdicom", "numpy"}
    assert imported_by(help_run, heavy) == []


def test_admin_commands_import_only_what_they_use(tmp_path: Path) -> None:
    """Reading the job table needs SQLAlchemy, not pydicom and pynetdicom (storage
    commitment's types, the whole runner: a second of `jobs show` and `doctor`); a C-ECHO
    needs pynetdicom, not the job table."""
    site = Site(tmp_path)  # a database with a job in each state

    def run(*argv: str) -> str:
        return (
            f"sys.argv = ['dicomnode', *{list(argv)!r}, '--config', {str(site.config)!r}]\n"
            "from dicomnode.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass"
        )

    dicom = {"pydicom", "pynetdicom", "numpy"}
    for command in (["jobs", "list"], ["jobs", "show", "1"], ["doctor"]):
        assert imported_by(run(*command), dicom | {"sqlalchemy"}) == ["sqlalchemy"], command
    assert imported_by(run("echo", f"127.0.0.1:{free_port()}"), dicom | {"sqlalchemy"}) == [
        "numpy",
        "pydicom",
        "pynetdicom",
    ]


def test_the_node_listens_before_it_imports_the_imaging_libraries() -> None:
    """`serve` imports the node, then listens, then loads the models: the imaging libraries
    (scikit-image, SciPy, OpenCV, TensorFlow: a second or more) come with the models, so the
    listener does not wait for them."""
    imaging = {"tensorflow", "keras", "cv2", "skimage", "scipy"}
    assert imported_by("import dicomnode.node", imaging, prefix="dicomnode.imaging") == []


def test_enhance_names_a_folder_that_is_missing_or_holds_no_dicom(tmp_path: Path) -> None:
    wide = {"COLUMNS": "400"}  # the path on one line of the usage box
    missing = dicomnode("enhance", str(tmp_path / "nowhere"), str(tmp_path / "out"), env=wide)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = dicomnode("enhance", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert empty.returncode == 1 and "no DICOM files found" in empty.stderr


def test_enhance_keeps_earlier_metrics_and_refuses_a_model_of_another_scale(
    tmp_path: Path,
) -> None:
    """An earlier run's numbers stay in metrics.csv beside its derived series (a run of
    another method, or one that failed, replaced them all), and a x2 model under the x1 name
    is refused before any work (it made x2 images at enhance.scale = 1)."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "ct.dcm").write_bytes(sorted(CT_HEAD_GE.glob("*.dcm"))[0].read_bytes())
    out = tmp_path / "out"
    first = dicomnode("enhance", str(source), str(out), "-m", "srcnn", timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    second = dicomnode("enhance", str(source), str(out), "-m", "baseline", timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    methods = [line.split(",")[1] for line in (out / "metrics.csv").read_text().splitlines()]
    assert methods == ["method", "srcnn", "baseline"]
    before = (out / "metrics.csv").read_bytes()
    failed = dicomnode("enhance", str(source), str(out), "-m", "srcnn", "--scale", "3")
    assert failed.returncode == 2 and "srcnn-x3.keras does not exist" in failed.stderr
    assert (out / "metrics.csv").read_bytes() == before

    models = tmp_path / "models"
    models.mkdir()
    (models / "srcnn-ct-x1.keras").write_bytes((MODELS_DIR / "srcnn-ct-x2.keras").read_bytes())
    config = tmp_path / "dicomnode.toml"
    config.write_text(f'[enhance]\nmodel_dir = "{models}"\n')
    wrong = tmp_path / "wrong"
    refused = dicomnode("enhance", str(source), str(wrong), "-m", "srcnn", "--config", str(config))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert (
        f"{models / 'srcnn-ct-x1.keras'} holds a x2 model (srcnn_x2), not the x1 that "
        "enhance.scale = 1 needs"
    ) in refused.stderr
    assert list(wrong.iterdir()) == []
    into_a_file = dicomnode("enhance", str(source), str(source / "ct.dcm"), "-m", "baseline")
    assert into_a_file.returncode == 1
    assert "ct.dcm: exists and is not a folder" in into_a_file.stderr
