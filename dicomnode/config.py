"""Settings: the TOML file, `DICOMNODE_<SECTION>_<KEY>` overrides, validated once at start.

This is the only module that reads settings files or the environment (with its two helpers:
`config_env` checks the DICOMNODE_* variables, `config_paths` reads a file's relative paths
against its folder). Every operational number (timeouts, retry policy, limits) is a named
setting here with a documented default, so `dicomnode config show` can print the effective value
of each.
"""

import dataclasses
import difflib
import importlib
import json
import os
import re
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dicomnode.config_env import (
    TABLE_VARS,
    naming_the_variable,
    read_env_overrides,
)
from dicomnode.config_paths import anchored_paths
from dicomnode.errors import ConfigError
from dicomnode.registry import METHODS

CONFIG_ENV_VAR = "DICOMNODE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/dicomnode.toml")
# The DICOMNODE_* variables that are not settings; any other one must name a setting.
NOT_SETTING_ENV_VARS = (CONFIG_ENV_VAR,)
# Prefixes kept for hooks outside the settings (the test suite's injected methods read
# DICOMNODE_TEST_SLOW_SECONDS): never settings, never refused.
RESERVED_ENV_PREFIXES = ("DICOMNODE_TEST_",)
AUTO_LISTENER_PROCESSES = 4  # node.listener_processes = 0: one per core, at most this many
MAX_LISTENER_PROCESSES = 64

# PS3.5 6.2: an AE title is 1..16 characters of the default repertoire, no backslash or control
# characters; leading/trailing spaces are not significant.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def _check(condition: bool, key: str, rule: str) -> None:
    if not condition:
        raise ConfigError(f"setting {key}: {rule}", setting=key)


def _check_transfer_syntax(value: str, key: str) -> None:
    """A transfer syntax of PS3.6 Annex A that pydicom knows (it must read the data sets)."""
    import pydicom
    from pydicom.uid import UID

    _check(
        UID(value).is_transfer_syntax,
        key,
        f"{value!r} is not a transfer syntax UID that pydicom {pydicom.__version__} knows "
        "(PS3.6 Annex A)",
    )


def _check_ae_title(value: str, key: str) -> None:
    _check(
        bool(_AE_TITLE.match(value)) and value.strip() != "",
        key,
        f"{value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)",
    )


def _check_port(value: int, key: str) -> None:
    _check(1 <= value <= 65535, key, f"{value} is not a TCP port (1-65535)")


def _check_file(path: str, key: str) -> None:
    """An optional file setting: empty, or a file that exists (read at start, not later)."""
    _check(path == "" or Path(path).expanduser().is_file(), key, f"file {path!r} does not exist")


def _check_key_pair(certificate: str, private_key: str, prefix: str) -> None:
    _check(
        bool(certificate) == bool(private_key),
        f"{prefix}tls_private_key" if certificate else f"{prefix}tls_certificate",
        f"{prefix}tls_certificate and {prefix}tls_private_key are set together or not at all",
    )
    for name, path in (("tls_certificate", certificate), ("tls_private_key", private_key)):
        _check_file(path, f"{prefix}{name}")


@dataclass(frozen=True)
class NodeSettings:
    """Who the node is on the network and where it keeps its data."""

    ae_title: str = "DICOMNODE"
    host: str = "0.0.0.0"
    port: int = 11112
    data_dir: str = "var"
    database_url: str = ""
    allowed_calling_aets: list[str] = field(default_factory=list)
    require_called_aet: bool = True  # refuse callers that address another AE title
    # Transfer syntaxes taken beyond those whose instances can reach any PACS (receive/
    # syntaxes.py): e.g. JPEG XL for a PACS that takes it; such an instance goes only there.
    extra_transfer_syntaxes: list[str] = field(default_factory=list)
    # A SOP Instance UID received again: the new copy replaces the stored one, unless another
    # sender filed it in another series (a UID collision: refused, the first copy stays), or
    # always, or never (README, Duplicates).
    on_duplicate: Literal["replace_unless_foreign", "replace", "keep"] = "replace_unless_foreign"
    min_free_disk_mb: int = 1024
    max_associations: int = 10
    max_instance_mb: int = 2048
    max_pdu_size: int = 1048576  # PS3.8 D.3.3.1: the largest P-DATA-TF we accept; 0: none
    max_associations_per_address: int = 0  # 0: no per-address cap
    tls_certificate: str = ""  # PEM; empty: the listener speaks plain TCP
    tls_private_key: str = ""
    tls_ca_certificates: str = ""  # PEM bundle that signs the callers' certificates
    tls_require_client_certificate: bool = False
    # No destinations on purpose: jobs end done (retention purges them), not stored.
    receive_only: bool = False
    # Let several listeners share data_dir (a shared spool); off: a second one is refused.
    shared_data_dir: bool = False
    # SIGINT/SIGTERM: how long a stop waits for associations, jobs and deliveries in progress
    # before it exits anyway (a second signal exits at once).
    stop_timeout_seconds: float = 60.0
    # The most a C-STORE waits for the spool and the database (plus a second per 10 MB of
    # the instance) before the sender is answered 0xA700 (receive/store_deadline.py).
    store_timeout_seconds: float = 60.0
    # Processes that accept on node.port (SO_REUSEPORT): the node's own plus receivers that
    # store into the same spool and database, so concurrent senders use several cores.
    # 1: the node's own process only; 0: auto, min(cores, 4).
    listener_processes: int = 1

    def validate(self) -> None:
        _check_ae_title(self.ae_title, "node.ae_title")
        _check(
            0 <= self.listener_processes <= MAX_LISTENER_PROCESSES,
            "node.listener_processes",
            f"must be 0 (auto: one per core, at most 4) to {MAX_LISTENER_PROCESSES}",
        )
        _check(self.stop_timeout_seconds > 0, "node.stop_timeout_seconds", "must be > 0")
        _check(self.store_timeout_seconds > 0, "node.store_timeout_seconds", "must be > 0")
        _check_port(self.port, "node.port")
        _check(self.data_dir != "", "node.data_dir", "must not be empty")
        for aet in self.allowed_calling_aets:
            _check_ae_title(aet, "node.allowed_calling_aets")
        for syntax in self.extra_transfer_syntaxes:
            _check_transfer_syntax(syntax, "node.extra_transfer_syntaxes")
        _check(self.min_free_disk_mb >= 0, "node.min_free_disk_mb", "must be >= 0")
        _check(self.max_associations >= 1, "node.max_associations", "must be >= 1")
        _check(self.max_instance_mb >= 0, "node.max_instance_mb", "must be >= 0 (0: no limit)")
        _check(self.max_pdu_size >= 0, "node.max_pdu_size", "must be >= 0 (0: unlimited)")
        _check(
            self.max_pdu_size == 0 or self.max_pdu_size >= 4096,
            "node.max_pdu_size",
            "must be 0 (unlimited) or at least 4096 bytes",
        )
        _check(
            self.max_associations_per_address >= 0,
            "node.max_associations_per_address",
            "must be >= 0 (0: no cap)",
        )
        _check_key_pair(self.tls_certificate, self.tls_private_key, "node.")
        _check_file(self.tls_ca_certificates, "node.tls_ca_certificates")
        _check(
            not self.tls_ca_certificates or bool(self.tls_certificate),
            "node.tls_ca_certificates",
            "needs node.tls_certificate (client certificates are only checked over TLS)",
        )
        _check(
            not self.tls_require_client_certificate or bool(self.tls_ca_certificates),
            "node.tls_require_client_certificate",
            "needs node.tls_ca_certificates (the CAs that sign the callers' certificates)",
        )

    @property
    def listener_process_count(self) -> int:
        """`listener_processes`, with 0 (auto) resolved to the cores this process may use, at
        most 4 (beyond that the shared database, not the interpreters, limits ingest)."""
        if self.listener_processes:
            return self.listener_processes
        return max(1, min(len(os.sched_getaffinity(0)), AUTO_LISTENER_PROCESSES))

    @property
    def max_instance_bytes(self) -> int:
        """`max_instance_mb` in bytes; 0: no limit."""
        return self.max_instance_mb * 1024 * 1024

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or a SQLite file inside `data_dir` when none is set."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'dicomnode.sqlite'}"


def masked_url(url: str) -> str:
    """A database URL fit for a terminal or a log: its password replaced by `***`."""
    return re.sub(r"^([A-Za-z0-9+.-]+://[^:/@?]*:)[^?]*@", r"\1***@", url)


@dataclass(frozen=True)
class NetworkSettings:
    """Timeouts in seconds for every DICOM association, inbound and outbound.

    `network_timeout` also bounds how long one PDU may take to arrive once it has started, so
    a caller or a destination that drips bytes is dropped like a silent one.
    """

    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    connect_timeout: float = 10.0
    tcp_keepalive_seconds: float = 60.0  # idle time before TCP keepalive probes; 0: off

    def validate(self) -> None:
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "connect_timeout"):
            _check(getattr(self, name) > 0, f"network.{name}", "must be > 0 seconds")
        _check(self.tcp_keepalive_seconds >= 0, "network.tcp_keepalive_seconds", "must be >= 0")


@dataclass(frozen=True)
class CompletionSettings:
    """When a series counts as complete and becomes a job."""

    series_quiet_seconds: float = 30.0
    # A series whose sender released its association (A-RELEASE) after the last instance is
    # complete after this much quiet: the sender said it is done. 0: always series_quiet_seconds.
    release_quiet_seconds: float = 2.0

    def validate(self) -> None:
        _check(self.series_quiet_seconds > 0, "completion.series_quiet_seconds", "must be > 0")
        _check(self.release_quiet_seconds >= 0, "completion.release_quiet_seconds", "must be >= 0")


@dataclass(frozen=True)
class WorkerSettings:
    """How jobs are picked up: worker threads, polling and the lease that guards a claimed job.

    `workers` enhancement workers (0: this process leaves derived jobs to `dicomnode worker`
    processes) and, with `router`, one router for the originals jobs, in each process.
    """

    workers: int = 1
    router: bool = True
    poll_seconds: float = 1.0
    lease_seconds: float = 300.0
    # A derived job waits up to this long while its series' originals are still queued or being
    # sent, so the enhancement does not take the cores their sending needs (0: no wait).
    originals_head_start_seconds: float = 15.0

    def validate(self) -> None:
        _check(self.workers >= 0, "worker.workers", "must be >= 0")
        _check(
            self.originals_head_start_seconds >= 0,
            "worker.originals_head_start_seconds",
            "must be >= 0",
        )
        _check(self.poll_seconds > 0, "worker.poll_seconds", "must be > 0")
        _check(self.lease_seconds >= 5, "worker.lease_seconds", "must be >= 5")


@dataclass(frozen=True)
class RetrySettings:
    """Exponential backoff with jitter for failed jobs, then the dead-letter state.

    The defaults ride out a PACS that is down for a long weekend, as a router should: 7
    attempts in the first hour, then one an hour, for about 3 days (80 attempts).
    """

    max_attempts: int = 80
    initial_delay_seconds: float = 30.0
    multiplier: float = 2.0
    max_delay_seconds: float = 3600.0
    jitter: float = 0.25
    # How often a destination that failed jobs wait for is asked (C-ECHO) whether it is back:
    # when it answers after a probe found it down, the jobs that failed there by then are due
    # at once, not up to max_delay_seconds later (0: off: each finds out at its next attempt).
    probe_seconds: float = 30.0

    def validate(self) -> None:
        _check(self.max_attempts >= 1, "retry.max_attempts", "must be >= 1")
        _check(self.probe_seconds >= 0, "retry.probe_seconds", "must be >= 0 (0: off)")
        _check(self.initial_delay_seconds >= 0, "retry.initial_delay_seconds", "must be >= 0")
        _check(self.multiplier >= 1, "retry.multiplier", "must be >= 1")
        _check(
            self.max_delay_seconds >= self.initial_delay_seconds,
            "retry.max_delay_seconds",
            "must be >= retry.initial_delay_seconds",
        )
        _check(0 <= self.jitter < 1, "retry.jitter", "must be in [0, 1)")


@dataclass(frozen=True)
class RetentionSettings:
    """How long the spool keeps what was delivered; failed work is never purged."""

    keep_days: float = 7.0
    # A derived series QA held back waits this long for an admin's release, then its job is
    # cancelled (and its series purged keep_days later, the originals long delivered).
    held_days: float = 30.0
    check_seconds: float = 3600.0

    def validate(self) -> None:
        _check(self.keep_days >= 0, "retention.keep_days", "must be >= 0 (0: keep forever)")
        _check(self.held_days >= 0, "retention.held_days", "must be >= 0 (0: until released)")
        _check(self.check_seconds > 0, "retention.check_seconds", "must be > 0")


@dataclass(frozen=True)
class HttpSettings:
    """The operator's HTTP endpoint: /metrics (Prometheus text), /healthz and /readyz."""

    enabled: bool = False
    host: str = "127.0.0.1"  # 0.0.0.0 to let a Prometheus on another host scrape it
    port: int = 9112
    check_timeout_seconds: float = 5.0  # /readyz answers 503 when its checks take longer
    # Connections served at once, in all and from one client address; one more is closed at
    # once. Each holds a thread for up to 10 s while its request comes in.
    max_connections: int = 16
    max_connections_per_address: int = 4

    def validate(self) -> None:
        _check(self.host != "", "http.host", "must not be empty")
        _check_port(self.port, "http.port")
        _check(self.check_timeout_seconds > 0, "http.check_timeout_seconds", "must be > 0")
        _check(1 <= self.max_connections <= 1024, "http.max_connections", "must be 1..1024")
        _check(
            1 <= self.max_connections_per_address <= self.max_connections,
            "http.max_connections_per_address",
            f"must be 1..http.max_connections ({self.max_connections})",
        )


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Every other library's loggers (pynetdicom, highdicom, TensorFlow, ...); INFO or DEBUG also
    # lets TensorFlow's C++ core speak (unless TF_CPP_MIN_LOG_LEVEL is set).
    third_party_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class Destination:
    """A DICOM peer (usually a PACS) that receives every finished job."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    tls_ca_certificates: str = ""  # PEM bundle; empty: the system's trust store
    tls_certificate: str = ""  # our client certificate, for peers that require one
    tls_private_key: str = ""
    tls_server_name: str = ""  # the name the peer's certificate must carry; empty: host
    # Storage Commitment (PS3.4 Annex J): the delivery is done only once the peer confirmed
    # that it keeps every instance sent, within commitment_timeout_seconds of the request.
    storage_commitment: bool = False
    commitment_timeout_seconds: float = 60.0
    # The metrics report (an SR document) of each derived series. A PACS without SR storage
    # refuses it, for good, and every derived job would end dead there although its images
    # arrived: false sends the derived images only. The originals always go whole.
    send_metrics_reports: bool = True
    # What goes there: the series as received ("originals"), what the enhancement makes
    # ("derived": the derived series and their metrics reports), or both. A clinical PACS that
    # is to hold only what the modalities made takes ["originals"]; a research archive may
    # take ["derived"].
    send: list[Literal["originals", "derived"]] = field(
        default_factory=lambda: ["originals", "derived"]
    )

    @property
    def server_name(self) -> str:
        return self.tls_server_name or self.host

    @property
    def peer(self) -> str:
        """`AE@host:port`: which PACS the name stands for now (an admin may point it at a
        standby; what the old one stored is then no reason to send the new one less)."""
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def described(self) -> str:
        """`name (AE@host:port)`: how a failure names the destination, whichever job met it."""
        return f"{self.name} ({self.peer})"

    def validate(self, key: str) -> None:
        _check(
            bool(re.match(r"^[A-Za-z0-9_.-]{1,64}$", self.name)),
            f"{key}.name",
            f"{self.name!r} must be 1-64 letters, digits, '_', '.' or '-'",
        )
        _check_ae_title(self.ae_title, f"{key}.ae_title")
        _check(self.host != "", f"{key}.host", "must not be empty")
        _check_port(self.port, f"{key}.port")
        _check(
            self.commitment_timeout_seconds > 0,
            f"{key}.commitment_timeout_seconds",
            "must be > 0 seconds",
        )
        _check_key_pair(self.tls_certificate, self.tls_private_key, f"{key}.")
        _check_file(self.tls_ca_certificates, f"{key}.tls_ca_certificates")
        _check(
            bool(self.send) and len(set(self.send)) == len(self.send),
            f"{key}.send",
            f'{self.send!r} must name "originals", "derived" or both, each once',
        )
        if not self.tls:
            for name in (
                "tls_ca_certificates",
                "tls_certificate",
                "tls_private_key",
                "tls_server_name",
            ):
                _check(not getattr(self, name), f"{key}.{name}", f"needs {key}.tls = true")


@dataclass(frozen=True)
class Peer:
    """A caller we may have to call back: where to send its Storage Commitment reports when
    the association that asked is closed (PS3.4 J.3.3), found by its calling AE title."""

    ae_title: str
    host: str
    port: int

    def validate(self, key: str) -> None:
        _check_ae_title(self.ae_title, f"{key}.ae_title")
        _check(self.host != "", f"{key}.host", "must not be empty")
        _check_port(self.port, f"{key}.port")


@dataclass(frozen=True)
class EnhanceSettings:
    """What a job does to a series before forwarding it (each method gives a derived series)."""

    methods: list[str] = field(default_factory=lambda: ["srcnn"])
    scale: int = 1
    modalities: list[str] = field(default_factory=lambda: ["CT", "MR", "CR", "DX"])
    forward_originals: bool = True
    forward_unenhanced: bool = True
    qa_action: Literal["flag", "hold", "fail"] = "hold"
    self_check: bool = True
    self_check_images: int = 16  # per series, spread evenly; 0: every image (16 frames of a run)
    max_series_mb: int = 4096  # what a job may hold of one series (12 bytes/pixel); 0: no limit
    srcnn_views: int = 0  # SRCNN averaged over this many flips/quarter turns (imaging.symmetry);
    # 0: auto, 8 on a GPU and 1 on a CPU
    uid_root: str = ""  # empty: 2.25.<integer> UIDs, else e.g. "1.2.826.0.1.3680043.10.123."
    model_dir: str = ""  # empty: the models/ folder shipped with dicomnode
    srcnn_series_offset: int = 1000
    baseline_series_offset: int = 2000
    report_series_offset: int = 100  # the metrics SR: derived series number + this
    plugins: list[str] = field(default_factory=list)  # modules that register more methods

    def validate(self) -> None:
        for module in self.plugins:
            try:
                importlib.import_module(module)  # registers its methods (registry.register)
            except ImportError as exc:
                raise ConfigError(
                    f"setting enhance.plugins: cannot import {module!r}: {exc}"
                ) from exc
        for method in self.methods:
            _check(
                method in METHODS,
                "enhance.methods",
                f"{method!r} is not a method (known: {', '.join(METHODS)})",
            )
        _check(len(set(self.methods)) == len(self.methods), "enhance.methods", "has duplicates")
        for modality in self.modalities:
            # compared as the header has it: "ct" would have turned the enhancement off unsaid
            _check(
                isinstance(modality, str)
                and re.fullmatch(r"[A-Z0-9_]{1,16}", modality) is not None,
                "enhance.modalities",
                f"{modality!r} is no DICOM Modality code (upper case, as in CT, MR, CR, DX)",
            )
        _check(self.scale in (1, 2, 3, 4), "enhance.scale", "must be 1, 2, 3 or 4")
        _check(self.self_check_images >= 0, "enhance.self_check_images", "must be >= 0")
        _check(self.max_series_mb >= 0, "enhance.max_series_mb", "must be >= 0 (0: no limit)")
        # imaging.symmetry's counts, spelt out: the settings never import numpy
        _check(
            self.srcnn_views in (0, 1, 2, 4, 8),
            "enhance.srcnn_views",
            "must be 0 (auto: 8 on a GPU, 1 on a CPU), 1, 2, 4 or 8",
        )
        _check(
            self.uid_root == ""
            or (
                bool(re.fullmatch(r"([1-9][0-9]*|0)(\.([1-9][0-9]*|0))*\.", self.uid_root))
                and len(self.uid_root) <= 40
            ),
            "enhance.uid_root",
            "must be empty or a UID prefix of at most 40 characters ending in '.'",
        )
        offsets = [spec.series_offset_key for spec in METHODS.values()]
        for name in (*offsets, "report_series_offset"):
            _check(getattr(self, name) > 0, f"enhance.{name}", "must be > 0")

    @property
    def max_series_bytes(self) -> int:
        """`max_series_mb` in bytes; 0: no limit."""
        return self.max_series_mb * 1024 * 1024

    @property
    def parts(self) -> list[str]:
        """The jobs each complete series gets: its originals (unless switched off, and always
        when nothing is enhanced: the node is then a plain router) and its derived series (when
        methods are configured)."""
        parts = []
        if self.forward_originals or (not self.methods and self.forward_unenhanced):
            parts.append("originals")
        if self.methods:
            parts.append("derived")
        return parts


@dataclass(frozen=True)
class BaselineSettings:
    """The classical baseline (dicomnode.imaging.baseline): denoise, unsharp mask, CLAHE."""

    denoise: Literal["bilateral", "nlm", "none"] = "bilateral"
    denoise_strength: float = 1.5
    unsharp_amount: float = 1.0
    unsharp_sigma: float = 0.7
    clahe_clip: float = 0.0

    def validate(self) -> None:
        for name in ("denoise_strength", "unsharp_amount", "clahe_clip"):
            _check(getattr(self, name) >= 0, f"baseline.{name}", "must be >= 0")
        _check(self.unsharp_sigma > 0, "baseline.unsharp_sigma", "must be > 0 pixels")


@dataclass(frozen=True)
class QaSettings:
    """Warn and fail limits of the no-reference QA (dicomnode.imaging.qa), output vs source."""

    sharpness_ratio_warn: float = 2.0
    sharpness_ratio_fail: float = 4.0
    noise_ratio_warn: float = 1.5
    noise_ratio_fail: float = 2.5
    drift_fraction_warn: float = 0.02
    drift_fraction_fail: float = 0.05
    saturation_fraction_warn: float = 0.005
    saturation_fraction_fail: float = 0.02
    # Do no harm: a method whose self-check says it makes the series worse than the reference
    # (bicubic, or the degraded input at scale 1) is treated like a QA failure (qa_action).
    self_check_mean_min_db: float = 0.0  # the series' mean gain must be at least this
    self_check_image_min_db: float = -1.0  # and no image's gain below this

    MEASURES = ("sharpness_ratio", "noise_ratio", "drift_fraction", "saturation_fraction")

    def limits(self, measure: str) -> tuple[float, float]:
        return getattr(self, f"{measure}_warn"), getattr(self, f"{measure}_fail")

    def validate(self) -> None:
        for measure in self.MEASURES:
            warn, fail = self.limits(measure)
            _check(warn >= 0, f"qa.{measure}_warn", "must be >= 0")
            _check(fail >= warn, f"qa.{measure}_fail", f"must be >= qa.{measure}_warn")


_SECTIONS: dict[str, type] = {
    "node": NodeSettings,
    "network": NetworkSettings,
    "completion": CompletionSettings,
    "worker": WorkerSettings,
    "retry": RetrySettings,
    "retention": RetentionSettings,
    "logging": LoggingSettings,
    "http": HttpSettings,
    "enhance": EnhanceSettings,
    "baseline": BaselineSettings,
    "qa": QaSettings,
}


@dataclass(frozen=True)
class Settings:
    """The node's whole configuration; `source` is the file it came from (None: defaults),
    `overrides` the environment variable behind each key it set (`node.port`, `destinations`)."""

    node: NodeSettings = field(default_factory=NodeSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    qa: QaSettings = field(default_factory=QaSettings)
    destinations: list[Destination] = field(default_factory=list)
    source: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    peers: list[Peer] = field(default_factory=list)

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)

    def sends(self) -> dict[str, list[str]]:
        """What each destination takes, by name (`Destination.send`)."""
        return {d.name: list(d.send) for d in self.destinations}

    def parts_sent(self) -> list[str]:
        """The jobs each complete series gets (`EnhanceSettings.parts`), less a part that no
        destination takes (`Destination.send`): its job would have nowhere to go. Without
        destinations (receive only, or stored until some are added) every part."""
        parts = self.enhance.parts
        if not self.destinations:
            return parts
        return [part for part in parts if any(part in d.send for d in self.destinations)]

    def peer(self, ae_title: str) -> Peer | None:
        """The `[[peers]]` entry of a calling AE title (spaces are not significant, PS3.5 6.2)."""
        return next((p for p in self.peers if p.ae_title.strip() == ae_title.strip()), None)

    def destination_key(self, destination: Destination) -> str:
        """How errors name a destination's settings: `destinations[0]` as in the file."""
        names = [d.name for d in self.destinations]
        if destination.name in names:
            return f"destinations[{names.index(destination.name)}]"
        return f"destination {destination.name}"

    def as_dict(self) -> dict[str, Any]:
        """The effective settings as plain data (what `dicomnode config show` prints)."""
        data: dict[str, Any] = {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}
        data["node"]["data_dir"] = str(self.node.data_path)
        data["node"]["database_url"] = masked_url(self.node.effective_database_url)
        data["destinations"] = [dataclasses.asdict(d) for d in self.destinations]
        data["peers"] = [dataclasses.asdict(p) for p in self.peers]
        return data


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Convert a TOML or environment value to the field's declared type, or say why not."""
    origin = typing.get_origin(kind)
    if origin is Literal:
        choices = typing.get_args(kind)
        _check(value in choices, key, f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is list:
        if isinstance(value, str):
            text = value.strip()
            value = (
                json.loads(text)
                if text.startswith("[")
                else [v.strip() for v in text.split(",") if v.strip()]
            )
        _check(isinstance(value, list), key, "must be a list")
        return [_coerce(v, typing.get_args(kind)[0], key) for v in value]
    if kind is bool:
        if isinstance(value, str):
            _check(
                value.lower() in {"true", "false", "1", "0", "yes", "no"},
                key,
                f"{value!r} is not a boolean",
            )
            return value.lower() in {"true", "1", "yes"}
        _check(isinstance(value, bool), key, f"{value!r} is not a boolean")
        return value
    if kind is int or kind is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {key}: {value!r} is not a number", setting=key) from None
        _check(kind is float or float(value) == number, key, f"{value!r} is not an integer")
        return number
    _check(isinstance(value, str), key, f"{value!r} is not a string")
    return value


def _check_known(cls: type, values: dict[str, Any], section: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        _check(
            False,
            f"{section}.{key}",
            f"unknown setting; did you mean {section}.{close[0]}?"
            if close
            else f"unknown setting (known in [{section}]: {', '.join(sorted(known))})",
        )


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    _check_known(cls, values, section)
    coerced = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    try:
        return cls(**coerced)
    except TypeError as exc:
        raise ConfigError(f"section [{section}]: {exc}") from None


def resolve_config_path(
    explicit: Path | None, environ: dict[str, str] | None = None
) -> Path | None:
    """`--config`, else `$DICOMNODE_CONFIG`, else `config/dicomnode.toml` if present, else None."""
    environ = dict(os.environ) if environ is None else environ
    if explicit is not None:
        return explicit
    if environ.get(CONFIG_ENV_VAR):
        return Path(environ[CONFIG_ENV_VAR])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming the first bad key."""
    environ = dict(os.environ) if environ is None else environ
    path = resolve_config_path(path, environ)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    env = read_env_overrides(environ, _SECTIONS, NOT_SETTING_ENV_VARS, RESERVED_ENV_PREFIXES)
    overrides = dict(env.variables)
    overrides.update({table: TABLE_VARS[table] for table in env.tables})
    try:
        for key in raw:
            _check(
                key in _SECTIONS or key in ("destinations", "peers"),
                key,
                f"unknown section (known: {', '.join([*_SECTIONS, 'destinations', 'peers'])})",
            )
        sections = _load_sections(raw, env.sections, path)
        destinations = _load_destinations(raw, env.tables.get("destinations"), path)
        peers = _load_peers(raw.get("peers", []), env.tables.get("peers"))
        _check(
            not (destinations and sections["node"].receive_only),
            "node.receive_only",
            f"is true but {len(destinations)} destination(s) are configured: "
            "remove the destinations or the setting",
        )
        enhance = sections["enhance"]
        for i, destination in enumerate(destinations):
            _check(
                "derived" in destination.send or enhance.forward_originals or not enhance.methods,
                f"destinations[{i}].send",
                f"{destination.send!r} needs enhance.forward_originals = true: with it false, "
                "each series reaches the destinations inside its derived job",
            )
            _check(
                not _is_this_node(destination, sections["node"]),
                f"destinations[{i}]",
                f"{destination.peer} is this node itself (node.port {sections['node'].port}"
                f"{_set_by(overrides, 'node.port')}, on this host): it would send every series "
                "it receives back to itself, without end; name the PACS there",
            )
        _check(
            not destinations or bool(enhance.parts),
            "enhance.forward_unenhanced",
            "is false with no methods and forward_originals = false: the node makes nothing "
            "to send to its destinations",
        )
        _check(
            not destinations or any(p in d.send for p in enhance.parts for d in destinations),
            "destinations",
            f"no destination's send takes what the node makes ({', '.join(enhance.parts)} "
            "series, by [enhance]): every series would go nowhere",
        )
    except ConfigError as exc:
        raise _naming_the_source(exc, overrides, path) from None
    return Settings(
        **sections, destinations=destinations, peers=peers, source=path, overrides=overrides
    )


def _set_by(overrides: dict[str, str], key: str) -> str:
    """ " from VARIABLE" when an environment variable set `key`: an error that names another
    setting (the file's) still says where the value it clashes with came from."""
    return f" from {overrides[key]}" if key in overrides else ""


def _is_this_node(destination: Destination, node: NodeSettings) -> bool:
    """Whether `destination` is the node's own port on this host, told without a name lookup
    (a config check must not wait on DNS): loopback, any-address, this host's name, or the
    address the node listens on."""
    host = destination.host.strip().lower().strip("[]")
    local = {"localhost", "ip6-localhost", "::1", "0.0.0.0", "::", socket.gethostname().lower()}
    here = host in local or host.startswith("127.") or host == node.host.strip().lower()
    return here and destination.port == node.port


def _naming_the_source(
    error: ConfigError, overrides: dict[str, str], path: Path | None
) -> ConfigError:
    """`error` with where its value came from: the environment variable that set it, else the
    config file (an admin with a file in /etc and a copy in the working folder sees which)."""
    named = naming_the_variable(error, overrides)
    if named is not error or path is None:
        return named
    return ConfigError(f"config file {path}: {error}", setting=error.setting)


def _load_sections(
    raw: dict[str, Any], env_sections: dict[str, dict[str, str]], path: Path | None
) -> dict[str, Any]:
    sections = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name, {})
        _check(isinstance(values, dict), name, "must be a table ([" + name + "])")
        if path is not None:
            values = anchored_paths(name, values, path)
        section = _build(cls, {**values, **env_sections.get(name, {})}, name)
        section.validate()
        sections[name] = section
    return sections


def _load_table(
    table: str,
    cls: Any,
    required: set[str],
    values: Any,
    env_text: str | None,
    path: Path | None,
) -> list[Any]:
    """An array of tables (`[[destinations]]`, `[[peers]]`) as read from the file, or, when its
    variable is set, all of it from the environment as JSON (relative paths then: the working
    directory). Each entry is built and validated, named `table[i]` in errors."""
    if env_text is not None:
        try:
            values = json.loads(env_text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"setting {table}: not valid JSON: {exc}", setting=table) from None
        path = None
    _check(isinstance(values, list), table, "must be an array of tables")
    entries = []
    for i, entry in enumerate(values):
        key = f"{table}[{i}]"
        _check(isinstance(entry, dict), key, "must be a table")
        _check_known(cls, entry, key)  # first: a misspelt key is also a missing one
        missing = required - set(entry)
        _check(not missing, key, f"missing {', '.join(sorted(missing))}")
        if path is not None:
            entry = anchored_paths(table, entry, path)
        item = _build(cls, entry, key)
        item.validate(key)
        entries.append(item)
    return entries


def _check_unique(table: str, names: list[str], what: str) -> None:
    duplicated = sorted({n for n in names if names.count(n) > 1})
    _check(not duplicated, table, f"{what} must be unique: {', '.join(duplicated)}")


def _load_destinations(
    raw: dict[str, Any], env_destinations: str | None, path: Path | None
) -> list[Destination]:
    required = {"name", "ae_title", "host", "port"}
    destinations: list[Destination] = _load_table(
        "destinations", Destination, required, raw.get("destinations", []), env_destinations, path
    )
    _check_unique("destinations", [d.name for d in destinations], "names")
    return destinations


def _load_peers(values: Any, from_env: str | None) -> list[Peer]:
    """`[[peers]]` (or DICOMNODE_PEERS as JSON): each calling AE title at most once."""
    peers: list[Peer] = _load_table(
        "peers", Peer, {"ae_title", "host", "port"}, values, from_env, None
    )
    _check_unique("peers", [p.ae_title.strip() for p in peers], "AE titles")
    return peers
