"""Settings: defaults, the TOML file, DICOMNODE_* overrides, and errors that name the key."""

import json
import re
from pathlib import Path

import pytest

from dicomnode.config import Destination, Settings, load_settings
from dicomnode.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_documented_default_file_loads_with_the_keys_the_issue_names() -> None:
    settings = load_settings(REPO / "config" / "dicomnode.toml", environ={})
    assert settings.node.ae_title == "DICOMNODE"
    assert settings.node.port == 11112
    assert settings.node.allowed_calling_aets == []
    assert settings.completion.series_quiet_seconds == 30
    assert [d.name for d in settings.destinations] == ["pacs"]
    assert settings.destinations[0].port == 4242


def test_documented_file_states_the_built_in_defaults() -> None:
    documented = load_settings(REPO / "config" / "dicomnode.toml", environ={}).as_dict()
    built_in = Settings().as_dict()
    for data in (documented, built_in):
        data.pop("destinations")
        for key in ("data_dir", "database_url"):  # the file's is var/ in the checkout
            data["node"].pop(key)
    assert documented == built_in
    documented_node = load_settings(REPO / "config" / "dicomnode.toml", environ={}).node
    assert documented_node.data_path == REPO / "var"


def test_empty_database_url_means_sqlite_inside_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    settings = load_settings(path, environ={})
    assert settings.node.effective_database_url == f"sqlite:///{tmp_path / 'data'}/dicomnode.sqlite"


def test_environment_overrides_single_keys_with_typed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "[node]\nport = 104\n")
    settings = load_settings(
        path,
        environ={
            "DICOMNODE_NODE_PORT": "11113",
            "DICOMNODE_NODE_ALLOWED_CALLING_AETS": "CT1, MR2",
            "DICOMNODE_COMPLETION_SERIES_QUIET_SECONDS": "2.5",
            "DICOMNODE_DESTINATIONS": '[{"name": "a", "ae_title": "A", "host": "h", "port": 1}]',
        },
    )
    assert settings.node.port == 11113
    assert settings.node.allowed_calling_aets == ["CT1", "MR2"]
    assert settings.completion.series_quiet_seconds == 2.5
    assert settings.destinations[0].ae_title == "A"


def test_a_listener_without_workers_or_router_is_a_valid_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nworkers = 0\nrouter = false\n")
    worker = load_settings(path, environ={"DICOMNODE_WORKER_ROUTER": "true"}).worker
    assert (worker.workers, worker.router) == (0, True)


def test_config_env_var_selects_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nae_title = "FROMENV"\n')
    assert load_settings(None, environ={"DICOMNODE_CONFIG": str(path)}).node.ae_title == "FROMENV"


@pytest.mark.parametrize(
    ("text", "environ", "named"),
    [
        ("[node]\nprot = 1\n", {}, "node.prot"),
        ("[nodes]\nport = 1\n", {}, "nodes"),
        ("[node]\nport = 70000\n", {}, "node.port"),
        ('[node]\nae_title = "MUCH_TOO_LONG_AE_TITLE"\n', {}, "node.ae_title"),
        ('[node]\non_duplicate = "merge"\n', {}, "node.on_duplicate"),
        ("[completion]\nseries_quiet_seconds = 0\n", {}, "completion.series_quiet_seconds"),
        ("", {"DICOMNODE_WORKER_WORKERS": "two"}, "worker.workers"),
        ("[worker]\nworkers = -1\n", {}, "worker.workers"),
        ("", {"DICOMNODE_WORKER_ROUTER": "sometimes"}, "worker.router"),
        ("", {"DICOMNODE_RETRY_BACKOFF": "1"}, "retry.backoff"),
        ('[baseline]\ndenoise = "median"\n', {}, "baseline.denoise"),
        ("[baseline]\nunsharp_sigma = 0\n", {}, "baseline.unsharp_sigma"),
        ("[enhance]\nmax_series_mb = -1\n", {}, "enhance.max_series_mb"),
        ("[enhance]\nsrcnn_views = 3\n", {}, "enhance.srcnn_views"),
        ('[enhance]\nmodalities = ["CT", "mr"]\n', {}, "enhance.modalities: 'mr' is no DICOM"),
        ('[enhance]\nmodalities = ["CT", "MR "]\n', {}, "enhance.modalities: 'MR ' is no"),
        ('[enhance]\nmodalities = [""]\n', {}, "enhance.modalities: '' is no DICOM Modality"),
        ("[qa]\nnoise_ratio_fail = 1.0\n", {}, "qa.noise_ratio_fail"),
        ('[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\n', {}, "destinations[0]"),
        (  # a misspelt key is named, not reported as the key it was meant to be
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nprot = 1\n',
            {},
            "destinations[0].prot: unknown setting; did you mean destinations[0].port?",
        ),
        ("[node]\nfoo = 1\n", {}, "node.foo: unknown setting (known in [node]: ae_title"),
        (
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 1\n'
            '[[destinations]]\nname = "p"\nae_title = "Q"\nhost = "h"\nport = 2\n',
            {},
            "destinations",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(write(tmp_path, text), environ=environ)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "10.1.2.3"])
def test_a_destination_that_is_the_node_itself_is_refused(tmp_path: Path, host: str) -> None:
    """Its originals came back as new instances, each made a job that sent them back again: 31
    jobs in 35 s of one series, without end, and not a word at start."""
    node = '[node]\nport = 11112\nhost = "10.1.2.3"\n'
    pacs = '[[destinations]]\nname = "pacs"\nae_title = "ANY"\nport = {port}\nhost = "{host}"\n'
    own = write(tmp_path, node + pacs.format(port=11112, host=host))
    said = rf"destinations\[0\]: ANY@{re.escape(host)}:11112 is this node itself"
    with pytest.raises(ConfigError, match=said):
        load_settings(own, environ={})
    other_port = write(tmp_path, node + pacs.format(port=11113, host=host))
    assert load_settings(other_port, environ={}).destinations[0].port == 11113
    elsewhere = write(tmp_path, node + pacs.format(port=11112, host="pacs.example.org"))
    assert load_settings(elsewhere, environ={}).destinations[0].host == "pacs.example.org"
    # The clash made by a variable says so, though the destination it names is the file's.
    by_variable = {"DICOMNODE_NODE_PORT": "11113"}
    with pytest.raises(ConfigError, match=r"node\.port 11113 from DICOMNODE_NODE_PORT, on this"):
        load_settings(write(tmp_path, node + pacs.format(port=11113, host=host)), by_variable)


def test_missing_explicit_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_documented_destination_states_the_tls_defaults() -> None:
    [documented] = load_settings(REPO / "config" / "dicomnode.toml", environ={}).destinations
    default = Destination(name="pacs", ae_title="ORTHANC", host="127.0.0.1", port=4242)
    assert documented == default


@pytest.mark.parametrize(
    ("send", "enhance", "named"),
    [
        ("[]", "", 'destinations[0].send: [] must name "originals", "derived" or both'),
        ('["derived", "derived"]', "", "each once"),
        ('["copies"]', "", "destinations[0].send: 'copies' is not one of 'originals', 'derived'"),
        (
            '["originals"]',
            "forward_originals = false",
            "destinations[0].send: ['originals'] needs enhance.forward_originals = true",
        ),
        (
            '["derived"]',
            "methods = []",
            "destinations: no destination's send takes what the node makes (originals series",
        ),
    ],
)
def test_what_a_destination_takes_is_checked(
    tmp_path: Path, send: str, enhance: str, named: str
) -> None:
    pacs = '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "pacs"\nport = 104\n'
    text = f"[enhance]\n{enhance}\n{pacs}send = {send}\n"
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(write(tmp_path, text), environ={})


def test_a_destination_takes_every_part_unless_it_says_otherwise(tmp_path: Path) -> None:
    pacs = '[[destinations]]\nname = "{}"\nae_title = "PACS"\nhost = "pacs"\nport = 104\n'
    text = pacs.format("all") + pacs.format("clinical") + 'send = ["originals"]\n'
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.sends() == {"all": ["originals", "derived"], "clinical": ["originals"]}
    # Nothing is enhanced: the originals reach every destination whatever forward_originals says.
    plain = "[enhance]\nmethods = []\nforward_originals = false\n" + pacs.format("clinical")
    only = load_settings(write(tmp_path, plain + 'send = ["originals"]\n'), environ={})
    assert only.sends() == {"clinical": ["originals"]}


def _tls_files(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not checked here: tls.py reads the PEM")
    key.write_text("idem")
    return str(cert), str(key)


@pytest.mark.parametrize(
    ("node", "destination", "named"),
    [
        ({"tls_certificate": "{cert}"}, {}, "node.tls_private_key"),
        ({"tls_private_key": "{key}"}, {}, "node.tls_certificate"),
        ({"tls_certificate": "{cert}", "tls_private_key": "{tmp}/nope.pem"}, {}, "nope.pem"),
        ({"tls_certificate": "{cert}", "tls_private_key": "{tmp}/nope.pem"}, {}, "node.tls_priv"),
        (
            {"tls_certificate": "{cert}", "tls_private_key": "{key}"}
            | {"tls_require_client_certificate": True},
            {},
            "node.tls_require_client_certificate",
        ),
        ({"tls_ca_certificates": "{cert}"}, {}, "node.tls_ca_certificates"),
        ({}, {"tls_ca_certificates": "{cert}"}, "destinations[0].tls_ca_certificates"),
        ({}, {"tls": True, "tls_ca_certificates": "{tmp}/nope.pem"}, "destinations[0].tls_ca"),
        ({}, {"tls": True, "tls_certificate": "{cert}"}, "destinations[0].tls_private_key"),
        ({}, {"tls_server_name": "pacs.example"}, "destinations[0].tls_server_name"),
    ],
)
def test_bad_tls_settings_are_refused_naming_the_key(
    tmp_path: Path, node: dict[str, object], destination: dict[str, object], named: str
) -> None:
    cert, key = _tls_files(tmp_path)

    def toml(values: dict[str, object]) -> str:
        lines = []
        for name, value in values.items():
            if isinstance(value, str):
                value = json.dumps(value.format(cert=cert, key=key, tmp=tmp_path))
            else:
                value = json.dumps(value)  # true/false, as in TOML
            lines.append(f"{name} = {value}")
        return "\n".join(lines) + "\n"

    text = (
        "[node]\n"
        + toml(node)
        + '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 1\n'
        + toml(destination)
    )
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(write(tmp_path, text), environ={})


def test_tls_settings_with_existing_files_load(tmp_path: Path) -> None:
    cert, key = _tls_files(tmp_path)
    text = (
        f'[node]\ntls_certificate = "{cert}"\ntls_private_key = "{key}"\n'
        f'tls_ca_certificates = "{cert}"\ntls_require_client_certificate = true\n'
        '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "10.0.0.5"\nport = 1\n'
        f'tls = true\ntls_ca_certificates = "{cert}"\n'
    )
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.node.tls_require_client_certificate is True
    assert settings.destinations[0].tls is True
    assert settings.destinations[0].server_name == "10.0.0.5"


def test_the_views_a_setting_accepts_are_those_the_imaging_averages_over(tmp_path: Path) -> None:
    """config.py spells the counts out (the settings never import numpy): they must agree."""
    from dicomnode.imaging.symmetry import AUTO, VIEW_COUNTS

    accepted = []
    for views in range(0, 10):
        try:
            load_settings(write(tmp_path, f"[enhance]\nsrcnn_views = {views}\n"), environ={})
        except ConfigError:
            continue
        accepted.append(views)
    assert tuple(accepted) == (AUTO, *VIEW_COUNTS)
