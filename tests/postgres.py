"""A throw-away PostgreSQL server for tests, from Debian's package.

``PostgresServer`` runs initdb in a temporary folder and starts the server on
a free port of 127.0.0.1 (its unix socket in that folder, fsync off: the data
is thrown away). PostgreSQL refuses to run as root, so as root the folder and
the server belong to an unprivileged user: ``postgres`` (the package creates
it), else ``nobody``. ``make test`` installs the package when it is missing.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

INSTALL = "apt-get install postgresql"
_numbers = itertools.count(1)


def binaries() -> Path:
    """The folder of initdb and pg_ctl, the newest installed PostgreSQL's."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); run: sudo {INSTALL}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    """The user to run the server as: None for the current one, unless it is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("Running as root, PostgreSQL needs an unprivileged user (postgres, nobody).")


class PostgresServer:
    """One PostgreSQL server in a temporary folder; ``stop()`` ends it and removes the folder."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.user = _server_user()
        self.folder = Path(tempfile.mkdtemp(prefix="hostwire-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.running = False
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                "--no-sync", "--no-instructions",
            )  # fmt: skip
            self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """The server's maintenance database, as a SQLAlchemy URL (psycopg 3)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self.running = True

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server; idempotent. ``remove``: at once, and delete its data.

        A server stopped to be started again shuts down cleanly ("fast": it ends
        the sessions, then writes what commits left in memory, synchronous_commit
        being off).
        """
        if self.running:
            self.running = False
            mode = "immediate" if remove else "fast"
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"test_{os.getpid()}_{next(_numbers)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
