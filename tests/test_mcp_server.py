"""The MCP server, driven by the SDK's own ClientSession over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import httpx2
import orjson
import pytest
import redis
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from redsession import ConfigError, SessionManager, Settings
from redsession.model.models import utcnow
from redsession.services.auth import TokenTable
from redsession.services.embedded import RedisServer
from redsession.services.mcp_server import run_mcp
from tests.conftest import ServerFactory

TIMEOUT = 30.0
SERVER = [sys.executable, "-m", "redsession", "mcp"]
TOKEN = "s3cret-t0ken"
CONTRACT = {
    "resume_session": ["session_id", "user_id"],
    "list_sessions": [],
    "export_session": ["session_id"],
    "merge_sessions": ["primary_id", "secondary_id"],
    "cleanup_sessions": [],
    "start_session": ["user_id"],
    "log_interaction": ["session_id", "user_message"],
    "get_session_context": ["session_id"],
    "update_session_context": ["session_id", "patch"],
    "set_user_preferences": ["user_id", "preferences"],
    "delete_session": ["session_id"],
    "import_session": ["document"],
    "read_events": [],
}
OPTIONAL = {
    "list_sessions": {"user_id", "limit", "cursor"},
    "start_session": {"context"},
    "log_interaction": {"assistant_response", "metadata", "topics"},
    "get_session_context": {"history"},
    "import_session": {"overwrite"},
    "read_events": {"after", "kinds", "limit"},
}


# -- clients and servers ------------------------------------------------------------------


def _server_env(redis_url: str, **extra: str) -> dict[str, str]:
    # Our own REDSESSION_* only: a token or URL in the outer environment must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
    return {**env, "REDSESSION_REDIS_URL": redis_url, **extra}


@asynccontextmanager
async def stdio_mcp(redis_url: str, errlog: Path, **env: str) -> AsyncIterator[ClientSession]:
    """A ClientSession to a fresh `redsession mcp` child over stdio."""
    params = StdioServerParameters(
        command=SERVER[0], args=SERVER[1:], env={"REDSESSION_REDIS_URL": redis_url, **env}
    )
    try:
        with errlog.open("a") as err:
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(read, write, read_timeout_seconds=TIMEOUT) as session,
            ):
                await session.initialize()
                yield session
    except BaseException:
        print(f"server stderr:\n{errlog.read_text()}")  # shown by pytest on failure
        raise


@asynccontextmanager
async def http_mcp(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(TIMEOUT)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=TIMEOUT) as session,
    ):
        await session.initialize()
        yield session


class HttpServer(NamedTuple):
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def http_server_factory(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., HttpServer]]:
    """``factory(**env)`` starts `redsession mcp --transport http`; returns (url, port)."""
    procs: list[subprocess.Popen[bytes]] = []

    def factory(**env: str) -> HttpServer:
        port = _free_port()
        log = tmp_path_factory.mktemp("mcp-http") / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*SERVER, "--transport", "http"],
                env=_server_env(
                    # INFO: the tests read uvicorn's start and shutdown lines in the log.
                    redis_server.url, REDSESSION_MCP_PORT=str(port), REDSESSION_LOG_LEVEL="INFO",
                    **env,
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"MCP HTTP server exited {proc.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return HttpServer(f"http://127.0.0.1:{port}/mcp", port, proc, log)
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"MCP HTTP server never listened:\n{log.read_text()}")
                time.sleep(0.1)

    yield factory
    for proc in procs:
        if proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def http_server(http_server_factory: Callable[..., HttpServer]) -> HttpServer:
    """One HTTP server (no token) on the shared Redis for the module; tests flush via redis_url."""
    return http_server_factory()


@pytest.fixture
def http_url(http_server: HttpServer, redis_url: str) -> str:
    return http_server.url


# -- calling tools ------------------------------------------------------------------------


def _text(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def ok(s: ClientSession, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await s.call_tool(tool, args or {})
    assert not result.is_error, _text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def fails(s: ClientSession, tool: str, args: dict[str, Any]) -> str:
    """The one-line message of a tool error (isError), never a traceback."""
    result = await s.call_tool(tool, args)
    assert result.is_error, result.structured_content
    text = _text(result)
    assert "\n" not in text
    assert "Traceback" not in text
    return text


async def start(s: ClientSession, user: str = "alice", **kw: Any) -> str:
    sid: str = (await ok(s, "start_session", {"user_id": user, **kw}))["session_id"]
    return sid


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth):
        node = {"d": node}
    return node


# -- tools and schemas --------------------------------------------------------------------


async def test_every_tool_has_a_description_and_schemas(http_url: str) -> None:
    async with http_mcp(http_url) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == set(CONTRACT)
    for name, tool in tools.items():
        assert tool.description, name
        assert len(tool.description) > 20, name
        schema = tool.input_schema
        assert schema["type"] == "object"
        assert sorted(schema.get("required", [])) == sorted(CONTRACT[name]), name
        assert set(schema["properties"]) == set(CONTRACT[name]) | OPTIONAL.get(name, set()), name
        assert tool.output_schema is not None, name
        assert tool.output_schema["type"] == "object", name
    assert tools["get_session_context"].input_schema["properties"]["history"]["default"] == 10
    assert tools["list_sessions"].input_schema["properties"]["user_id"]["default"] is None


async def test_a_session_end_to_end_over_stdio(redis_url: str, tmp_path: Path) -> None:
    # An expired session's index entries, for cleanup_sessions to remove.
    with redis.Redis.from_url(redis_url) as client:
        past = SessionManager(client, clock=lambda: utcnow() - timedelta(days=8))
        past.create_session("old")

    async with stdio_mcp(redis_url, tmp_path / "err.log") as s:
        started = await ok(s, "start_session", {"user_id": "alice", "context": {"lang": "en"}})
        sid = started["session_id"]
        assert started["user_id"] == "alice"
        assert started["context"] == {"lang": "en"}
        assert started["total_interactions"] == 0

        first = await ok(
            s,
            "log_interaction",
            {
                "session_id": sid,
                "user_message": "hello",
                "assistant_response": "hi!",
                "metadata": {"model": "m1", "tokens": 3},
                "topics": ["greeting"],
            },
        )
        assert first["session_id"] == sid
        assert first["topics"] == ["greeting"]
        await ok(s, "log_interaction", {"session_id": sid, "user_message": "weather?"})
        await ok(
            s, "log_interaction", {"session_id": sid, "user_message": "rain?", "topics": ["wx"]}
        )

        updated = await ok(
            s,
            "update_session_context",
            {"session_id": sid, "patch": {"lang": None, "place": {"city": "Oslo"}}},
        )
        assert updated["context"] == {"place": {"city": "Oslo"}}
        updated = await ok(
            s, "update_session_context", {"session_id": sid, "patch": {"place": {"zip": "0150"}}}
        )
        assert updated["context"] == {"place": {"city": "Oslo", "zip": "0150"}}

        prefs = await ok(
            s, "set_user_preferences", {"user_id": "alice", "preferences": {"units": "metric"}}
        )
        assert prefs == {"user_id": "alice", "preferences": {"units": "metric"}}
        prefs = await ok(
            s,
            "set_user_preferences",
            {"user_id": "alice", "preferences": {"units": None, "tone": "brief"}},
        )
        assert prefs["preferences"] == {"tone": "brief"}

        view = await ok(s, "get_session_context", {"session_id": sid, "history": 2})
        assert view["user_id"] == "alice"
        assert view["context"] == {"place": {"city": "Oslo", "zip": "0150"}}
        assert view["preferences"] == {"tone": "brief"}
        assert view["topics"] == ["greeting", "wx"]
        assert view["total_interactions"] == 3
        assert [i["user_message"] for i in view["history"]] == ["weather?", "rain?"]
        default = await ok(s, "get_session_context", {"session_id": sid})
        assert [i["user_message"] for i in default["history"]] == ["hello", "weather?", "rain?"]
        hello = default["history"][0]
        assert hello["id"] == first["interaction_id"]
        assert hello["timestamp"] == first["timestamp"]
        assert hello["assistant_response"] == "hi!"
        assert hello["metadata"] == {"model": "m1", "tokens": 3}

        resumed = await ok(s, "resume_session", {"session_id": sid, "user_id": "alice"})
        assert resumed["session_id"] == sid
        assert resumed["history"][0] == hello

        other = await start(s, "alice")
        await start(s, "bob")
        page = await ok(s, "list_sessions", {"user_id": "alice", "limit": 1})
        assert len(page["sessions"]) == 1
        assert page["next_cursor"]
        rest = await ok(
            s, "list_sessions", {"user_id": "alice", "limit": 1, "cursor": page["next_cursor"]}
        )
        listed = [x["session_id"] for x in page["sessions"] + rest["sessions"]]
        assert sorted(listed) == sorted([sid, other])
        everyone = await ok(s, "list_sessions")
        assert {x["user_id"] for x in everyone["sessions"]} == {"alice", "bob"}

        doc = await ok(s, "export_session", {"session_id": sid})
        assert doc["format"] == "redsession.session"
        assert doc["version"] == 2
        assert [i["user_message"] for i in doc["history"]] == ["hello", "weather?", "rain?"]

        assert await ok(s, "delete_session", {"session_id": sid}) == {
            "session_id": sid,
            "deleted": True,
        }
        gone = await fails(s, "get_session_context", {"session_id": sid})
        assert gone.startswith(f"get_session_context: session {sid!r} ")

        # A deleted id's tombstone refuses a plain import; overwrite brings it back exactly.
        assert "already exists" in await fails(s, "import_session", {"document": doc})
        imported = await ok(s, "import_session", {"document": doc, "overwrite": True})
        assert imported == {"session_id": sid}
        assert await ok(s, "export_session", {"session_id": sid}) == doc

        await ok(s, "log_interaction", {"session_id": other, "user_message": "later"})
        merged = await ok(s, "merge_sessions", {"primary_id": sid, "secondary_id": other})
        assert merged["total_interactions"] == 4
        assert merged["merged_from"] == [other]
        # The merged id now resolves to the primary.
        follow = await ok(s, "resume_session", {"session_id": other, "user_id": "alice"})
        assert follow["session_id"] == sid
        assert (await ok(s, "get_session_context", {"session_id": other}))["session_id"] == sid

        assert await ok(s, "cleanup_sessions") == {"removed": 1}
        assert await ok(s, "cleanup_sessions") == {"removed": 0}


# -- errors -------------------------------------------------------------------------------

Case = Callable[[ClientSession], Awaitable[tuple[str, dict[str, Any], str]]]


async def _unknown_session(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    args = {"session_id": "nope", "user_id": "alice"}
    return "resume_session", args, "resume_session: session 'nope' not found or expired"


async def _wrong_user(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    sid = await start(s, "alice")
    # Word for word what a missing session gets: no probing for other users' ids.
    msg = f"resume_session: session {sid!r} not found or expired"
    return "resume_session", {"session_id": sid, "user_id": "mallory"}, msg


async def _bad_session_id(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "get_session_context", {"session_id": "../../etc/passwd"}, "invalid session id"


async def _bad_user_id(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "start_session", {"user_id": "has space"}, "start_session: invalid user id"


async def _number_for_id(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    msg = "resume_session: invalid arguments: session_id: Input should be a valid string"
    return "resume_session", {"session_id": 42, "user_id": "alice"}, msg


async def _number_for_message(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    args = {"session_id": await start(s), "user_message": 7}
    return "log_interaction", args, "invalid arguments: user_message: Input should be a valid"


async def _missing_argument(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    msg = "log_interaction: invalid arguments: user_message: Field required"
    return "log_interaction", {"session_id": await start(s)}, msg


async def _context_not_object(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "start_session", {"user_id": "alice", "context": [1, 2]}, "invalid arguments: context"


async def _prefs_not_object(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    args = {"user_id": "alice", "preferences": "dark mode"}
    return "set_user_preferences", args, "invalid arguments: preferences: Input should be"


async def _negative_history(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    args = {"session_id": await start(s), "history": -1}
    return "get_session_context", args, "history: Input should be greater than or equal to 0"


async def _deleted_session(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    sid = await start(s)
    await ok(s, "delete_session", {"session_id": sid})
    return "log_interaction", {"session_id": sid, "user_message": "late"}, f"session {sid!r} "


async def _merged_session_write(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    a, b = await start(s), await start(s)
    await ok(s, "merge_sessions", {"primary_id": a, "secondary_id": b})
    msg = f"session {b!r} was merged into {a!r}; use that id"
    return "log_interaction", {"session_id": b, "user_message": "late"}, msg


async def _too_many_topics(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    topics = [f"t{i}" for i in range(300)]
    args = {"session_id": await start(s), "user_message": "x", "topics": topics}
    return "log_interaction", args, "log_interaction: 300 topics; the limit is 256"


async def _context_too_deep(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    args = {"session_id": await start(s), "patch": _nested(40)}
    return "update_session_context", args, "nested deeper than 32 levels"


async def _update_unknown(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "update_session_context", {"session_id": "nope", "patch": {}}, "'nope' not found"


async def _export_unknown(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "export_session", {"session_id": "nope"}, "'nope' not found"


async def _delete_unknown(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "delete_session", {"session_id": "nope"}, "'nope' not found"


async def _bad_cursor(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "list_sessions", {"cursor": "abc"}, "list_sessions: invalid cursor 'abc'"


async def _zero_limit(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "list_sessions", {"limit": 0}, "limit: Input should be greater than or equal to 1"


async def _merge_into_itself(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    sid = await start(s)
    args = {"primary_id": sid, "secondary_id": sid}
    return "merge_sessions", args, "cannot merge a session into itself"


async def _merge_across_users(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    args = {"primary_id": await start(s, "alice"), "secondary_id": await start(s, "bob")}
    return "merge_sessions", args, "sessions belong to different users"


async def _merge_unknown(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    args = {"primary_id": await start(s), "secondary_id": "nope"}
    return "merge_sessions", args, "'nope' not found"


async def _import_garbage(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "import_session", {"document": {"format": "x"}}, "not a valid redsession export"


async def _import_existing(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    sid = await start(s)
    doc = await ok(s, "export_session", {"session_id": sid})
    return "import_session", {"document": doc}, f"import_session: session {sid!r} already exists"


async def _unknown_tool(s: ClientSession) -> tuple[str, dict[str, Any], str]:
    return "drop_everything", {}, "Unknown tool: drop_everything"


ERROR_CASES: list[Case] = [
    _unknown_session,
    _wrong_user,
    _bad_session_id,
    _bad_user_id,
    _number_for_id,
    _number_for_message,
    _missing_argument,
    _context_not_object,
    _prefs_not_object,
    _negative_history,
    _deleted_session,
    _merged_session_write,
    _too_many_topics,
    _context_too_deep,
    _update_unknown,
    _export_unknown,
    _delete_unknown,
    _bad_cursor,
    _zero_limit,
    _merge_into_itself,
    _merge_across_users,
    _merge_unknown,
    _import_garbage,
    _import_existing,
    _unknown_tool,
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.__name__.strip("_"))
async def test_errors_are_one_line_tool_errors(http_url: str, case: Case) -> None:
    async with http_mcp(http_url) as s:
        tool, args, expected = await case(s)
        message = await fails(s, tool, args)
        assert expected in message
        # The server lives on: the next call on the same connection works.
        await start(s)


async def test_storage_unavailable_is_a_tool_error(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    redis_server = server_factory()
    # Retried briefly (not the default 15 s): this Redis stays down.
    async with stdio_mcp(
        redis_server.url, tmp_path / "err.log", REDSESSION_RETRY_DEADLINE="0.3"
    ) as s:
        sid = await start(s)
        redis_server.stop()
        for _ in range(2):  # and again: the server survives its first failure
            message = await fails(s, "log_interaction", {"session_id": sid, "user_message": "x"})
            assert message.startswith("log_interaction: Redis is unavailable")
        assert (await s.list_tools()).tools


async def test_fifty_concurrent_calls_over_stdio(redis_url: str, tmp_path: Path) -> None:
    async with stdio_mcp(redis_url, tmp_path / "err.log") as s:
        await _fifty_concurrent_calls(s)


async def test_fifty_concurrent_calls_over_http(http_url: str) -> None:
    async with http_mcp(http_url) as s:
        await _fifty_concurrent_calls(s)


async def _fifty_concurrent_calls(s: ClientSession) -> None:
    sid = await start(s)
    messages = [f"message {i}" for i in range(50)]
    results = await asyncio.gather(
        *(s.call_tool("log_interaction", {"session_id": sid, "user_message": m}) for m in messages)
    )
    assert [r.is_error for r in results] == [False] * 50
    view = await ok(s, "get_session_context", {"session_id": sid, "history": 100})
    assert view["total_interactions"] == 50
    assert sorted(i["user_message"] for i in view["history"]) == sorted(messages)
    receipts = {r.structured_content["interaction_id"] for r in results if r.structured_content}
    assert receipts == {i["id"] for i in view["history"]}


async def test_a_session_survives_a_restart_of_the_server(redis_url: str, tmp_path: Path) -> None:
    err = tmp_path / "err.log"
    async with stdio_mcp(redis_url, err) as s:
        sid = await start(s, "alice", context={"goal": "trip"})
        logged = [
            await ok(
                s,
                "log_interaction",
                {"session_id": sid, "user_message": q, "assistant_response": a},
            )
            for q, a in (("q1", "a1"), ("q2", "a2"), ("q3", "a3"))
        ]
    # The first process is gone (stdio_client stops it); a new one finds everything.
    async with stdio_mcp(redis_url, err) as s:
        resumed = await ok(s, "resume_session", {"session_id": sid, "user_id": "alice"})
    assert resumed["context"] == {"goal": "trip"}
    assert resumed["total_interactions"] == 3
    assert [i["id"] for i in resumed["history"]] == [r["interaction_id"] for r in logged]
    assert [(i["user_message"], i["assistant_response"]) for i in resumed["history"]] == [
        ("q1", "a1"),
        ("q2", "a2"),
        ("q3", "a3"),
    ]


async def test_http_takes_an_interaction_at_every_size_limit(http_url: str, redis_url: str) -> None:
    # Quotes and backslashes double in JSON: this body is over the SDK's default 4 MiB.
    limit = Settings().max_message_bytes
    user, assistant, note = '"' * limit, "\\" * limit, '"' * 100_000
    async with http_mcp(http_url) as s:
        sid = await start(s)
        args = {"user_message": user, "assistant_response": assistant, "metadata": {"n": note}}
        await ok(s, "log_interaction", {"session_id": sid, **args})
        too_big = await fails(s, "log_interaction", {"session_id": sid, "user_message": user + "x"})
        assert too_big.startswith("log_interaction: user_message is")
    with redis.Redis.from_url(redis_url) as client:
        [stored] = SessionManager(client).get_history(sid)
    assert (stored.user_message, stored.assistant_response) == (user, assistant)
    assert stored.metadata == {"n": note}


# -- HTTP: binding and the bearer token ---------------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_http_binds_loopback_by_default(http_server: HttpServer) -> None:
    assert _listening_addresses(http_server.port) == {"0100007F"}  # 127.0.0.1 only


@pytest.fixture(scope="module")
def token_url(http_server_factory: Callable[..., HttpServer]) -> str:
    return http_server_factory(REDSESSION_MCP_TOKEN=TOKEN).url


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer"],
)
async def test_http_refuses_requests_without_the_token(
    token_url: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(token_url, json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_http_accepts_the_token(token_url: str, redis_url: str) -> None:
    async with http_mcp(token_url, token=TOKEN) as s:
        sid = await start(s)
        await ok(s, "log_interaction", {"session_id": sid, "user_message": "hi"})
        assert (await ok(s, "get_session_context", {"session_id": sid}))["total_interactions"] == 1
    # The scheme is case-insensitive; past the check, the MCP endpoint answers for itself.
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(token_url, json={}, headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code != 401


def test_http_server_stops_cleanly_on_sigterm(
    http_server_factory: Callable[..., HttpServer],
) -> None:
    server = http_server_factory()
    server.proc.terminate()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert server.proc.wait(15) in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


def test_an_empty_token_is_refused_before_serving() -> None:
    with pytest.raises(ConfigError, match="empty"):
        run_mcp(Settings(redis_url="redis://127.0.0.1:1", mcp_token=""), "http")
    with pytest.raises(ConfigError, match="empty"):
        TokenTable.from_settings(Settings(mcp_token=""))


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ConfigError, match="transport"):
        run_mcp(Settings(redis_url="redis://127.0.0.1:1"), "pigeon")  # type: ignore[arg-type]


# -- per-user tokens ------------------------------------------------------------------------

ALICE_TOKEN, BOB_TOKEN, ADMIN_FILE_TOKEN = "alice-token-0123456789", "bob-token-0123456789", (
    "admin-token-0123456789"
)


@pytest.fixture(scope="module")
def users_url(
    http_server_factory: Callable[..., HttpServer], tmp_path_factory: pytest.TempPathFactory
) -> str:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.json"
    tokens.write_bytes(
        orjson.dumps({ALICE_TOKEN: "alice", BOB_TOKEN: "bob", ADMIN_FILE_TOKEN: "*"})
    )
    env = {"REDSESSION_MCP_TOKEN": TOKEN, "REDSESSION_MCP_TOKENS_FILE": str(tokens)}
    return http_server_factory(**env).url


async def test_a_user_token_sees_and_changes_only_its_users_sessions(
    users_url: str, redis_url: str
) -> None:
    async with http_mcp(users_url, token=ALICE_TOKEN) as alice:
        mine = await start(alice, "alice")
        assert "another user" in await fails(alice, "start_session", {"user_id": "bob"})
        async with http_mcp(users_url, token=BOB_TOKEN) as bob:
            theirs = await start(bob, "bob")
            await ok(bob, "log_interaction", {"session_id": theirs, "user_message": "private"})
            listed = await ok(bob, "list_sessions", {})
            assert [s["session_id"] for s in listed["sessions"]] == [theirs]
        not_found = await fails(alice, "get_session_context", {"session_id": "no-such-session"})
        for tool, args in [
            ("get_session_context", {"session_id": theirs}),
            ("export_session", {"session_id": theirs}),
            ("log_interaction", {"session_id": theirs, "user_message": "x"}),
            ("update_session_context", {"session_id": theirs, "patch": {"a": 1}}),
            ("delete_session", {"session_id": theirs}),
            ("merge_sessions", {"primary_id": mine, "secondary_id": theirs}),
        ]:
            message = await fails(alice, tool, args)
            # Someone else's session reads exactly like a missing one.
            assert message.split(": ", 1)[1].replace(theirs, "X") == (
                not_found.split(": ", 1)[1].replace("no-such-session", "X")
            ), message
        for tool, args in [
            ("resume_session", {"session_id": theirs, "user_id": "bob"}),
            ("set_user_preferences", {"user_id": "bob", "preferences": {"x": 1}}),
            ("list_sessions", {"user_id": "bob"}),
            ("cleanup_sessions", {}),
            ("import_session", {"document": {}}),
        ]:
            await fails(alice, tool, args)
        listed = await ok(alice, "list_sessions", {})
        assert [s["session_id"] for s in listed["sessions"]] == [mine]
    for admin_token in (TOKEN, ADMIN_FILE_TOKEN):
        async with http_mcp(users_url, token=admin_token) as admin:
            got = await ok(admin, "get_session_context", {"session_id": theirs})
            assert got["history"][0]["user_message"] == "private"
            await ok(admin, "cleanup_sessions", {})


async def test_another_users_deleted_or_merged_session_reads_as_one_that_never_existed(
    users_url: str,
) -> None:
    """Tombstones name their owner: to anyone else, a deleted or merged-away session is
    exactly a missing one (no "was deleted", and never the primary's id), in every tool."""
    async with (
        http_mcp(users_url, token=ALICE_TOKEN) as alice,
        http_mcp(users_url, token=BOB_TOKEN) as bob,
        http_mcp(users_url, token=TOKEN) as admin,
    ):
        mine = await start(alice, "alice")
        deleted, merged, primary = [await start(bob, "bob") for _ in range(3)]
        await ok(bob, "delete_session", {"session_id": deleted})
        await ok(bob, "merge_sessions", {"primary_id": primary, "secondary_id": merged})
        missing = "never-existed"

        def tools(sid: str) -> list[tuple[str, dict[str, Any]]]:
            return [
                ("resume_session", {"session_id": sid, "user_id": "alice"}),
                ("get_session_context", {"session_id": sid}),
                ("log_interaction", {"session_id": sid, "user_message": "x"}),
                ("update_session_context", {"session_id": sid, "patch": {"a": 1}}),
                ("export_session", {"session_id": sid}),
                ("merge_sessions", {"primary_id": mine, "secondary_id": sid}),
                ("merge_sessions", {"primary_id": sid, "secondary_id": mine}),
                ("delete_session", {"session_id": sid}),
            ]

        for theirs in (deleted, merged, primary):
            for (tool, args), (_, ref_args) in zip(tools(theirs), tools(missing)):
                got = (await fails(alice, tool, args)).replace(theirs, "X")
                want = (await fails(alice, tool, ref_args)).replace(missing, "X")
                assert got == want, (tool, got)
                assert primary not in got
        # The owner and an admin still learn why.
        for who in (bob, admin):
            assert "deleted" in await fails(who, "get_session_context", {"session_id": deleted})
            args = {"session_id": merged, "user_message": "x"}
            assert f"merged into {primary!r}" in await fails(who, "log_interaction", args)


async def test_read_events_is_for_admins_and_pages_the_stream(users_url: str) -> None:
    async with (
        http_mcp(users_url, token=ALICE_TOKEN) as alice,
        http_mcp(users_url, token=TOKEN) as admin,
    ):
        sid = await start(alice, "alice")
        await ok(alice, "log_interaction", {"session_id": sid, "user_message": "private"})
        assert "admin" in await fails(alice, "read_events", {})
        seen: list[dict[str, Any]] = []
        page = await ok(admin, "read_events", {"limit": 7})
        while page["events"]:  # the shared server may hold other tests' events: page on
            seen += page["events"]
            page = await ok(admin, "read_events", {"after": page["after"], "limit": 7})
        assert page["events"] == []
        assert page["after"] == seen[-1]["id"]
        assert len({e["id"] for e in seen}) == len(seen)
        mine = [e for e in seen if e["session_id"] == sid]
        assert [(e["kind"], e["user_id"]) for e in mine] == [("create", "alice"), ("log", "alice")]
        assert "private" not in str(seen)
        logs = await ok(admin, "read_events", {"kinds": ["log"], "limit": 1000})
        assert {e["kind"] for e in logs["events"]} == {"log"}
        assert "invalid arguments" in await fails(admin, "read_events", {"kinds": ["bogus"]})
        assert "invalid event id" in await fails(admin, "read_events", {"after": "x"})


def test_a_bad_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    for content in (b"[]", b"not json", b'{"short": "alice"}', b'{"long-enough-token-1": "a b"}'):
        f = tmp_path / "tokens.json"
        f.write_bytes(content)
        with pytest.raises(ConfigError):
            TokenTable.from_settings(Settings(mcp_tokens_file=f))
    with pytest.raises(ConfigError):
        TokenTable.from_settings(Settings(mcp_tokens_file=tmp_path / "missing.json"))


async def test_http_serves_the_shared_metrics(token_url: str) -> None:
    metrics_url = token_url.removesuffix("/mcp") + "/metrics"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    logged = 'redsession_operations_total{operation="log_interaction"} '

    async def scrape() -> str:
        async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
            assert (await http.get(metrics_url)).status_code == 401
            return (await http.get(metrics_url, headers=auth)).text

    def count(text: str) -> float:
        line = next((x for x in text.splitlines() if x.startswith(logged)), logged + "0")
        return float(line.removeprefix(logged))

    before = count(await scrape())  # the server is shared by this module's tests
    async with http_mcp(token_url, token=TOKEN) as s:
        sid = await start(s)
        await ok(s, "log_interaction", {"session_id": sid, "user_message": "hi"})
    text = await scrape()
    assert count(text) == before + 1
    assert "redsession_redis_up 1.0" in text
    assert "redsession_sessions " in text
