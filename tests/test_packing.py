"""storage/packing.py: commands go out byte for byte as redis-py packs them, in one hiredis
call, on every kind of client that storage/connection.py builds."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from redsession.config import Settings
from redsession.storage import packing
from redsession.storage.connection import async_client, sync_client

# redis-py's own packer in pure Python, with the encoder of a client built with its defaults.
REFERENCE = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)

COMMANDS = [
    ("SET", "k", "v"),
    ("CLIENT KILL", "ID", 5),  # a name of several words goes out as several arguments
    (b"CONFIG GET", b"maxmemory"),
    ("  FUNCTION\tLOAD ", "REPLACE", "#!lua name=x\nreturn 1"),
    ("FCALL", "f", 2, "k1", "k2", "é ☃ 🎉", 1.5, -3, 2**70, 0.1, float("inf"), 1e-300, 0),
    ("SET", b"\x00\xff\r\n", bytearray(b"ba"), memoryview(b"mv")),
    ("SET", "big", "x" * 100_000),  # beyond redis-py's buffer cutoff: sent in pieces there
    ("SET", "big", memoryview(b"y" * 10_000)),
    ("PING",),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: repr(a)[:40])
def test_a_command_packs_as_redis_py_packs_it(args: tuple[Any, ...]) -> None:
    expected = b"".join(REFERENCE.pack(*args))
    assert b"".join(packing.pack(*args)) == expected
    sync_conn = packing.packing(redis.Connection)()
    assert b"".join(sync_conn.pack_command(*args)) == expected
    assert b"".join(sync_conn.pack_commands([args, args])) == expected * 2
    async_conn = packing.packing(redis.asyncio.Connection)()
    assert b"".join(async_conn.pack_command(*args)) == expected
    assert b"".join(async_conn.pack_commands([args, args])) == expected * 2


@pytest.mark.parametrize("bad", [True, None, object(), {"a": 1}, ["l"]], ids=repr)
def test_an_argument_redis_py_refuses_is_refused_with_its_message(bad: object) -> None:
    with pytest.raises(redis.DataError) as theirs:
        REFERENCE.pack("SET", "k", bad)
    with pytest.raises(redis.DataError) as ours:
        packing.pack("SET", "k", bad)
    assert str(ours.value) == str(theirs.value)


def test_a_hiredis_without_memoryviews_gets_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # hiredis before 3.0 refused bytearray and memoryview; the packer then copies them.
    real = packing.pack_command
    assert real is not None

    def old_hiredis(args: tuple[Any, ...]) -> bytes:
        if any(isinstance(a, (bytearray, memoryview)) for a in args):
            raise TypeError("A tuple item must be str, int, float or bytes.")
        return real(args)

    monkeypatch.setattr(packing, "pack_command", old_hiredis)
    args = ("SET", bytearray(b"k"), memoryview(b"v"))
    assert b"".join(packing.pack(*args)) == b"".join(REFERENCE.pack(*args))


def test_without_hiredis_redis_py_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packing, "pack_command", None)
    packing.packing.cache_clear()
    try:
        assert packing.packing(redis.Connection) is redis.Connection
    finally:
        packing.packing.cache_clear()


CLIENTS = [
    ("redis://127.0.0.1:1/0", redis.Connection, redis.asyncio.Connection),
    ("rediss://127.0.0.1:1/0", redis.SSLConnection, redis.asyncio.SSLConnection),
    ("unix:///nowhere.sock?db=0",
     redis.UnixDomainSocketConnection, redis.asyncio.UnixDomainSocketConnection),
    ("redis+sentinel://127.0.0.1:1/svc",
     redis.sentinel.SentinelManagedConnection, redis.asyncio.sentinel.SentinelManagedConnection),
    ("rediss+sentinel://127.0.0.1:1/svc", redis.sentinel.SentinelManagedSSLConnection,
     redis.asyncio.sentinel.SentinelManagedSSLConnection),
]  # fmt: skip
GET = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


@pytest.mark.parametrize(("url", "sync_class", "async_class"), CLIENTS, ids=lambda v: str(v)[:30])
def test_every_pool_packs_in_one_hiredis_call(
    url: str, sync_class: type, async_class: type, hiredis_calls: list[tuple[Any, ...]]
) -> None:
    # Connections are made without connecting: only the packing is at stake here; the
    # behaviour suites run every command on real servers through these same classes.
    c = sync_client(url, Settings())
    conn = c.connection_pool.make_connection()
    assert isinstance(conn, sync_class)  # TLS stays TLS, Sentinel's stays Sentinel's
    assert b"".join(conn.pack_command("GET", "k")) == GET
    c.close()
    a = async_client(url, Settings())
    aconn = a.connection_pool.make_connection()
    assert isinstance(aconn, async_class)
    assert b"".join(aconn.pack_command("GET", "k")) == GET
    assert hiredis_calls == [(b"GET", "k")] * 2
