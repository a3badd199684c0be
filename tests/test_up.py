"""`redsession up`: everything in one command, stopped by Ctrl-C with nothing lost."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redsession import SessionManager
from tests.conftest import ServerFactory

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Up:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = _free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
        if "REDSESSION_SERVER_BIN" in os.environ:
            clean["REDSESSION_SERVER_BIN"] = os.environ["REDSESSION_SERVER_BIN"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "redsession", "--data-dir", str(data_dir), "up",
             "--mcp-port", str(self.port)],
            env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        while not self.lines or not self.lines[-1].startswith("Ctrl-C stops everything"):
            line = self.proc.stdout.readline().decode()
            if not line:
                self.proc.kill()
                pytest.fail(f"up exited early: {''.join(self.lines)}")
            self.lines.append(line)

    @property
    def redis_url(self) -> str:
        match = re.search(r"^redis\s+(\S+)", "".join(self.lines), re.M)
        assert match
        return match.group(1)

    def interrupt(self) -> str:
        """Ctrl-C; returns the rest of the output once it has stopped."""
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.returncode == 0, out.decode()
        return out.decode()


def test_sessions_survive_ctrl_c_and_a_fresh_up(tmp_path: Path) -> None:
    first = Up(tmp_path)
    try:
        out = "".join(first.lines)
        assert "(embedded" in out
        assert f"http://127.0.0.1:{first.port}/mcp" in out
        assert '"mcpServers"' in out
        _wait_for_port(first.port)
        with SessionManager.from_url(first.redis_url) as m:
            sid = m.create_session("alice", context={"plan": 1}).session_id
            for n in range(5):
                m.log_interaction(sid, user_message=f"m{n}")
    finally:
        rest = first.interrupt()
    assert "stopped." in rest
    assert (tmp_path / "sessions" / f"{sid}.json").is_file()  # the final dump

    second = Up(tmp_path)
    try:
        with SessionManager.from_url(second.redis_url) as m:
            s = m.resume_session(sid, "alice")
            assert [i.user_message for i in s.history] == [f"m{n}" for n in range(5)]
            assert s.context == {"plan": 1}
    finally:
        second.interrupt()


def test_with_a_redis_url_it_starts_no_server(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    server = server_factory()
    up = Up(tmp_path / "data", REDSESSION_REDIS_URL=server.url)
    assert "no server started" in "".join(up.lines)
    assert up.redis_url == server.url
    up.interrupt()
    assert not (tmp_path / "data" / "redis").exists()
