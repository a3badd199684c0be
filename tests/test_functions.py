"""The scripts as Redis functions (commands.Script): loaded where missing, one library per
code, and a no-writes twin that serves reads where Redis refuses writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from redsession import AsyncSessionManager, SessionManager, StorageError
from redsession.cli import cli as main_cli
from redsession.cli.errors import EXIT_STORAGE
from redsession.config import Settings
from redsession.storage import libraries, scripts
from redsession.storage.commands import Eval, Script, text
from redsession.storage.drivers import SyncDriver
from tests.conftest import ServerFactory

ALL = libraries.release_scripts()


def _functions(client: redis.Redis) -> dict[str, list[str]]:
    """Every function on the server: name -> flags."""
    out = {}
    for lib in client.function_list():
        for f in _pairs(lib)["functions"]:
            info = _pairs(f)
            out[text(info["name"])] = [text(x) for x in info["flags"]]
    return out


def _pairs(flat: list[object]) -> dict[str, object]:
    it = iter(flat)
    return {text(k): v for k, v in zip(it, it)}  # type: ignore[arg-type]


def test_every_script_loads_with_its_no_writes_twin(redis_client: redis.Redis) -> None:
    assert len(ALL) >= 20  # the session scripts and the others: the list is not empty
    for s in ALL:
        redis_client.function_load(s.library, replace=True)
    found = _functions(redis_client)
    for s in ALL:
        assert found[s.function] == []
        assert found[s.readonly_function] == ["no-writes"]


def test_a_server_that_lost_its_functions_gets_them_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with SessionManager.from_url(redis_url) as m:
        sid = m.create_session("alice").session_id
        redis_client.function_flush()  # a server restarted without its data, or a new node
        m.log_interaction(sid, user_message="after the flush")
        assert [i.user_message for i in m.get_history(sid)] == ["after the flush"]
    assert scripts.APPEND.function in _functions(redis_client)


async def test_the_asyncio_manager_loads_them_again_too(
    redis_url: str, redis_client: redis.Redis
) -> None:
    m = AsyncSessionManager.from_url(redis_url)
    try:
        sid = (await m.create_session("alice")).session_id
        redis_client.function_flush()
        await m.log_interaction(sid, user_message="after the flush")
        assert [i.user_message for i in await m.get_history(sid)] == ["after the flush"]
    finally:
        await m.close()


def test_each_release_calls_its_own_code(redis_client: redis.Redis) -> None:
    """Two versions of a script (a rolling deploy) live side by side on one server."""
    old, new = Script("probe", "return 'old'"), Script("probe", "return 'new'")
    assert old.function != new.function
    assert old.library != new.library
    driver = SyncDriver(redis_client)

    def call(s: Script) -> object:
        return driver.run(_call(s))

    assert (call(old), call(new), call(old)) == (b"old", b"new", b"old")


def test_a_read_only_call_cannot_write(redis_client: redis.Redis) -> None:
    """The no-writes flag is the server's: a call marked read-only that writes is refused."""
    writer = Script("probe_write", "return redis.call('SET', KEYS[1], 'x')")
    driver = SyncDriver(redis_client)

    def op():  # type: ignore[no-untyped-def]
        return (yield Eval(writer, ("probe:ro",), (), readonly=True))

    with pytest.raises(StorageError, match="Write commands are not allowed"):
        driver.run(op())
    assert redis_client.exists("probe:ro") == 0


def test_reads_are_served_at_maxmemory_and_writes_refused(server_factory: ServerFactory) -> None:
    """At maxmemory (noeviction) a plain read runs as a no-writes function; a write, or a
    read that counts as activity, gets StorageError, and nothing of the session is lost."""
    server = server_factory()
    admin = redis.Redis.from_url(server.url)
    with SessionManager(redis.Redis.from_url(server.url), Settings(redis_url=server.url)) as m:
        sid = m.create_session("alice", context={"k": 1}).session_id
        m.log_interaction(sid, user_message="before", assistant_response="kept")

        def reads() -> None:
            assert m.get_session(sid).total_interactions == 1
            assert [i.user_message for i in m.get_history(sid)] == ["before"]
            assert m.export_session_data(sid)["session"]["total_interactions"] == 1
            assert [s.session_id for s in m.list_active_sessions("alice").sessions] == [sid]

        # Loading a library is a write: at maxmemory only the functions already there run
        # (they persist with the data; docs/operations.md).
        reads()
        admin.config_set("maxmemory", "1")
        try:
            reads()
            with pytest.raises(StorageError, match="maxmemory"):
                m.log_interaction(sid, user_message="refused")
            with pytest.raises(StorageError, match="maxmemory"):
                m.resume_session(sid, "alice")
        finally:
            admin.config_set("maxmemory", "0")
        assert m.get_session(sid, history=10).total_interactions == 1
        m.log_interaction(sid, user_message="after")
        assert [i.user_message for i in m.get_history(sid)] == ["before", "after"]
    admin.close()



def test_prune_deletes_other_releases_libraries_and_keeps_this_ones(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """An old release's library goes; this release's, and libraries not named as ours, stay.
    A deleted library still in use is loaded again by its caller."""
    old = Script("probe_old_release", "return 'old'")
    other = "#!lua name=someone_else\nredis.register_function('else_f', function() return 1 end)"
    redis_client.function_load(old.library, replace=True)
    redis_client.function_load(other, replace=True)
    with SessionManager.from_url(redis_url) as m:
        sid = m.create_session("alice").session_id  # this release's CREATE is loaded
        dry = m.prune_scripts(dry_run=True)
        assert old.library_name in dry.deleted
        assert scripts.CREATE.library_name in dry.kept
        assert old.library_name in _libraries(redis_client)  # a dry run deletes nothing

        cli = CliRunner().invoke(
            main_cli, ["--redis-url", redis_url, "--data-dir", str(tmp_path), "prune-scripts"]
        )
        assert cli.exit_code == 0, cli.output
        assert f"deleted {len(dry.deleted)} library(ies) of other releases" in cli.output
        left = _libraries(redis_client)
        assert old.library_name not in left
        assert "someone_else" in left
        assert scripts.CREATE.library_name in left
        assert m.prune_scripts().deleted == []  # nothing left to do
        m.log_interaction(sid, user_message="still works")
    assert SyncDriver(redis_client).run(_call(old)) == b"old"  # loaded again on its next call


def _libraries(client: redis.Redis) -> set[str]:
    return {text(_pairs(lib)["library_name"]) for lib in client.function_list()}  # type: ignore[arg-type]


def _call(s: Script):  # type: ignore[no-untyped-def]
    return (yield Eval(s, ("probe",), ()))


def test_prune_without_the_admin_commands_is_a_one_line_error(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The app's ACL user (docs/security.md) may not list or delete libraries."""
    server = server_factory(password="admin-pw")
    with redis.Redis.from_url(server.url) as admin:
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "app", "on", ">app-pw", "~*", "-@all", "+fcall", "+function|load"
        )
    url = f"redis://app:app-pw@127.0.0.1:{server.port}/0"
    result = CliRunner().invoke(
        main_cli, ["--redis-url", url, "--data-dir", str(tmp_path), "prune-scripts"]
    )
    assert result.exit_code == EXIT_STORAGE, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert "no permissions" in line
