"""Tests for the `redsession` CLI: every command and every error exit, in-process and as a
real subprocess, and a 10,000-session export | import round trip between two servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner, Result
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console

from redsession import SessionManager
from redsession.cli import cli
from redsession.cli import errors as cli_errors
from redsession.cli import output as cli_output
from redsession.cli import sessions as cli_sessions
from redsession.config import Settings
from redsession.errors import (
    ConcurrentModification,
    ConfigError,
    CorruptData,
    InvalidSessionId,
    PermissionDenied,
    RedsessionError,
    SessionExists,
    SessionMerged,
    SessionNotFound,
    StorageError,
    StorageUnavailable,
)
from redsession.maintenance.snapshots import DumpReport, sessions_dir
from redsession.model.models import SessionExport, utcnow

SUBPROCESS_TIMEOUT = 60


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's own settings must not leak in; ./data must not land in the repo.
    for name in list(os.environ):
        if name.startswith("REDSESSION_") and name != "REDSESSION_SERVER_BIN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def manager(redis_url: str, data_dir: Path) -> Iterator[SessionManager]:
    with SessionManager(redis.Redis.from_url(redis_url), Settings(data_dir=data_dir)) as m:
        yield m


# The Redis some tests point at is down for good: retry it briefly, not for the default 15 s.
ENV = {"REDSESSION_RETRY_DEADLINE": "0.3"}


@pytest.fixture
def invoke(redis_url: str, data_dir: Path) -> Callable[..., Result]:
    """invoke(*args, input=None, url=redis_url): the CLI in-process, stdout and stderr apart."""
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, url: str | None = None) -> Result:
        base = ["--redis-url", url or redis_url, "--data-dir", str(data_dir)]
        return runner.invoke(cli, [*base, *args], input=input, env=ENV, catch_exceptions=False)

    return run


def _session(m: SessionManager, user: str = "alice", messages: int = 2, **ctx: Any) -> str:
    sid = m.create_session(user, context=ctx or {"lang": "en"}).session_id
    for i in range(messages):
        m.log_interaction(
            sid,
            user_message=f"question {i} [/bold] [red]é✓",  # rich markup must print as text
            assistant_response=f"answer {i}",
            metadata={"i": i},
            topics=[f"t{i % 2}"],
        )
    return sid


def _one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# -- error mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PermissionDenied("s"), cli_errors.EXIT_PERMISSION),
        (SessionMerged("s", "p"), cli_errors.EXIT_NOT_FOUND),
        (SessionNotFound("s"), cli_errors.EXIT_NOT_FOUND),
        (StorageUnavailable("down"), cli_errors.EXIT_STORAGE),
        (StorageError("OOM"), cli_errors.EXIT_STORAGE),
        (ConfigError("bad"), cli_errors.EXIT_USAGE),
        (InvalidSessionId("bad id"), cli_errors.EXIT_USAGE),
        (SessionExists("there"), cli_errors.EXIT_ERROR),
        (ConcurrentModification("busy"), cli_errors.EXIT_ERROR),
        (CorruptData("junk"), cli_errors.EXIT_ERROR),
    ],
)
def test_each_error_kind_has_its_exit_code(error: Exception, code: int) -> None:
    assert isinstance(error, RedsessionError)
    assert cli_errors.classify(error)[0] == code


# -- list, show ----------------------------------------------------------------------------


def test_list_shows_sessions_newest_first(invoke: Any, manager: SessionManager) -> None:
    assert invoke("list").stdout.strip() == "no live sessions"
    a, b = _session(manager), _session(manager, "bob")
    result = invoke("list")
    assert result.exit_code == 0
    assert result.stdout.index(b) < result.stdout.index(a)  # whole ids, not cut
    only_bob = invoke("list", "--user", "bob")
    assert b in only_bob.stdout
    assert a not in only_bob.stdout


def test_list_pages_with_a_cursor(invoke: Any, manager: SessionManager) -> None:
    ids = {_session(manager, messages=0) for _ in range(3)}
    first = invoke("--json", "list", "--limit", "2")
    page = orjson.loads(first.stdout)
    assert len(page["sessions"]) == 2
    assert f"--cursor {page['next_cursor']}" in invoke("list", "--limit", "2").stderr
    rest = orjson.loads(invoke("list", "--json", "--cursor", page["next_cursor"]).stdout)
    assert {s["session_id"] for s in page["sessions"] + rest["sessions"]} == ids
    assert rest["next_cursor"] is None


def test_list_rejects_a_bad_limit(invoke: Any) -> None:
    assert invoke("list", "--limit", "0").exit_code == 2


def test_show_prints_state_and_history(invoke: Any, manager: SessionManager) -> None:
    sid = _session(manager, messages=3)
    result = invoke("show", sid, "--history", "2")
    assert result.exit_code == 0
    assert sid in result.stdout
    assert "question 2 [/bold] [red]é✓" in result.stdout
    assert "question 0" not in result.stdout
    as_json = orjson.loads(invoke("--json", "show", sid, "--history", "2").stdout)
    expected = manager.get_session(sid, history=2).model_dump(mode="json")
    assert as_json == expected


def test_show_missing_session_exits_3(invoke: Any) -> None:
    line = _one_line_error(invoke("show", "nosuchsession"), 3)
    assert "'nosuchsession'" in line
    assert "redsession list" in line


def test_show_invalid_id_is_a_usage_error(invoke: Any) -> None:
    _one_line_error(invoke("show", "../../etc/passwd"), 2)


# -- export --------------------------------------------------------------------------------


def test_export_one_session_to_stdout_and_file(
    invoke: Any, manager: SessionManager, tmp_path: Path
) -> None:
    sid = _session(manager)
    doc = manager.export_session_data(sid)
    assert orjson.loads(invoke("export", sid).stdout) == doc
    out = tmp_path / "one.json"
    result = invoke("export", sid, "-o", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert orjson.loads(out.read_bytes()) == doc
    summary = orjson.loads(invoke("export", sid, "-o", str(out), "--json").stdout)
    assert summary == {"exported": 1, "output": str(out)}


def test_export_all_writes_json_lines(invoke: Any, manager: SessionManager, tmp_path: Path) -> None:
    ids = [_session(manager, "alice"), _session(manager, "bob"), _session(manager, "bob")]
    out = tmp_path / "all.jsonl"
    assert invoke("export", "--all", "-o", str(out)).exit_code == 0
    lines = out.read_bytes().splitlines()
    assert sorted(orjson.loads(x)["session"]["session_id"] for x in lines) == sorted(ids)
    bob = invoke("export", "--all", "--user", "bob").stdout.splitlines()
    assert sorted(orjson.loads(x)["session"]["session_id"] for x in bob) == sorted(ids[1:])


def test_progress_shows_on_a_terminal_only(
    invoke: Any, manager: SessionManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        _session(manager)
    out = tmp_path / "all.jsonl"
    quiet = invoke("export", "--all", "-o", str(out))
    assert quiet.stderr == f"exported 3 session(s) to {out}\n"  # no bar in a pipe
    monkeypatch.setattr(
        cli_output, "err_console", lambda: Console(stderr=True, force_terminal=True, width=100)
    )
    assert "exporting" in invoke("export", "--all", "-o", str(out)).stderr
    assert "importing" in invoke("import", "--overwrite", str(out)).stderr


@pytest.mark.parametrize(
    "args",
    [("export",), ("export", "sid", "--all"), ("export", "sid", "--user", "u")],
)
def test_export_argument_mistakes_are_usage_errors(invoke: Any, args: tuple[str, ...]) -> None:
    assert invoke(*args).exit_code == 2


def test_export_missing_session_exits_3_and_writes_nothing(invoke: Any, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    _one_line_error(invoke("export", "nosuch", "-o", str(out)), 3)
    assert not out.exists()


def test_failed_export_leaves_no_partial_file(
    invoke: Any, manager: SessionManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        _session(manager)
    out = tmp_path / "out" / "all.jsonl"
    out.parent.mkdir()
    out.write_bytes(b"the previous export\n")
    real = SessionManager.export_session
    calls = []

    def flaky(self: SessionManager, sid: str, **kw: Any) -> SessionExport:
        calls.append(sid)
        if len(calls) == 2:
            raise StorageUnavailable("Redis is unavailable: connection reset")
        return real(self, sid, **kw)

    monkeypatch.setattr(SessionManager, "export_session", flaky)
    line = _one_line_error(invoke("export", "--all", "-o", str(out)), 5)
    assert "--redis-url" in line
    assert out.read_bytes() == b"the previous export\n"
    assert os.listdir(out.parent) == ["all.jsonl"]  # no temp file left behind


def test_export_to_an_unwritable_place_says_so(invoke: Any, manager: SessionManager) -> None:
    sid = _session(manager)
    line = _one_line_error(invoke("export", sid, "-o", "/nonexistent/dir/x.json"), 1)
    assert "cannot write /nonexistent/dir/x.json" in line


# -- import --------------------------------------------------------------------------------


def _docs(m: SessionManager, n: int) -> list[dict[str, Any]]:
    """Export documents of ``n`` sessions that are then removed from the (test) server."""
    docs = [m.export_session_data(_session(m, f"u{i}")) for i in range(n)]
    m.client.flushall()
    return docs


def _ids(m: SessionManager) -> set[str]:
    return set(m.iter_session_ids())


@pytest.mark.parametrize("layout", ["jsonl", "json", "array"])
def test_import_reads_json_json_lines_and_arrays(
    invoke: Any, manager: SessionManager, tmp_path: Path, layout: str
) -> None:
    docs = _docs(manager, 1 if layout == "json" else 3)
    path = tmp_path / f"in.{layout}"
    if layout == "jsonl":
        path.write_bytes(b"\n".join(orjson.dumps(d) for d in docs) + b"\n\n")
    elif layout == "json":
        path.write_bytes(orjson.dumps(docs[0], option=orjson.OPT_INDENT_2))
    else:
        path.write_bytes(orjson.dumps(docs, option=orjson.OPT_INDENT_2))
    result = invoke("import", str(path))
    assert result.exit_code == 0, result.stderr
    assert f"imported {len(docs)} session(s)" in result.stderr
    for d in docs:
        assert manager.export_session_data(d["session"]["session_id"]) == d


def test_import_from_stdin(invoke: Any, manager: SessionManager) -> None:
    docs = _docs(manager, 2)
    data = b"".join(orjson.dumps(d) + b"\n" for d in docs)
    result = invoke("--json", "import", "-", input=data)
    assert orjson.loads(result.stdout) == {"imported": 2, "skipped_existing": 0}
    assert _ids(manager) == {d["session"]["session_id"] for d in docs}


def test_import_keeps_existing_sessions_unless_overwrite(
    invoke: Any, manager: SessionManager, tmp_path: Path
) -> None:
    sid = _session(manager)
    old = manager.export_session_data(sid)
    manager.log_interaction(sid, user_message="after the export")
    path = tmp_path / "old.json"
    path.write_bytes(orjson.dumps(old))
    line = _one_line_error(invoke("import", str(path)), 1)
    assert "--overwrite" in line
    assert manager.get_session(sid).total_interactions == 3
    assert invoke("import", "--overwrite", str(path)).exit_code == 0
    assert manager.export_session_data(sid) == old


def test_import_stops_at_an_invalid_document_with_exit_6(
    invoke: Any, manager: SessionManager, tmp_path: Path
) -> None:
    docs = _docs(manager, 3)
    bad = dict(docs[1], session={**docs[1]["session"], "user_id": "bad user!"})
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in (docs[0], bad, docs[2])))
    line = _one_line_error(invoke("import", str(path)), 6)
    assert f"{path} line 2" in line
    assert "1 session(s) imported before it" in line
    assert _ids(manager) == {docs[0]["session"]["session_id"]}


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b'{"format": "redsession.session"}\n',
        b'{"unterminated": \n',
        b"\xff\xfe",
    ],
)
def test_import_of_a_bad_file_exits_6(
    invoke: Any, manager: SessionManager, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    _one_line_error(invoke("import", str(path)), 6)
    assert _ids(manager) == set()


def test_import_of_an_expired_document_exits_6(
    invoke: Any, manager: SessionManager, tmp_path: Path
) -> None:
    doc = _docs(manager, 1)[0]
    doc["expires_at"] = (utcnow() - timedelta(seconds=1)).isoformat()
    path = tmp_path / "old.json"
    path.write_bytes(orjson.dumps(doc))
    assert "expired" in _one_line_error(invoke("import", str(path)), 6)


def test_import_of_a_missing_file_exits_6(invoke: Any, tmp_path: Path) -> None:
    line = _one_line_error(invoke("import", str(tmp_path / "nope.jsonl")), 6)
    assert "No such file" in line


def test_import_of_an_empty_file_imports_nothing(invoke: Any, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n  \n")
    result = invoke("import", str(path))
    assert result.exit_code == 0
    assert "imported 0 session(s)" in result.stderr


# -- merge, delete -------------------------------------------------------------------------


def test_merge_without_a_terminal_needs_yes(invoke: Any, manager: SessionManager) -> None:
    p, s = _session(manager), _session(manager)
    line = _one_line_error(invoke("merge", p, s), 2)
    assert "--yes" in line
    assert manager.get_session(s).session_id == s  # untouched
    result = invoke("merge", p, s, "--yes")
    assert result.exit_code == 0, result.stderr
    assert manager.get_session(p).total_interactions == 4
    with pytest.raises(SessionMerged):
        manager.merge_sessions(s, p)  # s is now a redirect to p


def test_merge_asks_on_a_terminal(
    invoke: Any, manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_sessions, "_interactive", lambda: True)
    p, s = _session(manager), _session(manager)
    refused = invoke("merge", p, s, input="n\n")
    assert refused.exit_code == 1
    assert f"{s} will then redirect to {p}" in refused.stderr
    assert manager.get_session(s).session_id == s
    accepted = invoke("--json", "merge", p, s, input="y\n")
    assert accepted.exit_code == 0
    assert orjson.loads(accepted.stdout)["total_interactions"] == 4


def test_merge_across_users_needs_a_flag(invoke: Any, manager: SessionManager) -> None:
    p, s = _session(manager, "alice"), _session(manager, "bob")
    line = _one_line_error(invoke("merge", p, s, "--yes"), 4)
    assert "--allow-cross-user" in line
    assert invoke("merge", p, s, "--yes", "--allow-cross-user").exit_code == 0


def test_merge_errors(invoke: Any, manager: SessionManager) -> None:
    p = _session(manager)
    _one_line_error(invoke("merge", p, "nosuch", "--yes"), 3)
    _one_line_error(invoke("merge", p, p, "--yes"), 2)
    assert invoke("merge", p).exit_code == 2


def test_delete(invoke: Any, manager: SessionManager) -> None:
    sid = _session(manager)
    assert orjson.loads(invoke("delete", sid, "--json").stdout) == {"deleted": sid}
    with pytest.raises(SessionNotFound):
        manager.get_session(sid)
    _one_line_error(invoke("delete", sid), 3)


# -- cleanup, dump, restore, stats ---------------------------------------------------------


def _expired_session(redis_url: str, data_dir: Path) -> str:
    past = utcnow() - timedelta(days=8)
    client = redis.Redis.from_url(redis_url)
    with SessionManager(client, Settings(data_dir=data_dir), clock=lambda: past) as m:
        sid = m.create_session("old").session_id
    folder = sessions_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{sid}.json").write_text("{}")
    return sid


def test_cleanup_removes_expired_sessions_and_their_dump_files(
    invoke: Any, manager: SessionManager, redis_url: str, data_dir: Path
) -> None:
    live = _session(manager)
    dead = _expired_session(redis_url, data_dir)
    dry = invoke("cleanup", "--dry-run")
    assert dry.exit_code == 0
    assert "would clean up 1 expired session(s)" in dry.stdout
    assert dead in dry.stdout
    assert (sessions_dir(data_dir) / f"{dead}.json").exists()
    report = orjson.loads(invoke("--json", "cleanup").stdout)
    assert report == {"dry_run": False, "sessions": 1, "session_ids": [dead],
                      "dump_files_removed": 1}  # fmt: skip
    assert not (sessions_dir(data_dir) / f"{dead}.json").exists()
    assert "cleaned up 0 expired session(s)" in invoke("cleanup").stdout
    assert _ids(manager) == {live}


def test_dump_then_restore(invoke: Any, manager: SessionManager, data_dir: Path) -> None:
    ids = {_session(manager) for _ in range(3)}
    docs = {sid: manager.export_session_data(sid) for sid in ids}
    result = invoke("dump")
    assert result.exit_code == 0
    assert "wrote 3 dump file(s)" in result.stdout
    assert {p.stem for p in sessions_dir(data_dir).glob("*.json")} == ids
    manager.client.flushall()
    report = orjson.loads(invoke("restore", "--json", "--from", str(sessions_dir(data_dir))).stdout)
    assert report["restored"] == 3
    assert {sid: manager.export_session_data(sid) for sid in ids} == docs


def test_restore_warns_about_quarantined_files(invoke: Any, data_dir: Path) -> None:
    folder = sessions_dir(data_dir)
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{ not json")
    result = invoke("restore")
    assert result.exit_code == 0
    assert "quarantined 1" in result.stdout
    assert "quarantine" in result.stderr


def test_restore_from_a_missing_folder_is_a_usage_error(invoke: Any, tmp_path: Path) -> None:
    assert invoke("restore", "--from", str(tmp_path / "nope")).exit_code == 2


def test_dump_failures_exit_1(invoke: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> DumpReport:
        return DumpReport(written=2, removed=0, failed=1)

    monkeypatch.setattr(SessionManager, "dump_sessions", failing)
    result = invoke("dump")
    assert result.exit_code == 1
    assert "1 session(s) could not be dumped" in result.stderr


def test_stats(invoke: Any, manager: SessionManager) -> None:
    _session(manager, "alice", messages=2)
    _session(manager, "bob", messages=3)
    s = orjson.loads(invoke("stats", "--json").stdout)
    assert (s["sessions"], s["users"], s["interactions"]) == (2, 2, 5)
    assert s["redis_used_memory"] > 0
    text = invoke("stats").stdout
    assert "interactions" in text
    assert "MiB" in text or "KiB" in text


def test_storage_errors_exit_5(invoke: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: SessionManager) -> None:
        raise StorageError("Redis refused the command: OOM command not allowed")

    monkeypatch.setattr(SessionManager, "stats", refuse)
    assert "OOM" in _one_line_error(invoke("stats"), 5)


# -- configuration errors, tracebacks ------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_redis_exits_5_in_one_line(invoke: Any) -> None:
    result = invoke("list", url=f"redis://127.0.0.1:{_closed_port()}/0")
    assert "Redis is unavailable" in _one_line_error(result, 5)


def test_debug_log_level_shows_the_traceback(invoke: Any) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    result = invoke("--log-level", "debug", "list", url=url)
    assert result.exit_code == 5
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("Error: Redis is unavailable")


def test_configuration_errors_exit_2(
    invoke: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = CliRunner()
    no_url = runner.invoke(cli, ["list"])
    assert "REDSESSION_REDIS_URL" in _one_line_error(no_url, 2)
    assert "unsupported Redis URL" in _one_line_error(invoke("list", url="http://x"), 2)
    monkeypatch.setenv("REDSESSION_SESSION_TTL", "-5")
    assert "session_ttl" in _one_line_error(invoke("stats"), 2)


def test_redis_url_comes_from_the_environment(
    redis_url: str, manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _session(manager)
    monkeypatch.setenv("REDSESSION_REDIS_URL", redis_url)
    result = CliRunner().invoke(cli, ["list"])
    assert sid in result.stdout


# -- server, worker, mcp, up, version ------------------------------------------------------


def _free_port() -> int:
    return _closed_port()


def test_server_runs_until_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    client = redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    answered = []

    def stop_when_up() -> None:
        for _ in range(400):
            try:
                answered.append(client.ping())
                break
            except redis.ConnectionError:
                threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # the command's handler catches it

    watcher = threading.Thread(target=stop_when_up)
    watcher.start()
    try:
        result = CliRunner().invoke(
            cli, ["--data-dir", str(tmp_path), "server", "--port", str(port)]
        )
    finally:
        watcher.join()
        client.close()
    assert answered == [True]
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"redis://127.0.0.1:{port}/0"
    assert (tmp_path / "redis" / "appendonlydir").is_dir()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0)).ping()


def test_second_server_on_one_data_dir_fails(server_factory: Any, tmp_path: Path) -> None:
    server_factory(data_dir=tmp_path / "redis")
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "server"])
    assert "another server already uses" in _one_line_error(result, 1)


def test_worker_check(invoke: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("worker", "--check").exit_code == 1  # no worker runs on the test server
    seen: list[Settings] = []

    def alive(settings: Settings) -> bool:
        seen.append(settings)
        return True

    monkeypatch.setattr("redsession.services.worker.check_worker", alive)
    result = invoke("--json", "worker", "--check")
    assert result.exit_code == 0
    assert orjson.loads(result.stdout) == {"alive": True}
    assert seen[0].redis_url is not None


def test_worker_runs_and_passes_on_its_exit_code(
    invoke: Any, redis_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Settings, bool]] = []

    def run(settings: Settings, *, restore: bool) -> int:
        seen.append((settings, restore))
        return 7

    monkeypatch.setattr("redsession.services.worker.run_worker", run)
    assert invoke("worker").exit_code == 7
    assert (seen[0][0].redis_url, seen[0][0].data_dir) == (redis_url, data_dir)
    assert seen[0][1]  # restores on first leading unless told not to
    assert invoke("worker", "--no-restore").exit_code == 7
    assert not seen[1][1]


def test_mcp_passes_its_options(invoke: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr("redsession.services.mcp_server.run_mcp", lambda *a: calls.append(a))
    assert invoke("mcp").exit_code == 0
    assert invoke("mcp", "--transport", "http", "--host", "0.0.0.0", "--port", "9").exit_code == 0
    assert [c[1:] for c in calls] == [("stdio",), ("http", "0.0.0.0", 9)]
    assert invoke("mcp", "--port", "9").exit_code == 2  # --port needs --transport http
    assert invoke("mcp", "--transport", "ws").exit_code == 2


def test_up_passes_its_options(invoke: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int | None, int | None]] = []

    def run(settings: Settings, *, mcp_port: int | None = None, api_port: int | None = None) -> int:
        calls.append((mcp_port, api_port))
        return 0

    monkeypatch.setattr("redsession.services.up.run_up", run)
    assert invoke("up").exit_code == 0
    assert invoke("up", "--mcp-port", "8999").exit_code == 0
    assert invoke("up", "--api-port", "8998").exit_code == 0
    assert calls == [(None, None), (8999, None), (None, 8998)]


def test_version() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["version"]).stdout.startswith("redsession 0.1.0 ")
    assert orjson.loads(runner.invoke(cli, ["version", "--json"]).stdout)["redsession"] == "0.1.0"
    assert "0.1.0" in runner.invoke(cli, ["-V"]).stdout


def test_help_lists_every_command() -> None:
    text = CliRunner().invoke(cli, ["--help"]).stdout
    for name in ("list", "show", "export", "import", "merge", "delete", "cleanup", "dump",
                 "restore", "stats", "events", "server", "worker", "mcp", "up",
                 "version"):  # fmt: skip
        assert f"  {name} " in text


def test_unknown_command_is_a_usage_error() -> None:
    assert CliRunner().invoke(cli, ["frobnicate"]).exit_code == 2


# -- real processes ------------------------------------------------------------------------


def _run(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "redsession", *args],
        input=input,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def _spawn(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "redsession", *args], **kwargs)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(SUBPROCESS_TIMEOUT)


def test_each_short_command_as_a_subprocess(
    redis_url: str, manager: SessionManager, data_dir: Path, tmp_path: Path
) -> None:
    g = ["--redis-url", redis_url, "--data-dir", str(data_dir)]
    p, s = _session(manager), _session(manager)
    assert _run("version").stdout.startswith(b"redsession ")
    assert p.encode() in _run(*g, "list").stdout
    exported = _run(*g, "export", p)
    assert orjson.loads(exported.stdout) == manager.export_session_data(p)
    assert _run(*g, "delete", p).returncode == 0
    missing = _run(*g, "show", p)
    assert missing.returncode == 3
    assert missing.stderr.count(b"\n") == 1  # one line, no traceback
    imported = _run(*g, "import", "-", input=exported.stdout)
    assert imported.returncode == 1  # a deleted session's tombstone refuses it
    assert imported.stderr.endswith(b"pass --overwrite to replace them\n")
    assert _run(*g, "merge", s, p, "--yes").returncode == 3  # p was deleted
    assert _run(*g, "cleanup").returncode == 0
    assert _run(*g, "dump").returncode == 0
    assert (sessions_dir(data_dir) / f"{s}.json").exists()
    assert orjson.loads(_run(*g, "--json", "restore").stdout)["skipped"] == 1
    assert orjson.loads(_run(*g, "--json", "stats").stdout)["sessions"] == 1


def test_server_subprocess_answers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = _spawn("--data-dir", str(tmp_path), "server", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        with redis.Redis.from_url(url) as client:
            assert client.ping()
    finally:
        code = _stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0
    assert "Redis is now ready to exit" in (tmp_path / "redis" / "server.log").read_text()


def _wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    # Bounded by the test timeout; fails at once if the process died instead.
    while not condition():
        assert proc.poll() is None, f"exited with {proc.returncode}"
        threading.Event().wait(0.05)


def test_worker_subprocess_beats_and_stops_cleanly_on_sigterm(
    redis_url: str, data_dir: Path
) -> None:
    from redsession.services.worker import check_worker

    settings = Settings(redis_url=redis_url, data_dir=data_dir)
    proc = _spawn("--redis-url", redis_url, "--data-dir", str(data_dir), "worker")
    try:
        _wait_until(lambda: check_worker(settings), proc)
        assert _run("--redis-url", redis_url, "worker", "--check").returncode == 0
    finally:
        code = _stop(proc)
    assert code == 0
    assert not check_worker(settings)  # a clean stop takes its heartbeat along


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_mcp_http_subprocess_listens_and_stops_cleanly_on_sigterm(redis_url: str) -> None:
    port = _free_port()
    proc = _spawn("--redis-url", redis_url, "mcp", "--transport", "http", "--port", str(port))
    try:
        _wait_until(lambda: _accepts(port), proc)
    finally:
        code = _stop(proc)
    assert code == 0


def test_mcp_stdio_subprocess_answers_initialize(redis_url: str) -> None:
    hello = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "0"}},
    }  # fmt: skip
    with _spawn(
        "--redis-url", redis_url, "mcp", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(orjson.dumps(hello) + b"\n")
        proc.stdin.flush()
        answer = orjson.loads(proc.stdout.readline())
        proc.stdin.close()  # end of input ends a stdio server
        assert proc.wait(SUBPROCESS_TIMEOUT) == 0
    assert answer["id"] == 1
    assert "serverInfo" in answer["result"]


@pytest.mark.slow
def test_up_subprocess_starts_everything_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    proc = _spawn("--data-dir", str(tmp_path), "up", "--mcp-port", str(port),
                  stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("Ctrl-C stops everything"):
            line = proc.stdout.readline().decode()
            assert line, f"up exited early: {lines}"
            lines.append(line)
        _wait_until(lambda: _accepts(port), proc)
    finally:
        code = _stop(proc)
    rest = proc.stdout.read().decode()
    proc.stdout.close()
    assert code == 0
    assert "stopped." in rest


# -- the 10,000-session round trip ---------------------------------------------------------

ROUND_TRIP = 10_000


def _generated(i: int, now: Any) -> dict[str, Any]:
    start = now - timedelta(minutes=i % 5000, microseconds=i)
    interactions = [
        {
            "id": f"i{j}",
            "timestamp": start + timedelta(seconds=j),
            "user_message": f'question {i}.{j} ✓ "quoted"\n',
            "assistant_response": None if j == 1 else f"answer {i}.{j}",
            "metadata": {"j": j, "score": j / 3},
            "topics": [f"t{j}"],
        }
        for j in range(i % 4)
    ]
    doc = SessionExport.model_validate({
        "session": {
            "session_id": f"s{i:05d}-{i * 7919 % 10007}",
            "user_id": f"user{i % 97}",
            "created_at": start,
            "last_activity": start + timedelta(seconds=len(interactions)),
            "total_interactions": len(interactions),
            "context": {"i": i, "nested": {"list": [1, 2.5, None, "x"]}},
            "topics": [f"t{j}" for j in range(i % 4)],
            "version": i % 5,
        },
        "history": [{"kind": "interaction", **i} for i in interactions],
        "expires_at": now + timedelta(days=7, seconds=i),
    })  # fmt: skip
    return doc.model_dump(mode="json")


@pytest.mark.slow
def test_export_all_piped_into_import_round_trips_10000_sessions(server_factory: Any) -> None:
    source, target = server_factory(), server_factory()
    now = utcnow()
    docs = {}
    with SessionManager.from_url(source.url) as a:
        for i in range(ROUND_TRIP):
            doc = _generated(i, now)
            docs[a.import_session_data(doc)] = doc
    exporter = _spawn("--redis-url", source.url, "export", "--all", stdout=subprocess.PIPE)
    importer = subprocess.run(
        [sys.executable, "-m", "redsession", "--redis-url", target.url, "--json", "import", "-"],
        stdin=exporter.stdout,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert exporter.stdout is not None
    exporter.stdout.close()
    assert exporter.wait(SUBPROCESS_TIMEOUT) == 0
    assert importer.returncode == 0, importer.stderr
    assert orjson.loads(importer.stdout) == {"imported": ROUND_TRIP, "skipped_existing": 0}
    with SessionManager.from_url(target.url) as b:
        assert set(b.iter_session_ids()) == set(docs)
        for sid, doc in docs.items():
            assert b.export_session_data(sid) == doc


# -- repair-index, rotate-keys ---------------------------------------------------------------


def test_repair_index(invoke: Callable[..., Result], manager: SessionManager,
                      redis_client: redis.Redis) -> None:  # fmt: skip
    sid = _session(manager)
    redis_client.delete(manager.keys.sessions, manager.keys.user_sessions("alice"))
    result = invoke("repair-index", "--json")
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["sessions"] == 1
    assert report["added"] >= 2
    assert [s.session_id for s in manager.list_active_sessions("alice").sessions] == [sid]
    assert "put back 0 index entries" in invoke("repair-index").stdout


def test_rotate_keys(invoke: Callable[..., Result], redis_url: str, data_dir: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with SessionManager.from_url(redis_url, encryption_keys=[old]) as m:
        sid = _session(m)
    _one_line_error(invoke("rotate-keys"), cli_errors.EXIT_USAGE)  # no keys configured
    monkeypatch.setenv("REDSESSION_ENCRYPTION_KEYS", f"{new},{old}")
    result = invoke("rotate-keys", "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["sessions_rotated"] == 1
    assert "re-encrypted 0 session(s)" in invoke("rotate-keys").stdout
    with SessionManager.from_url(redis_url, encryption_keys=[new]) as m:
        assert m.get_session(sid, history=1).history[0].assistant_response == "answer 1"


# -- planted symlinks and keys that open no dump (issue 20) ----------------------------------


def test_decryption_errors_are_configuration_errors() -> None:
    from redsession.errors import DecryptionError

    assert cli_errors.classify(DecryptionError("no key opens it"))[0] == cli_errors.EXIT_USAGE


def test_restore_and_dump_stop_at_a_planted_symlink_in_one_line(
    invoke: Callable[..., Result], manager: SessionManager, data_dir: Path, tmp_path: Path
) -> None:
    _session(manager)
    assert invoke("dump").exit_code == 0
    folder = sessions_dir(data_dir)
    (folder / "broken.json").write_text("{ not json")
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "quarantine").symlink_to(outside)
    line = _one_line_error(invoke("restore"), cli_errors.EXIT_USAGE)
    assert "quarantine is a symlink; refusing to write through it" in line
    assert os.listdir(outside) == []
    assert (folder / "broken.json").read_text() == "{ not json"

    (folder / "quarantine").unlink()
    folder.rename(outside / "sessions")
    folder.symlink_to(outside / "sessions")
    line = _one_line_error(invoke("dump"), cli_errors.EXIT_USAGE)
    assert "sessions is a symlink; refusing to write through it" in line
    assert "sessions is a symlink" in _one_line_error(invoke("restore"), cli_errors.EXIT_USAGE)
    assert sorted(os.listdir(outside / "sessions")) == sorted(os.listdir(folder))


def test_restore_under_keys_that_open_no_dump_exits_2_in_one_line(
    invoke: Callable[..., Result], redis_url: str, data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import hashlib

    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = Settings(data_dir=data_dir, encryption_keys=[old])
    with SessionManager(redis.Redis.from_url(redis_url), settings) as m:
        ids = {_session(m) for _ in range(2)}
        m.dump_sessions()
        m.client.flushall()
    folder = sessions_dir(data_dir)
    before = sorted(os.listdir(folder))
    monkeypatch.setenv("REDSESSION_ENCRYPTION_KEYS", new)
    line = _one_line_error(invoke("restore"), cli_errors.EXIT_USAGE)
    assert "no configured encryption key opens 2 of the 2 encrypted dump files" in line
    assert f"tried 1 key(s), fingerprints {hashlib.sha256(new.encode()).hexdigest()[:8]} " in line
    assert "`redsession rotate-keys` is not the fix" in line
    assert sorted(os.listdir(folder)) == before  # nothing quarantined
    monkeypatch.setenv("REDSESSION_ENCRYPTION_KEYS", f"{new},{old}")
    result = invoke("restore")
    assert result.exit_code == 0, result.stderr
    assert "restored 2" in result.stdout
    with SessionManager.from_url(redis_url, encryption_keys=[new, old]) as m:
        assert set(m.iter_session_ids()) == ids


# -- events --------------------------------------------------------------------------------


def test_events_prints_a_table_or_ndjson_and_pages_on(invoke: Any, manager: SessionManager) -> None:
    sid = _session(manager, messages=1)
    manager.delete_session(sid)
    table = invoke("events")
    assert table.exit_code == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["time", "kind", "session", "user", "op", "id"]
    assert [r.split()[2:4] for r in rows] == [["create", sid], ["log", sid], ["delete", sid]]
    want = [e.model_dump(mode="json") for e in manager.events().events]
    ndjson = invoke("events", "--json")
    assert [orjson.loads(line) for line in ndjson.stdout.splitlines()] == want
    assert "question" not in ndjson.stdout  # ids and kinds, never the messages
    later = invoke("--json", "events", "--after", want[0]["id"], "--kind", "delete")
    assert [orjson.loads(line)["kind"] for line in later.stdout.splitlines()] == ["delete"]
    first = invoke("events", "--json", "--limit", "1")
    assert len(first.stdout.splitlines()) == 1
    assert f"more: redsession events --after {want[0]['id']}" in first.stderr
    assert invoke("events", "--after", want[-1]["id"]).stdout == "no events\n"


@pytest.mark.parametrize(
    "args",
    [("--after", "nope"), ("--kind", "bogus"), ("--limit", "0"), ("--limit", "x"), ("--frob",)],
)
def test_events_bad_flags_get_one_line(invoke: Any, args: tuple[str, ...]) -> None:
    _one_line_error(invoke("events", *args), cli_errors.EXIT_USAGE)


def _ctrl_c_as_in_a_terminal() -> None:
    # A command in a terminal's foreground starts with SIGINT at its default. A job started in
    # the background (a CI runner's, `cmd &`) starts with it ignored, and then Python makes
    # no KeyboardInterrupt of it: Ctrl-C could not reach such a process anyway.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_events_follow_prints_new_events_and_ctrl_c_ends_it_cleanly(
    redis_url: str, manager: SessionManager
) -> None:
    sid = manager.create_session("alice").session_id
    proc = _spawn("--redis-url", redis_url, "events", "--follow", "--json",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  preexec_fn=_ctrl_c_as_in_a_terminal)  # fmt: skip
    lines: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(orjson.loads(raw))

    reader = threading.Thread(target=read, daemon=True)
    with proc:  # closes the pipes however the test ends (a leaked one fails a later test)
        reader.start()
        try:
            _wait_until(lambda: len(lines) == 1, proc)  # what was there: the create
            manager.log_interaction(sid, user_message="hello")
            _wait_until(lambda: len(lines) == 2, proc)  # and what came while it followed
            proc.send_signal(signal.SIGINT)
            assert proc.wait(SUBPROCESS_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(SUBPROCESS_TIMEOUT)
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert [(d["kind"], d["session_id"]) for d in lines] == [("create", sid), ("log", sid)]
    assert err == b""
