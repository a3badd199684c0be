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

import httpx
import pytest
from cryptography.fernet import Fernet

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


def _up(data_dir: Path, port: int, api_port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
    if "REDSESSION_SERVER_BIN" in os.environ:
        clean["REDSESSION_SERVER_BIN"] = os.environ["REDSESSION_SERVER_BIN"]
    return subprocess.Popen(
        [sys.executable, "-m", "redsession", "--data-dir", str(data_dir), "up",
         "--mcp-port", str(port), "--api-port", str(api_port)],
        env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


class Up:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port, self.api_port = _free_port(), _free_port()
        self.proc = _up(data_dir, self.port, self.api_port, env)
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
        api = f"http://127.0.0.1:{first.api_port}"
        assert f"{api}/v1" in out
        _wait_for_port(first.api_port)
        listed = httpx.get(f"{api}/v1/sessions", timeout=10).json()["sessions"]
        assert [x["session_id"] for x in listed] == [sid]
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


@pytest.mark.parametrize("problem", ["keys that open no dump", "a symlinked quarantine"])
def test_up_stops_before_restoring_into_a_misconfigured_store(
    tmp_path: Path, server_factory: ServerFactory, problem: str
) -> None:
    data_dir, outside = tmp_path / "data", tmp_path / "outside"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with SessionManager.from_url(
        server_factory().url, data_dir=data_dir, encryption_keys=[old]
    ) as m:
        for _ in range(3):
            m.log_interaction(m.create_session("alice").session_id, user_message="keep me")
        assert m.dump_sessions().written == 3
    folder = data_dir / "sessions"
    (folder / "broken.json").write_bytes(b"{")
    if problem == "a symlinked quarantine":
        outside.mkdir()
        (folder / "quarantine").symlink_to(outside)
        expected = "quarantine is a symlink; refusing to write through it"
        keys = old
    else:
        expected = "no configured encryption key opens 3 of the 3 encrypted dump files"
        keys = new
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    lines: list[str] = []
    with _up(data_dir, _free_port(), _free_port(), {"REDSESSION_ENCRYPTION_KEYS": keys}) as proc:
        assert proc.stdout is not None
        while line := proc.stdout.readline().decode():
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):  # the old behaviour: it went on
                proc.send_signal(signal.SIGINT)
                proc.communicate(timeout=60)
                pytest.fail(f"up started everything: {''.join(lines)}")
        proc.wait(60)
    text = "".join(lines)
    assert proc.returncode == 2, text
    assert expected in text
    assert "worker  pid" not in text  # it stopped at the restore, before starting anything
    errors = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1
    assert expected in errors[0]
    # No dump file moved to the quarantine (nor anywhere else), none removed.
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    if problem == "a symlinked quarantine":
        assert os.listdir(outside) == []
    else:
        assert not (folder / "quarantine").exists()
