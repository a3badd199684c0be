"""The valkey-glide driver's own rules (storage/glide.py). The behaviour suite runs on it in
`make test-glide`: the asyncio tests again, with REDSESSION_ASYNC_DRIVER=valkey-glide."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import glide
import pytest
from redis.exceptions import (
    AuthenticationError,
    MasterDownError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from redsession import AsyncSessionManager, ConfigError
from redsession.storage.glide import redis_error
from tests.conftest import ServerFactory
from tests.topology import connected_clients


def glide_manager(url: str, **settings: object) -> AsyncSessionManager:
    return AsyncSessionManager.from_url(url, async_driver="valkey-glide", **settings)


# -- what it refuses, at construction ------------------------------------------------------


def test_sentinel_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="no Sentinel client"):
        glide_manager("redis+sentinel://127.0.0.1:26379/mymaster")


def test_write_replicas_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="WAIT would hold up"):
        glide_manager("redis://127.0.0.1:6379/0", write_replicas=1)


def test_tls_without_the_hostname_check_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_check_hostname off"):
        glide_manager("rediss://127.0.0.1:6379/0", tls_check_hostname=False)
    with pytest.raises(ConfigError, match=r"tls_ca_certs: .* is not a file"):
        glide_manager("rediss://127.0.0.1:6379/0", tls_ca_certs=tmp_path / "missing.pem")


# -- failures, as redis-py raises them -----------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("READONLY You cannot write against a read only replica.", ReadOnlyError),
        ("MASTERDOWN Link with MASTER is down", MasterDownError),
        ("TRYAGAIN Multiple keys request during rehashing of slot", TryAgainError),
        ("NOSCRIPT No matching script", NoScriptError),
        ("NOAUTH Authentication required.", AuthenticationError),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", ResponseError),
        ("ERR something else", ResponseError),
    ],
)
async def test_server_errors_map_to_redis_py_exceptions(
    redis_url: str, reply: str, expected: type[Exception]
) -> None:
    """The server's own error replies, as valkey-glide words them, come out as the redis-py
    exception of the same meaning (the retry policy decides on those)."""
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    c = await glide.GlideClient.create(
        glide.GlideClientConfiguration([glide.NodeAddress(host, int(port))])
    )
    try:
        with pytest.raises(glide.GlideError) as caught:
            await c.custom_command(["EVAL", f"return redis.error_reply('{reply}')", "0"])
    finally:
        await c.close()
    assert type(redis_error(caught.value)) is expected


# -- scripts, blocking commands, loops -----------------------------------------------------


async def test_a_blocking_wait_holds_up_no_other_call(redis_url: str) -> None:
    """XREAD BLOCK goes on a connection of its own: on the shared one, every other call would
    wait behind it. The reads make no events, so the wait runs its whole time."""
    m = glide_manager(redis_url, socket_timeout=10.0)
    try:
        sid = (await m.create_session("alice")).session_id
        after = (await m.events()).after
        waiting = asyncio.ensure_future(m.wait_for_events(after, block=3.0))
        await asyncio.sleep(0.2)  # the XREAD is on the server
        for _ in range(20):
            assert (await m.get_session(sid)).session_id == sid
        assert not waiting.done()  # 20 round trips came back while it still waits
        assert (await waiting).events == []
    finally:
        await m.close()


async def test_a_second_live_loop_is_refused_clearly(redis_url: str) -> None:
    """valkey-glide delivers replies through the loop of its first client: a second loop
    open at the same time would wait forever, so it is told why instead."""
    m = glide_manager(redis_url)
    try:
        sid = (await m.create_session("alice")).session_id
        errors: list[BaseException] = []

        def other_loop() -> None:
            try:
                asyncio.run(m.get_session(sid))
            except Exception as e:  # noqa: BLE001 (what the thread met, for the test to see)
                errors.append(e)

        t = threading.Thread(target=other_loop)
        t.start()
        t.join(30)
        assert not t.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], ConfigError)
        assert "one event loop at a time" in str(errors[0])
        assert (await m.get_session(sid)).session_id == sid  # the first loop still works
    finally:
        await m.close()


def test_each_new_loop_takes_over_and_the_old_connections_close(
    server_factory: ServerFactory,
) -> None:
    """Repeated asyncio.run() (how frameworks' run_sync calls look): each loop gets clients
    of its own, and those of the closed loop before it are closed, not left open."""
    server = server_factory()
    m = glide_manager(server.url)
    sid = asyncio.run(m.create_session("alice")).session_id
    for n in range(5):
        asyncio.run(m.log_interaction(sid, user_message=str(n)))
    assert connected_clients(server.url, 1) == 1
    asyncio.run(m.close())
    assert connected_clients(server.url, 0) == 0
    again = glide_manager(server.url)

    async def read() -> int:
        try:
            return (await again.get_session(sid)).total_interactions
        finally:
            await again.close()

    assert asyncio.run(read()) == 5
