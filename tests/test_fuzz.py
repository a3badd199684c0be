"""Hostile input against every public entry point: the manager, dumps, the CLI, the MCP tools.

Whatever the input (random, unicode, huge, deeply nested, NUL-containing, wrong types), a call
either succeeds or raises a RedsessionError; nothing is written outside data_dir; and a call
that names one user never returns another user's data.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from redsession import (
    AsyncSessionManager,
    InvalidInput,
    RedsessionError,
    SessionManager,
    SessionNotFound,
    Settings,
)
from redsession.maintenance.snapshots import sessions_dir
from redsession.mirror.database import Database
from redsession.model.models import EVENT_KINDS
from redsession.services.embedded import RedisServer
from redsession.storage.keys import Keys

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
# Small limits, so that "over the limit" is cheap to generate.
LIMITS: dict[str, Any] = {
    "max_message_bytes": 2000,
    "max_context_bytes": 4000,
    "max_json_depth": 8,
    "max_topics": 8,
    "resume_history": 5,
}
PREFIX = "fuzz"
# The fuzzed store is encrypted; the CLI and the MCP server read it without the key, so
# DecryptionError must come out as cleanly as any other error.
KEY = "oCcWXp7mJ2fUq0s7YlDLmU1Sxg9hKqjJ0m0m2Zq0V5o="
ALICE, BOB = "alice", "bob"

# -- strategies ----------------------------------------------------------------------------

_weird_chars = st.sampled_from(
    ["\x00", "\ud800", "\u202e", "\ufeff", "{", "}", "*", "/", "..", "é", "🙂"]
)
weird_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=4),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.lists(_weird_chars | st.text(max_size=3), max_size=12).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "\x00", "🙂"]), st.integers(0, 3000)),
    st.sampled_from(["", " ", "../../etc/passwd", "/etc/passwd", "a\x00b", "CON", "x" * 129]),
)
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    weird_text,
)
json_like = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(weird_text, inner, max_size=4),
    max_leaves=20,
)


def _nest(depth: int, as_list: bool) -> object:
    node: object = "leaf"
    for _ in range(depth):
        node = [node] if as_list else {"k": node}
    return node


deep = st.builds(_nest, st.integers(1, 3000), st.booleans())
wrong_type = st.one_of(
    st.binary(max_size=20),
    st.tuples(st.integers()),
    st.sets(st.integers(), max_size=3),
    st.builds(object),
    st.just(float("nan")),
    st.dictionaries(st.integers(), st.integers(), max_size=2),
    st.just(b"\x00"),
    st.just([None]),
)
anything = st.one_of(weird_text, json_like, deep, wrong_type)
maybe = st.one_of(st.none(), anything)


def _json_bytes(value: object) -> bytes:
    # The json module, not orjson: it writes ints beyond 64 bits, NaN and lone surrogates.
    try:
        return json.dumps(value, default=repr).encode()
    except RecursionError:  # too deep to encode: deeply nested JSON text is as hostile
        return b"[" * 5000 + b"]" * 5000


def _ids(known: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(known), weird_text, wrong_type)


def _users() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from([ALICE, BOB]), weird_text, wrong_type)


def _calls(sids: list[str]) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """For each public manager method, keyword arguments: plausible, hostile, or wrong types."""
    sid, uid, opt_uid = _ids(sids), _users(), st.none() | _users()
    obj = st.one_of(st.dictionaries(weird_text, json_like, max_size=5), deep, anything)
    count = st.one_of(st.integers(-5, 50), st.integers(), anything)
    topics = st.one_of(st.none(), st.lists(weird_text, max_size=12), anything)
    fb = st.fixed_dictionaries
    return {
        "create_session": fb(
            {"user_id": uid},
            optional={"context": obj, "session_id": maybe, "state": obj, "scope": obj},
        ),
        "create_or_resume_session": fb({"user_id": uid}, optional={"session_id": sid | maybe}),
        "resume_session": fb({"session_id": sid, "user_id": uid}, optional={"history": count}),
        "get_session": fb(
            {"session_id": sid},
            optional={"history": count, "user_id": opt_uid, "slide": st.booleans() | anything},
        ),
        "get_history": fb(
            {"session_id": sid},
            optional={"limit": st.none() | count, "before": st.none() | count, "user_id": opt_uid},
        ),
        "log_interaction": fb(
            {"session_id": sid, "user_message": weird_text | anything},
            optional={
                "assistant_response": maybe | weird_text,
                "metadata": st.none() | obj,
                "topics": topics,
                "user_id": opt_uid,
            },
        ),
        "history_since": fb(
            {"session_id": sid, "since": st.datetimes(timezones=st.just(timezone.utc)) | anything},
            optional={"user_id": opt_uid, "touch": st.booleans()},
        ),
        "append_items": fb(
            {"session_id": sid, "items": st.lists(obj, max_size=3) | anything},
            optional={
                "user_id": opt_uid,
                "ids": st.none() | st.lists(weird_text, max_size=3) | anything,
                "topics": topics,
                "create_for": st.none() | uid,
                "state": st.none() | obj,
                "scope": st.none() | obj,
                "revision": st.none()
                | st.tuples(st.none() | weird_text | anything, weird_text | anything)
                | anything,
            },
        ),
        "get_entry": fb(
            {"session_id": sid, "entry_id": weird_text | anything}, optional={"user_id": opt_uid}
        ),
        "get_items": fb(
            {"session_id": sid},
            optional={"limit": st.none() | count, "user_id": opt_uid, "touch": st.booleans()},
        ),
        "pop_item": fb({"session_id": sid}, optional={"user_id": opt_uid}),
        "replace_history": fb(
            {"session_id": sid, "items": st.lists(obj, max_size=3) | anything},
            optional={"user_id": opt_uid},
        ),
        "clear_history": fb({"session_id": sid}, optional={"user_id": opt_uid}),
        "update_context": fb({"session_id": sid, "patch": obj}, optional={"user_id": opt_uid}),
        "set_preferences": fb({"user_id": uid, "prefs": obj}),
        "get_preferences": fb({"user_id": uid}, optional={"touch": st.booleans()}),
        "list_active_sessions": fb(
            {}, optional={"user_id": opt_uid, "limit": count, "cursor": maybe | weird_text}
        ),
        "iter_session_ids": fb({}, optional={"user_id": opt_uid}),
        "list_users": fb(
            {},
            optional={
                "prefix": weird_text | anything, "limit": count, "cursor": maybe | weird_text
            },
        ),
        "iter_user_ids": fb({}),
        "export_session_data": fb({"session_id": sid}, optional={"user_id": opt_uid}),
        "export_session": fb({"session_id": sid}, optional={"user_id": opt_uid}),
        "import_session_data": fb(
            {"doc": st.one_of(anything, _export_docs(sid), _export_docs(sid).map(_json_bytes))},
            optional={"overwrite": st.booleans() | anything},
        ),
        "merge_sessions": fb(
            {"primary_id": sid, "secondary_id": sid},
            optional={"user_id": opt_uid, "allow_cross_user": st.booleans()},
        ),
        "delete_session": fb(
            {"session_id": sid}, optional={"user_id": opt_uid, "revision": maybe | weird_text}
        ),
        # A session's checkpoints (core/checkpoints.py): names, payloads, lists of tuples.
        "put_checkpoint": fb(
            {"session_id": sid, "ns": weird_text | anything, "checkpoint_id": weird_text | anything,
             "payload": st.binary(max_size=64) | anything, "create_for": uid},
            optional={"blobs": st.lists(st.tuples(weird_text, weird_text, st.binary(max_size=8)
                                                  | anything), max_size=3) | anything,
                      "scope": st.none() | obj},
        ),
        "put_checkpoint_writes": fb(
            {"session_id": sid, "ns": weird_text | anything, "checkpoint_id": weird_text | anything,
             "writes": st.lists(st.tuples(weird_text, st.binary(max_size=8) | anything,
                                          st.booleans() | anything), max_size=3) | anything,
             "create_for": uid},
            optional={"scope": st.none() | obj},
        ),
        "get_checkpoint": fb(
            {"session_id": sid, "ns": weird_text | anything},
            optional={"checkpoint_id": st.none() | weird_text | anything},
        ),
        "list_checkpoints": fb(
            {"session_id": sid},
            optional={"ns": st.none() | weird_text | anything,
                      "before": st.none() | weird_text | anything,
                      "resume": st.none() | st.binary(max_size=20) | anything, "count": count},
        ),
        "get_checkpoint_blobs": fb(
            {"session_id": sid, "ns": weird_text | anything,
             "names": st.lists(st.tuples(weird_text, weird_text), max_size=3) | anything},
        ),
        "clear_checkpoints": fb({"session_id": sid}),
        "copy_checkpoints": fb(
            {"source_id": sid, "target_id": sid, "create_for": uid},
            optional={"scope": st.none() | obj},
        ),
        "cleanup_expired_sessions": fb({}, optional={"dry_run": st.booleans()}),
        "cleanup": fb({}, optional={"dry_run": st.booleans()}),
        "stats": fb({}),
        "overview": fb({}),
        "ping": fb({}),
        "worker_status": fb({}),
        "record_job": fb({"run": anything}),
        "rollup": fb({}),
        "analytics": fb({}, optional={"days": count}),
        "dump_sessions": fb({}, optional={"batch": count}),
        "restore_sessions": fb({}, optional={"overwrite_older": st.booleans()}),
        "rotate_keys": fb({}),
        "repair_indexes": fb({}, optional={"batch": count}),
        "prune_scripts": fb({}, optional={"dry_run": st.booleans()}),
        "events": fb({}, optional=_event_reads()),
        # Waits bounded to a few ms: a valid block would make each example wait for nothing.
        "wait_for_events": fb({}, optional={**_event_reads(), "block": _blocks()}),
        "event_cursor": fb({"consumer": weird_text | anything}),
        "ack_event": fb(
            {"consumer": weird_text | anything, "event_id": _event_ids()},
            optional={"failed": st.none() | obj | st.dictionaries(weird_text, weird_text)},
        ),
        "mirror_sql": fb({"database": st.builds(_fuzz_database) | anything}),
    }


def _blocks() -> st.SearchStrategy[Any]:
    short = st.floats(max_value=0.01) | st.just(float("nan"))
    return st.one_of(short, st.none(), st.text(max_size=3), st.booleans())


def _event_ids() -> st.SearchStrategy[Any]:
    big = st.integers(0, 2**65).map(str)
    return st.one_of(maybe, weird_text, big, st.tuples(big, big).map("-".join), anything)


def _event_reads() -> dict[str, st.SearchStrategy[Any]]:
    kinds = st.lists(st.sampled_from(EVENT_KINDS) | weird_text, max_size=4)
    return {
        "after": _event_ids(),
        "kinds": st.none() | kinds | kinds.map(tuple) | anything,
        "limit": st.one_of(st.integers(-5, 50), st.integers(), anything),
    }


_DATABASES: list[Database] = []


def _fuzz_database() -> Database:
    """One mirror database for the whole fuzz, in data_dir (made once the test has chdir'd)."""
    if not _DATABASES:
        _DATABASES.append(Database("sqlite:///data/mirror.sqlite3"))
    return _DATABASES[0]


def _export_docs(sid: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Export documents valid in everything but (mostly) one field, which is hostile.

    A document wrong in many places fails its first check and never reaches the rest: a
    lone surrogate in the session's topics, say, went untested that way.
    """
    return _one_bad_field(sid)


_SURROGATES = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)


def _valid_doc(version: int, sid: str) -> tuple[dict[str, Any], list[tuple[Any, Any]]]:
    """A valid export document, and every place in it a caller's value sits."""
    now = "2030-01-01T00:00:00Z"
    entry = {"id": "e1", "timestamp": now, "user_message": "hi", "assistant_response": "yo",
             "metadata": {"k": "v"}, "topics": ["t"]}  # fmt: skip
    item = {"kind": "item", "id": "e2", "timestamp": now, "item": {"role": "user", "x": ["y"]}}
    history = [entry] if version == 1 else [{"kind": "interaction", **entry}, item]
    doc: dict[str, Any] = {
        "format": "redsession.session", "version": version,
        "session": {"session_id": sid, "user_id": ALICE, "created_at": now,
                    "last_activity": now, "total_interactions": len(history),
                    "context": {"c": "d"}, "topics": ["a"], "version": 0, "merged_from": []},
        "interactions" if version == 1 else "history": history,
        "expires_at": "2999-01-01T00:00:00Z",
    }  # fmt: skip
    targets: list[tuple[Any, Any]] = [(doc, k) for k in doc if k not in ("history", "interactions")]
    for holder in (doc["session"], *history):
        for k, v in holder.items():
            targets.append((holder, k))
            if isinstance(v, list) and v:
                targets.append((v, 0))
            if isinstance(v, dict):
                targets += [(v, kk) for kk in v]
    return doc, targets


@st.composite
def _one_bad_field(draw: st.DrawFn, sid: st.SearchStrategy[Any]) -> dict[str, Any]:
    doc, targets = _valid_doc(draw(st.sampled_from([1, 2])), draw(sid))
    for _ in range(draw(st.integers(0, 2))):
        where, key = draw(st.sampled_from(targets))
        where[key] = draw(st.one_of(_SURROGATES, weird_text, json_like, st.lists(_SURROGATES)))
    return doc


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working directory holding data_dir; anything else appearing in it is a failure."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "data").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name in list(os.environ):
            if name.startswith("REDSESSION_") and name != "REDSESSION_SERVER_BIN":
                mp.delenv(name)
        yield root


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _outside_data(root: Path) -> set[str]:
    return {p for p in _tree(root) if p != "data" and not p.startswith("data/")}


@pytest.fixture(scope="module")
def fuzz_manager(redis_server: RedisServer, fuzz_root: Path) -> Iterator[SessionManager]:
    settings_ = Settings(
        key_prefix=PREFIX, data_dir=fuzz_root / "data", encryption_keys=[KEY], **LIMITS
    )
    with SessionManager(redis.Redis.from_url(redis_server.url), settings_) as m:
        yield m
    for db in _DATABASES:
        db.close()


@pytest.fixture
def fresh(fuzz_manager: SessionManager) -> Callable[[], tuple[str, str, str]]:
    """Per example: a session each for alice and bob; returns their ids and alice's secret."""

    def make() -> tuple[str, str, str]:
        secret = "SECRET" + secrets.token_hex(6)
        m = fuzz_manager
        a = m.create_session(ALICE, context={"s": secret}).session_id
        m.log_interaction(a, user_message=secret, metadata={"s": secret}, topics=[secret])
        m.set_preferences(ALICE, {"s": secret})
        b = m.create_session(BOB).session_id
        m.log_interaction(b, user_message="hello from bob")
        return a, b, secret

    return make


def _dump(result: object) -> str:
    if hasattr(result, "model_dump_json"):
        return str(result.model_dump_json())
    return repr(result)


# -- SessionManager ------------------------------------------------------------------------

# run() executes an internal store operation (a generator), for rotate-keys: not user input.
_NOT_OPERATIONS = {"close", "from_url", "run"}


def test_the_fuzz_covers_every_public_method() -> None:
    public = {
        n
        for n, f in inspect.getmembers(SessionManager, callable)
        if not n.startswith("_") and n not in _NOT_OPERATIONS
    }
    assert public == set(_calls(["x"]))


@pytest.mark.parametrize("method", sorted(_calls(["x"])))
def test_manager_methods_fail_only_with_redsession_errors(
    fuzz_manager: SessionManager,
    fresh: Callable[[], tuple[str, str, str]],
    fuzz_root: Path,
    method: str,
) -> None:
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        a, b, secret = fresh()
        kwargs = data.draw(_calls([a, b, "no-such-session"])[method], label="kwargs")
        try:
            result = getattr(fuzz_manager, method)(**kwargs)
            if isinstance(result, Iterator):
                result = list(result)
        except RedsessionError:
            return
        # A call made in bob's name never shows alice's data.
        if kwargs.get("user_id") == BOB:
            assert secret not in _dump(result)
            assert a not in _dump(result) or method == "create_or_resume_session"

    run()
    assert _outside_data(fuzz_root) == set()


@pytest.mark.parametrize("version", [1, 2])
def test_a_lone_surrogate_anywhere_in_a_document_is_invalid_input(
    fuzz_manager: SessionManager, version: int
) -> None:
    """Every place in an import document, in turn: a clear InvalidInput, nothing written."""
    _, targets = _valid_doc(version, "surrogate-doc")
    for n in range(len(targets)):
        doc, places = _valid_doc(version, "surrogate-doc")
        where, key = places[n]
        if isinstance(where, dict) and key in ("metadata", "context", "item"):
            where[key] = {"\ud800": 1}  # a key, too
        else:
            where[key] = "a\ud800" if not isinstance(where[key], list) else ["\udfff"]
        with pytest.raises(RedsessionError):
            fuzz_manager.import_session_data(doc)
        with pytest.raises(RedsessionError):
            fuzz_manager.import_session_data(_json_bytes(doc))
    with pytest.raises(SessionNotFound):
        fuzz_manager.get_session("surrogate-doc")


def test_a_lone_surrogate_in_any_string_argument_is_invalid_input(
    fuzz_manager: SessionManager, fresh: Callable[[], tuple[str, str, str]]
) -> None:
    a, _, _ = fresh()
    bad = "x\udc80"
    calls: list[Callable[[], object]] = [
        lambda: fuzz_manager.log_interaction(a, user_message=bad),
        lambda: fuzz_manager.log_interaction(a, user_message="ok", assistant_response=bad),
        lambda: fuzz_manager.log_interaction(a, user_message="ok", topics=[bad]),
        lambda: fuzz_manager.log_interaction(a, user_message="ok", metadata={bad: 1}),
        lambda: fuzz_manager.append_items(a, [{"k": bad}]),
        lambda: fuzz_manager.append_items(a, [{"k": 1}], topics=[bad]),
        lambda: fuzz_manager.append_items(a, [{"k": 1}], ids=[bad]),
        lambda: fuzz_manager.replace_history(a, [{bad: 1}]),
        lambda: fuzz_manager.update_context(a, {"k": bad}),
        lambda: fuzz_manager.set_preferences(ALICE, {"k": bad}),
        lambda: fuzz_manager.create_session(ALICE, context={"k": [bad]}),
        lambda: fuzz_manager.create_session(bad),
        lambda: fuzz_manager.get_session(bad),
        lambda: fuzz_manager.list_active_sessions(bad),
        lambda: fuzz_manager.list_active_sessions(cursor=bad),
    ]
    before = fuzz_manager.export_session_data(a)
    for call in calls:
        with pytest.raises(InvalidInput):
            call()
    assert fuzz_manager.export_session_data(a) == before


def test_a_user_never_reads_another_users_session(
    fuzz_manager: SessionManager, fresh: Callable[[], tuple[str, str, str]]
) -> None:
    m = fuzz_manager
    reads: list[Callable[[str], object]] = [
        lambda a: m.resume_session(a, BOB),
        lambda a: m.get_session(a, history=10, user_id=BOB),
        lambda a: m.get_history(a, user_id=BOB),
        lambda a: m.export_session_data(a, user_id=BOB),
        lambda a: m.log_interaction(a, user_message="x", user_id=BOB),
        lambda a: m.update_context(a, {"x": 1}, user_id=BOB),
        lambda a: m.delete_session(a, user_id=BOB),
    ]

    @FUZZ
    @given(which=st.sampled_from(range(len(reads))), other=st.sampled_from(["nobody", BOB]))
    def run(which: int, other: str) -> None:
        a, b, secret = fresh()
        missing = "missing-" + secrets.token_hex(4)
        for sid in (a, missing):
            with pytest.raises(RedsessionError) as info:
                reads[which](sid)
            assert secret not in str(info.value)
        # Same message whether alice's id exists or not: bob learns nothing.
        errors = []
        for sid in (a, missing):
            with pytest.raises(RedsessionError) as info:
                m.resume_session(sid, other)
            errors.append(str(info.value).replace(sid, "SID"))
        assert errors[0] == errors[1]
        assert m.create_or_resume_session(other, a) != a
        assert a not in set(m.iter_session_ids(other))
        assert secret not in str(m.get_preferences(other))
        page = m.list_active_sessions(other, limit=1000)
        assert a not in {s.session_id for s in page.sessions}
        with pytest.raises(RedsessionError):
            m.merge_sessions(b, a)  # different owners, no allow_cross_user
        with pytest.raises(RedsessionError):
            m.merge_sessions(b, a, user_id=BOB, allow_cross_user=True)
        assert m.get_session(a).total_interactions == 1  # alice's session is untouched

    run()


async def test_async_manager_methods_fail_only_with_redsession_errors(
    redis_server: RedisServer, fuzz_manager: SessionManager, fresh: Callable[[], Any]
) -> None:
    am = AsyncSessionManager.from_url(redis_server.url, key_prefix=PREFIX, **LIMITS)
    a, b, secret = fresh()
    calls = _calls([a, b])
    names = ["create_session", "resume_session", "log_interaction", "update_context",
             "set_preferences", "get_history", "import_session_data", "merge_sessions"]  # fmt: skip
    strategy = st.tuples(st.sampled_from(names), st.data())
    # Hypothesis cannot drive a coroutine: draw the calls first, then run them on the loop.
    drawn: list[tuple[str, dict[str, Any]]] = []

    @FUZZ
    @given(strategy)
    def draw(pair: tuple[str, st.DataObject]) -> None:
        name, data = pair
        drawn.append((name, data.draw(calls[name])))

    draw()
    try:
        for name, kwargs in drawn:
            try:
                result = await getattr(am, name)(**kwargs)
            except RedsessionError:
                continue
            if kwargs.get("user_id") == BOB:
                assert secret not in _dump(result)
    finally:
        await am.close()
    assert len(drawn) >= 20


# -- dumps: hostile ids in Redis, hostile files on disk -------------------------------------


def test_dump_and_restore_write_nothing_outside_data_dir(
    fuzz_manager: SessionManager, fuzz_root: Path, tmp_path: Path
) -> None:
    m = fuzz_manager
    k = Keys(PREFIX)
    data = fuzz_root / "data"
    folder = sessions_dir(data)
    folder.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.json").write_text("{}")
    before_outside = _tree(outside)
    m.client.delete(k.dirty)  # the other tests' sessions: dumping them all is only slow

    @FUZZ
    @given(
        ids=st.lists(weird_text, min_size=1, max_size=4),
        files=st.lists(st.tuples(weird_text, st.binary(max_size=300) | json_like.map(_json_bytes)),
                       max_size=4),
        link=st.booleans(),
    )  # fmt: skip
    def run(ids: list[str], files: list[tuple[str, bytes]], link: bool) -> None:
        # Ids no API call would accept, put straight into the dirty index and a hash.
        r = m.client
        for sid in ids:
            # UTF-8 only: a non-UTF-8 member in the dirty index stops every dump (reported).
            sid = sid.encode("utf-8", "replace").decode()
            r.zadd(k.dirty, {sid: 1})
            r.hset(k.session(sid), "user_id", "x")
        for name, body in files:
            safe = name.replace("/", "_").replace("\x00", "_").encode("utf-8", "replace")
            if safe in (b"", b".", b".."):
                continue
            try:
                (folder / os.fsdecode(safe[:200] + b".json")).write_bytes(body)
            except OSError:
                continue
        if link:
            target = folder / "link.json"
            if not target.is_symlink():
                target.unlink(missing_ok=True)
                target.symlink_to(outside / "victim.json")
        for step in (lambda: m.dump_sessions(data), lambda: m.restore_sessions()):
            with contextlib.suppress(RedsessionError):
                step()

    run()
    assert _tree(outside) == before_outside
    assert (outside / "victim.json").read_text() == "{}"
    assert _outside_data(fuzz_root) == set()


# -- the CLI -------------------------------------------------------------------------------

# Commands that return; server, worker (without --check), mcp, api and up run until a signal.
CLI_COMMANDS = ["list", "show", "export", "import", "merge", "delete", "cleanup", "dump",
                "restore", "stats", "version", "repair-index", "rotate-keys", "prune-scripts",
                "events", "sql"]  # fmt: skip  (never --follow here: it runs until Ctrl-C)
CLI_SERVICES = ["server", "worker", "mcp", "api", "up"]
CLI_OPTIONS = ["--user", "--limit", "--cursor", "--history", "--all", "-o", "--output",
               "--overwrite", "-y", "--yes", "--allow-cross-user", "--dry-run", "--from",
               "--json", "--check", "--port", "--after", "--kind", "--sql-url", "-p",
               "--", "-"]  # fmt: skip
EXIT_CODES = set(range(7))


def _no_nul(text: str) -> str:
    """``text`` as a real argv entry: no NUL, and undecodable bytes surrogate-escaped."""
    return os.fsdecode(text.replace("\x00", "").encode("utf-8", "surrogatepass"))


def test_the_cli_fuzz_covers_every_command() -> None:
    from redsession.cli import cli

    assert set(cli.commands) == {*CLI_COMMANDS, *CLI_SERVICES}


@pytest.fixture
def cli_env(fuzz_root: Path) -> Iterator[None]:
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    # The CLI installs its own stderr handler on each run; CliRunner's stream is gone now.
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(level)


def test_cli_commands_exit_cleanly_whatever_the_arguments(
    redis_server: RedisServer,
    fuzz_manager: SessionManager,
    fresh: Callable[[], tuple[str, str, str]],
    fuzz_root: Path,
    cli_env: None,
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from redsession.cli import cli

    runner = CliRunner()
    a, b, _ = fresh()
    out = tmp_path / "out"
    out.mkdir()
    token = st.one_of(
        st.sampled_from(CLI_OPTIONS),
        st.sampled_from([a, b, ALICE, BOB, "0", "-1", "99999999999999999999", str(out)]),
        weird_text.map(_no_nul),
    )
    ids = st.one_of(st.sampled_from([a, b, "no-such-session"]), weird_text.map(_no_nul))
    args_strategy = st.tuples(
        st.sampled_from(CLI_COMMANDS),
        st.builds(list.__add__, st.lists(ids, max_size=2), st.lists(token, max_size=4)),
        st.sampled_from(["WARNING", "ERROR", "INFO"]),
        st.one_of(st.none(), st.binary(max_size=200), _export_docs(st.just(a)).map(_json_bytes)),
    )

    @settings(FUZZ, max_examples=180)  # 15 commands; each run is a few milliseconds
    @given(args_strategy)
    @example(("list", [], "WARNING", None))
    @example(("show", ["no-such-session"], "WARNING", None))
    @example(("import", ["-"], "WARNING", b"{not json"))
    @example(("list", ["--limit", "many"], "WARNING", None))  # each exit code at least once
    def run(drawn: tuple[str, list[str], str, bytes | None]) -> None:
        command, args, level, stdin = drawn
        # Exports go where the operator says: keep them in our folder, not the working dir.
        args = [str(out / f"x{i}") if i and args[i - 1] in ("-o", "--output") else t
                for i, t in enumerate(args)]  # fmt: skip
        base = ["--redis-url", redis_server.url, "--data-dir", str(fuzz_root / "data")]
        result = runner.invoke(
            cli,
            [*base, "--log-level", level, command, *args],
            input=stdin,
            env={"REDSESSION_KEY_PREFIX": PREFIX},
        )
        assert result.exit_code in EXIT_CODES, (args, result.output, result.exception)
        if result.exception is not None:
            assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert "Traceback" not in result.output
        codes.add(result.exit_code)

    codes: set[int] = set()
    run()
    assert {0, 2, 3, 6} <= codes, codes  # ok, usage, not found, bad input all reached
    assert _outside_data(fuzz_root) == set()


@pytest.mark.parametrize("command", CLI_SERVICES)
def test_cli_services_refuse_bad_arguments_cleanly(
    command: str, redis_server: RedisServer, fuzz_root: Path, cli_env: None
) -> None:
    from click.testing import CliRunner

    from redsession.cli import cli

    runner = CliRunner()

    @FUZZ
    @given(st.lists(weird_text.map(_no_nul), min_size=1, max_size=3))
    def run(junk: list[str]) -> None:
        # A stray positional argument or an unknown option: none of these take one, so
        # each must be a usage error, never a started service.
        args = [command, "--port", "0", "--no-such-option", *junk]
        result = runner.invoke(cli, ["--redis-url", redis_server.url, *args])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output

    run()


# -- the MCP tools -------------------------------------------------------------------------


def _utf8(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _tool_arguments(schema: dict[str, Any], known: list[str]) -> st.SearchStrategy[Any]:
    """Arguments for one tool: its own parameters (hostile values) and stray ones."""
    props = list(schema.get("properties", {}))
    # Depth up to 200: the SDK's client itself refuses to serialize much deeper values.
    shallow_deep = st.builds(_nest, st.integers(1, 200), st.booleans())
    # and it cannot send lone surrogates (a raw JSON client can: the manager fuzz covers them).
    value = st.one_of(st.sampled_from(known), json_like.filter(_utf8), shallow_deep)
    named = (
        st.dictionaries(st.sampled_from(props), value, max_size=len(props))
        if props
        else st.just({})
    )
    stray = st.dictionaries(weird_text, json_like, max_size=2).filter(_utf8)
    return st.one_of(
        st.builds(lambda n, s: {**s, **n}, named, stray),
        named,
        st.fixed_dictionaries({p: value for p in props}),
    )


async def test_mcp_tools_answer_with_a_result_or_a_tool_error(
    redis_server: RedisServer, fuzz_manager: SessionManager, fresh: Callable[[], Any]
) -> None:
    from mcp import Client

    from redsession.services.mcp_server import build_server

    a, b, _ = fresh()
    settings_ = Settings(key_prefix=PREFIX, **LIMITS)
    am = AsyncSessionManager.from_url(redis_server.url, key_prefix=PREFIX, **LIMITS)
    try:
        async with Client(build_server(am, settings_)) as client:
            tools = {t.name: t.input_schema for t in (await client.list_tools()).tools}
            assert len(tools) >= 10
            drawn: list[tuple[str, Any]] = []

            @FUZZ
            @given(st.data())
            def draw(data: st.DataObject) -> None:
                name = data.draw(st.sampled_from(sorted(tools)))
                drawn.append((name, data.draw(_tool_arguments(tools[name], [a, b, ALICE, BOB]))))

            for _ in range(3):  # 50 examples per run; every tool gets some
                draw()
            errors = 0
            for name, args in drawn:
                result = await client.call_tool(name, args)
                if result.is_error:
                    errors += 1
                    text = " ".join(getattr(c, "text", "") for c in result.content)
                    assert "Traceback" not in text, (name, args, text)
                    assert "\n" not in text.strip(), (name, args, text)
            assert 0 < errors < len(drawn)  # both outcomes were reached
    finally:
        await am.close()


def test_mcp_stdio_survives_malformed_requests(redis_server: RedisServer, tmp_path: Path) -> None:
    """What no SDK client sends: lone surrogates, 100k-deep JSON, non-JSON lines."""
    import select
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
    env["REDSESSION_REDIS_URL"] = redis_server.url
    with (tmp_path / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redsession", "mcp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    assert proc.stdin is not None
    assert proc.stdout is not None

    def send(line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line.encode("utf-8", "surrogatepass") + b"\n")
        proc.stdin.flush()

    def call(i: int, name: str, args: str) -> str:
        return (
            f'{{"jsonrpc":"2.0","id":{i},"method":"tools/call",'
            f'"params":{{"name":"{name}","arguments":{args}}}}}'
        )

    def replies_until(wanted_id: int) -> dict[str, Any]:
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "no reply within 30 s"
            assert proc.stdout is not None
            reply = json.loads(proc.stdout.readline())
            if reply.get("id") == wanted_id:
                return dict(reply)

    try:
        hello = {"protocolVersion": "2025-06-18", "capabilities": {},
                 "clientInfo": {"name": "raw", "version": "0"}}  # fmt: skip
        send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}))
        replies_until(1)
        send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
        deep = "[" * 100_000 + "]" * 100_000
        send(call(2, "start_session", '{"user_id":"\\ud800"}'))
        send(call(3, "start_session", '{"user_id":"a","context":{"x":' + deep + "}}"))
        send(call(4, "log_interaction", '{"session_id":"x","user_message":"\\ud800\\u0000"}'))
        send("not json at all")
        send("\ud800")
        send(call(5, "start_session", '{"user_id":"alice"}'))
        # Whatever became of the others (the SDK drops some unanswered), the server lives on.
        reply = replies_until(5)
        assert reply["result"]["isError"] is False
        assert proc.poll() is None
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0
    assert b"Traceback" not in (tmp_path / "stderr").read_bytes()
