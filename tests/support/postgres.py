"""A real PostgreSQL server for the tests: Debian's binaries, a temporary cluster, a free port.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as an
unprivileged system user (`dicomnode-test`, created if missing). The cluster trusts local
connections only (loopback TCP and a socket in its own directory); each test gets its own
database, dropped afterwards, so tests never see each other's rows.
"""

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.ports import free_port


def _debian_server_bin() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin that holds a server (Debian's layout)."""
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    numbered = [path for path in found if path.parent.name.isdigit()]
    return max(
        numbered, key=lambda path: int(path.parent.name), default=Path("/usr/lib/postgresql/15/bin")
    )


# DICOMNODE_TEST_PG_BIN names another folder with initdb and postgres (another distribution).
POSTGRES_BIN = Path(os.environ.get("DICOMNODE_TEST_PG_BIN") or _debian_server_bin())
SERVER_USER = "dicomnode-test"
SUPERUSER = "postgres"


def missing_binaries() -> list[str]:
    """The server programs this machine lacks (empty: PostgreSQL tests can run)."""
    return [name for name in ("initdb", "postgres") if not (POSTGRES_BIN / name).is_file()]


def _server_user() -> str | None:
    """Who runs the server: None (ourselves) unless we are root, who may not run it."""
    if os.geteuid() != 0:
        return None
    if not _user_exists():
        added = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=False,
            capture_output=True,
        )
        # Another pytest-xdist worker may have added the user since we looked.
        if added.returncode and not _user_exists():
            raise RuntimeError(f"useradd {SERVER_USER} failed: {added.stderr.decode().strip()}")
    return SERVER_USER


def _user_exists() -> bool:
    found = subprocess.run(["id", "-u", SERVER_USER], capture_output=True, check=False)
    return found.returncode == 0


class PostgresServer:
    """Owns one PostgreSQL cluster in a temporary directory; `database()` makes a fresh one."""

    def __init__(self) -> None:
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="dicomnode-pg-"))
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self.data_dir = self.root / "cluster"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    def _as_server_user(self, command: Sequence[str]) -> list[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return [*prefix, *command]

    def start(self) -> "PostgresServer":
        subprocess.run(
            self._as_server_user(
                [
                    str(POSTGRES_BIN / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    SUPERUSER,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--no-sync",  # a throwaway cluster: durability of its files does not matter
                ]
            ),
            check=True,
            capture_output=True,
        )
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen(
            self._as_server_user(
                [
                    str(POSTGRES_BIN / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a stuck server can be killed whole
        )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: see {self.root / 'postgres.log'}")
            time.sleep(0.1)
        return self

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql.encode())

    def _answers(self) -> bool:
        import psycopg

        try:
            self._admin("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def database(self) -> str:
        """Create an empty database; return its SQLAlchemy URL."""
        name = f"test_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by `database()`, closing whatever still connects to it."""
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if self._process is not None:
                self._shut_down(self._process)
                self._process = None
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _shut_down(self, process: "subprocess.Popen[bytes]") -> None:
        # "Fast" shutdown (ends open sessions), sent to the postmaster itself: runuser, its
        # parent when we are root, does not pass SIGINT on.
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # runuser, the postmaster and its children
            process.wait()
