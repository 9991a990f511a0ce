"""docker/compose.yaml, docker/dicomnode.env and docker/prometheus.yml agree with the settings.

There is no container engine here, so this reads the files the way compose would hand them to
the node: every dicomnode service's environment is validated by `load_settings` itself, over the
built-in defaults the image runs on, and every DICOMNODE_* name in it must be a real setting.
PyYAML is not a dependency: compose.yaml keeps one line per list or mapping (flow style), which
the small reader below understands.
"""

import json
from pathlib import Path

from dicomnode.config import load_settings
from tests.support.settings_env import unknown_setting_variables

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def compose_services(text: str) -> dict[str, dict[str, object]]:
    """Each service's keys (flow-style JSON values parsed, others as text) and `environment`."""
    services: dict[str, dict[str, object]] = {}
    top = service = block = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if indent == 0:
            top, service = key, None
        elif top == "services" and indent == 2:
            service = key
            services[service] = {"environment": {}}
        elif service is not None and indent == 4:
            block = key
            if not value:  # a block follows (only `environment` is read from one)
                continue
            try:
                services[service][key] = json.loads(value)
            except json.JSONDecodeError:
                services[service][key] = value
        elif service is not None and indent == 6 and block == "environment":
            environment = services[service]["environment"]
            assert isinstance(environment, dict)
            environment[key] = value.strip("\"'")
    return services


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them (a single-quoted value is taken literally)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value[1:-1] if value[:1] == value[-1:] == "'" else value
    return values


def dicomnode_services() -> dict[str, dict[str, object]]:
    services = compose_services((DOCKER / "compose.yaml").read_text())
    return {
        name: service
        for name, service in services.items()
        if isinstance(service.get("command"), list) and service["command"][0] == "dicomnode"
    }


def service_environment(service: dict[str, object]) -> dict[str, str]:
    environment: dict[str, str] = {}
    files = service.get("env_file", [])
    assert isinstance(files, list)
    for name in files:
        environment.update(env_file(DOCKER / name))
    extra = service["environment"]
    assert isinstance(extra, dict)
    return {**environment, **extra}


def test_compose_runs_one_listener_and_two_workers_beside_orthanc_postgres_and_prometheus() -> None:
    services = compose_services((DOCKER / "compose.yaml").read_text())
    assert {"orthanc", "postgres", "prometheus"} <= set(services)
    commands = sorted(str(service["command"]) for service in dicomnode_services().values())
    serve, worker = str(["dicomnode", "serve"]), str(["dicomnode", "worker"])
    assert commands == [serve, worker, worker]


def test_every_dicomnode_service_environment_is_valid_settings() -> None:
    for name, service in dicomnode_services().items():
        environment = service_environment(service)
        assert environment, f"service {name} has no DICOMNODE_* settings"
        unknown = unknown_setting_variables(environment)
        assert not unknown, f"service {name}: not settings: {unknown}"

        settings = load_settings(None, environ=environment)
        assert settings.http.enabled and settings.http.host == "0.0.0.0", name
        assert settings.node.database_url.startswith("postgresql"), name
        assert [d.host for d in settings.destinations] == ["orthanc"], name
        # The spool is the one volume every process mounts at data_dir.
        assert f"spool:{settings.node.data_dir}" in str(service["volumes"]), name


def test_every_dicomnode_service_is_given_longer_to_stop_than_the_node_takes() -> None:
    """Docker's default of 10 s SIGKILLs a node still finishing its jobs
    (node.stop_timeout_seconds), and each kill counts as a worker's death against the job."""
    for name, service in dicomnode_services().items():
        grace = str(service.get("stop_grace_period", "10s"))
        assert grace.endswith("s"), f"{name}: stop_grace_period {grace!r} in seconds, please"
        node = load_settings(None, environ=service_environment(service)).node
        assert float(grace[:-1]) > node.stop_timeout_seconds, name


def test_the_listener_routes_the_originals_and_the_workers_enhance() -> None:
    roles = []
    for service in dicomnode_services().values():
        worker = load_settings(None, environ=service_environment(service)).worker
        command = service["command"]
        assert isinstance(command, list)
        roles.append((command[1], worker.router, worker.workers))
    assert sorted(roles) == [("serve", True, 0), ("worker", False, 1), ("worker", False, 1)]


def test_prometheus_scrapes_every_dicomnode_process_on_its_http_port() -> None:
    targets = set()
    for line in (DOCKER / "prometheus.yml").read_text().splitlines():
        if line.strip().startswith("- targets:"):
            targets |= set(json.loads(line.split(":", 1)[1]))
    expected = {
        f"{name}:{load_settings(None, environ=service_environment(service)).http.port}"
        for name, service in dicomnode_services().items()
    }
    assert targets == expected


def test_only_the_dicom_port_is_published_beyond_the_hosts_loopback() -> None:
    """Orthanc's web UI (no password in this file), Prometheus and /metrics were published on
    every interface of the host: anyone on its network could browse the images."""
    beyond = []
    for name, service in compose_services((DOCKER / "compose.yaml").read_text()).items():
        ports = service.get("ports", [])
        assert isinstance(ports, list)
        beyond += [(name, port) for port in ports if not port.startswith("127.0.0.1:")]
    assert beyond == [("dicomnode", "11112:11112")]
