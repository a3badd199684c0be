"""A PostgreSQL server the suite starts itself (pytest-postgresql's executor), never another.

The server binaries: REDSESSION_PG_CTL, else the machine's (/usr/lib/postgresql/*/bin, then
PATH), else those the pgserver wheel ships, so `make test` works on a fresh machine. It
listens on a free loopback port with its data in a temp dir. PostgreSQL refuses to run as
root: as root, pg_ctl runs as an unprivileged account through a small wrapper script.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import port_for
import psycopg
import pytest
from pytest_postgresql.executors import PostgreSQLExecutor

_names = itertools.count()


def pg_ctl() -> str | None:
    """Where pg_ctl is, or None."""
    if os.environ.get("REDSESSION_PG_CTL"):
        return os.environ["REDSESSION_PG_CTL"]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return found[-1]
    if shutil.which("pg_ctl"):
        return shutil.which("pg_ctl")
    spec = importlib.util.find_spec("pgserver")  # not imported: it warns on import
    if spec and spec.origin:
        wheel = Path(spec.origin).parent / "pginstall" / "bin" / "pg_ctl"
        if wheel.is_file():
            return str(wheel)
    return None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _unprivileged(executable: str, folder: Path) -> str:
    """A pg_ctl that runs as an unprivileged account (PostgreSQL will not run as root)."""
    account = next((a for a in ("postgres", "nobody") if _has_account(a)), None)
    if account is None or not shutil.which("runuser"):
        pytest.skip("running as root with no unprivileged account to run PostgreSQL")
    entry = pwd.getpwnam(account)
    folder.parent.chmod(0o711)  # the account may pass through (mkdtemp made it 0700)
    for p in (folder, *folder.rglob("*")):
        os.chown(p, entry.pw_uid, entry.pw_gid)
    wrapper = folder.parent / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\nexec runuser -u {account} -- "{executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PostgresServer:
    """The suite's server; ``database()`` makes a new, empty database on it."""

    def __init__(self, executor: PostgreSQLExecutor, port: int) -> None:
        self.executor = executor
        self.port = port

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the server takes connections: pg_ctl's wait can end while it is still
        'starting up' (recovery)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def database(self) -> str:
        name = f"mirror_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.executor.stop()

    def start(self) -> None:
        self.executor.start()
        self.executor.wait_for_postgres()
        self.wait_ready()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    executable = pg_ctl()
    if executable is None:
        pytest.skip("no PostgreSQL binaries (install the dev extra: pgserver)")
    base = Path(tempfile.mkdtemp(prefix="redsession-pg-"))
    folder = base / "pg"
    folder.mkdir()
    (folder / "sock").mkdir()
    if os.geteuid() == 0:
        executable = _unprivileged(executable, folder)
    port = port_for.select_random()
    executor = PostgreSQLExecutor(
        executable=executable, host="127.0.0.1", port=port, datadir=str(folder / "data"),
        unixsocketdir=str(folder / "sock"), logfile=str(folder / "log"), startparams="-w",
        dbname="postgres", user="postgres",
    )  # fmt: skip
    try:
        server = PostgresServer(executor, port)
        server.start()
        yield server
    finally:
        if executor.running():
            executor.stop()
        shutil.rmtree(base, ignore_errors=True)
