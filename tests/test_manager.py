"""SessionManager against a real server: every behaviour of the core store."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from redsession import (
    InvalidInput,
    InvalidSessionId,
    PayloadTooLarge,
    PermissionDenied,
    SessionExists,
    SessionManager,
    SessionMerged,
    SessionNotFound,
    StorageUnavailable,
)
from redsession.storage.keys import Keys
from tests.conftest import ServerFactory

MakeManager = Callable[..., SessionManager]
K = Keys()


# Every test here runs on one server and on a 3-primary Redis Cluster.
@pytest.fixture
def redis_url(url: str) -> str:
    return url  # the conftest's redis_url, on both topologies


@pytest.fixture
def redis_client(
    backend: str, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[redis.Redis | redis.RedisCluster]:
    if backend == "cluster":
        client: redis.Redis | redis.RedisCluster = request.getfixturevalue("redis_cluster").client()
    else:
        client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _commandstats(client: redis.Redis | redis.RedisCluster) -> list[dict[str, Any]]:
    """INFO commandstats of every node (a cluster client answers per node)."""
    if isinstance(client, redis.RedisCluster):
        return list(client.info("commandstats", target_nodes=redis.RedisCluster.PRIMARIES).values())
    return [client.info("commandstats")]


def _script_calls(client: redis.Redis | redis.RedisCluster) -> int:
    return sum(s.get("cmdstat_fcall", {}).get("calls", 0) for s in _commandstats(client))


def _log(m: SessionManager, sid: str, text: str, **kw: object) -> None:
    m.log_interaction(sid, user_message=text, assistant_response=f"re: {text}", **kw)  # type: ignore[arg-type]


# -- create, resume, get -------------------------------------------------------------------


def test_create_generates_a_128_bit_url_safe_id(manager: SessionManager) -> None:
    ids = {manager.create_session("alice").session_id for _ in range(50)}
    assert len(ids) == 50
    for sid in ids:
        assert len(sid) == 22
        assert sid.replace("-", "").replace("_", "").isalnum()


def test_create_with_client_id_and_context(manager: SessionManager) -> None:
    s = manager.create_session("alice", context={"lang": "en", "n": {"x": 1}}, session_id="my-1")
    assert s.session_id == "my-1"
    got = manager.get_session("my-1")
    assert got.user_id == "alice"
    assert got.context == {"lang": "en", "n": {"x": 1}}
    assert got.total_interactions == 0
    assert got.history == []
    with pytest.raises(SessionExists):
        manager.create_session("bob", session_id="my-1")


@pytest.mark.parametrize(
    "bad", ["", "a b", "../etc", "x" * 129, "a{b}", "é", "a\x00b", None, 12, "a:b"]
)
def test_bad_session_ids_are_rejected_before_redis(
    manager: SessionManager, redis_client: redis.Redis, bad: object
) -> None:
    before = _script_calls(redis_client)
    if bad is not None:  # None asks create_session to generate an id
        with pytest.raises(InvalidSessionId):
            manager.create_session("alice", session_id=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        manager.get_session(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        manager.log_interaction(bad, user_message="hi")  # type: ignore[arg-type]
    assert _script_calls(redis_client) == before


@pytest.mark.parametrize("bad", ["", "a b", "a{b", "x" * 257, None, "tab\t"])
def test_bad_user_ids_are_rejected(manager: SessionManager, bad: object) -> None:
    with pytest.raises(InvalidSessionId):
        manager.create_session(bad)  # type: ignore[arg-type]


def test_resume_strict_form(manager: SessionManager) -> None:
    sid = manager.create_session("alice").session_id
    for i in range(30):
        _log(manager, sid, f"m{i}")
    s = manager.resume_session(sid, "alice")
    assert [i.user_message for i in s.history] == [f"m{i}" for i in range(10, 30)]
    assert manager.resume_session(sid, "alice", history=3).history[-1].user_message == "m29"
    with pytest.raises(PermissionDenied) as denied:
        manager.resume_session(sid, "mallory")
    with pytest.raises(SessionNotFound) as missing:
        manager.resume_session("nope", "mallory")
    # Someone else's session reads exactly like a missing one.
    assert str(denied.value).replace(sid, "X") == str(missing.value).replace("nope", "X")


def test_resume_counts_as_activity(make_manager: MakeManager, redis_client: redis.Redis) -> None:
    m = make_manager(session_ttl=timedelta(seconds=100))
    s = m.create_session("alice")
    _log(m, s.session_id, "hi")
    redis_client.pexpire(K.session(s.session_id), 5_000)
    redis_client.pexpire(K.log(s.session_id), 5_000)
    time.sleep(0.01)
    r = m.resume_session(s.session_id, "alice")
    assert r.last_activity > s.last_activity
    assert redis_client.pttl(K.session(s.session_id)) > 90_000
    assert redis_client.pttl(K.log(s.session_id)) > 90_000
    g = m.get_session(s.session_id)  # a plain read is not activity
    assert g.last_activity == r.last_activity


def test_create_or_resume_contract(manager: SessionManager) -> None:
    sid = manager.create_session("alice").session_id
    assert manager.create_or_resume_session("alice", sid) == sid
    other = manager.create_or_resume_session("bob", sid)  # not bob's: a new session
    assert other != sid
    assert manager.get_session(other).user_id == "bob"
    fresh = manager.create_or_resume_session("alice", "never-existed")
    assert fresh != "never-existed"
    assert manager.get_session(fresh).user_id == "alice"
    new = manager.create_or_resume_session("alice")
    assert new not in (sid, fresh)
    with pytest.raises(InvalidSessionId):
        manager.create_or_resume_session("alice", "bad id")


# -- log and history ------------------------------------------------------------------------


def test_log_interaction_and_history(manager: SessionManager, redis_client: redis.Redis) -> None:
    sid = manager.create_session("alice").session_id
    i = manager.log_interaction(
        sid, user_message="hello", assistant_response="hi!", metadata={"model": "x", "t": 0.5},
        topics=["greeting", "smalltalk", "greeting"],
    )  # fmt: skip
    assert i.topics == ["greeting", "smalltalk"]
    _log(manager, sid, "second", topics=["weather", "greeting"])
    s = manager.get_session(sid, history=5)
    assert s.total_interactions == 2
    assert s.topics == ["greeting", "smalltalk", "weather"]
    assert s.history[0] == i
    assert redis_client.llen(K.log(sid)) == 2


def test_history_paging(manager: SessionManager) -> None:
    sid = manager.create_session("alice").session_id
    for n in range(25):
        _log(manager, sid, str(n))
    msgs = lambda xs: [int(x.user_message) for x in xs]  # noqa: E731
    assert msgs(manager.get_history(sid)) == list(range(25))
    assert msgs(manager.get_history(sid, limit=5)) == list(range(20, 25))
    assert msgs(manager.get_history(sid, limit=5, before=20)) == list(range(15, 20))
    assert msgs(manager.get_history(sid, before=3)) == [0, 1, 2]
    assert manager.get_history(sid, limit=0) == []
    assert msgs(manager.get_history(sid, limit=100, before=1000)) == list(range(25))
    with pytest.raises(InvalidInput):
        manager.get_history(sid, limit=-1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"user_message": 5}, InvalidInput),
        ({"user_message": "x", "metadata": {"f": object()}}, InvalidInput),
        ({"user_message": "x", "metadata": {1: "int key"}}, InvalidInput),
        ({"user_message": "x", "metadata": {"nan": float("nan")}}, InvalidInput),
        ({"user_message": "x", "metadata": ["not", "a", "dict"]}, InvalidInput),
        ({"user_message": "x", "metadata": {"big": 2**70}}, InvalidInput),
        ({"user_message": "\ud800"}, InvalidInput),
        ({"user_message": "x", "topics": "not-a-list"}, InvalidInput),
        ({"user_message": "x", "topics": [""]}, InvalidInput),
        ({"user_message": "x" * 1025}, PayloadTooLarge),
        ({"user_message": "x", "assistant_response": "é" * 600}, PayloadTooLarge),
    ],
)
def test_bad_interactions_are_rejected_and_nothing_is_written(
    make_manager: MakeManager, kwargs: dict[str, object], error: type[Exception]
) -> None:
    m = make_manager(max_message_bytes=1024)
    sid = m.create_session("alice").session_id
    with pytest.raises(error):
        m.log_interaction(sid, **kwargs)  # type: ignore[arg-type]
    assert m.get_session(sid).total_interactions == 0


def test_deep_metadata_and_topic_limits(make_manager: MakeManager) -> None:
    m = make_manager(max_json_depth=5, max_topics=3)
    sid = m.create_session("alice").session_id
    deep: dict[str, object] = {}
    node = deep
    for _ in range(10):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with pytest.raises(PayloadTooLarge):
        m.log_interaction(sid, user_message="x", metadata=deep)
    _log(m, sid, "a", topics=["t1", "t2"])
    with pytest.raises(PayloadTooLarge):
        _log(m, sid, "b", topics=["t3", "t4"])
    s = m.get_session(sid)
    assert s.total_interactions == 1
    assert s.topics == ["t1", "t2"]


def test_unknown_session(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFound):
        manager.log_interaction("missing", user_message="hi")
    with pytest.raises(SessionNotFound):
        manager.get_history("missing")
    with pytest.raises(SessionNotFound):
        manager.update_context("missing", {"a": 1})


def test_one_round_trip_per_mutation_and_no_keys(
    manager: SessionManager, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = manager.create_session("alice").session_id

    def three_calls() -> None:
        manager.log_interaction(sid, user_message="hi", topics=["a"])
        manager.resume_session(sid, "alice")
        manager.get_history(sid, limit=5)

    three_calls()  # the first use of each script loads its library (FUNCTION LOAD)
    trips: list[object] = []
    execute = manager._driver._execute
    monkeypatch.setattr(manager._driver, "_execute", lambda cmd: trips.append(cmd) or execute(cmd))
    if isinstance(redis_client, redis.RedisCluster):  # a shared cluster: other tests' stats
        redis_client.config_resetstat(target_nodes=redis.RedisCluster.ALL_NODES)
    else:
        redis_client.config_resetstat()
    three_calls()
    if manager.core.store.cluster:
        # The log and the resume add their cross-slot index step, the log its event; the read
        # has none.
        assert len(trips) == 6
    else:
        assert len(trips) == 3
        assert redis_client.info("commandstats")["cmdstat_fcall"]["calls"] == 3
    manager.list_active_sessions("alice")
    manager.list_active_sessions()
    manager.cleanup_expired_sessions()
    manager.stats()
    assert _script_calls(redis_client) > 0  # the stats are real, so their absences count
    for stats in _commandstats(redis_client):
        assert "cmdstat_keys" not in stats
        assert "cmdstat_scan" not in stats


# -- invariants: counts, TTLs, concurrency ------------------------------------------------------


def _expire_times(r: redis.Redis, sid: str) -> set[int]:
    return {r.pexpiretime(k) for k in (K.session(sid), K.log(sid)) if r.exists(k)}


def test_all_keys_of_a_session_share_one_ttl(
    make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    m = make_manager(session_ttl=timedelta(hours=1))
    sid = m.create_session("alice").session_id
    _log(m, sid, "one")
    (t1,) = _expire_times(redis_client, sid)
    time.sleep(0.005)
    m.update_context(sid, {"k": 1})
    (t2,) = _expire_times(redis_client, sid)
    time.sleep(0.005)
    m.resume_session(sid, "alice")
    (t3,) = _expire_times(redis_client, sid)
    assert t1 < t2 < t3
    exp = m.get_session(sid).expires_at
    assert abs(exp.timestamp() * 1000 - t3) < 1


def _writer(url: str, sid: str, worker: int, n: int) -> None:
    with SessionManager.from_url(url) as m:
        for i in range(n):
            m.log_interaction(sid, user_message=f"{worker}:{i}")


@pytest.mark.slow
def test_eight_processes_lose_no_interaction(manager: SessionManager, redis_url: str) -> None:
    sid = manager.create_session("alice").session_id
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(redis_url, sid, w, 500)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=100)
        assert p.exitcode == 0
    history = manager.get_history(sid)
    assert len(history) == 4000
    assert manager.get_session(sid).total_interactions == 4000
    per_worker: dict[str, list[int]] = {}
    for i in history:
        w, n = i.user_message.split(":")
        per_worker.setdefault(w, []).append(int(n))
    assert per_worker == {str(w): list(range(500)) for w in range(8)}
    assert len({i.id for i in history}) == 4000


def test_concurrent_context_patches_all_land(make_manager: MakeManager) -> None:
    managers = [make_manager() for _ in range(4)]
    sid = managers[0].create_session("alice").session_id

    def patcher(m: SessionManager, w: int) -> None:
        for i in range(25):
            m.update_context(sid, {"by": {f"w{w}": i}, f"last{w}": i})

    threads = [threading.Thread(target=patcher, args=(m, w)) for w, m in enumerate(managers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = managers[0].get_session(sid)
    assert s.context["by"] == {f"w{w}": 24 for w in range(4)}
    assert all(s.context[f"last{w}"] == 24 for w in range(4))
    assert s.version == 100


def test_update_context_deep_merge(manager: SessionManager) -> None:
    ctx = {"a": {"b": 1, "c": 2}, "d": 3, "e": [1]}
    sid = manager.create_session("alice", context=ctx).session_id
    patch = {"a": {"b": None, "x": {"y": 1}}, "d": None, "e": {"now": "dict"}}
    s = manager.update_context(sid, patch)
    assert s.context == {"a": {"c": 2, "x": {"y": 1}}, "e": {"now": "dict"}}
    assert manager.get_session(sid).context == s.context
    assert s.version == 1
    with pytest.raises(InvalidInput):
        manager.update_context(sid, "not a dict")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        manager.update_context(sid, {"a": {1, 2}})


def test_context_size_limit(make_manager: MakeManager) -> None:
    m = make_manager(max_context_bytes=100)
    sid = m.create_session("alice", context={"a": "x" * 50}).session_id
    with pytest.raises(PayloadTooLarge):
        m.update_context(sid, {"b": "y" * 60})  # each fits; the merged context does not
    assert m.get_session(sid).context == {"a": "x" * 50}


# -- preferences, listing -------------------------------------------------------------------


def test_preferences_are_shared_by_all_sessions_of_a_user(manager: SessionManager) -> None:
    assert manager.get_preferences("alice") == {}
    assert manager.set_preferences("alice", {"lang": "fr", "tone": {"formal": True}}) == {
        "lang": "fr", "tone": {"formal": True},
    }  # fmt: skip
    manager.set_preferences("alice", {"lang": None, "units": "metric"})
    assert manager.get_preferences("alice") == {"tone": {"formal": True}, "units": "metric"}
    assert manager.get_preferences("bob") == {}
    with pytest.raises(InvalidInput):
        manager.set_preferences("alice", {"x": float("inf")})


def test_list_active_sessions_newest_first_and_paged(manager: SessionManager) -> None:
    ids = [manager.create_session("alice").session_id for _ in range(7)]
    bob = manager.create_session("bob").session_id
    _log(manager, ids[2], "bump")  # most recent activity now
    page = manager.list_active_sessions("alice", limit=3)
    assert [s.session_id for s in page.sessions] == [ids[2], ids[6], ids[5]]
    seen = [s.session_id for s in page.sessions]
    while page.next_cursor:
        page = manager.list_active_sessions("alice", limit=3, cursor=page.next_cursor)
        seen += [s.session_id for s in page.sessions]
    assert sorted(seen) == sorted(ids)
    everyone = manager.list_active_sessions(limit=100).sessions
    assert {s.session_id for s in everyone} == {*ids, bob}
    assert [s.session_id for s in everyone[:2]] == [ids[2], bob]
    assert next(s for s in everyone if s.session_id == ids[2]).total_interactions == 1
    with pytest.raises(InvalidInput):
        manager.list_active_sessions(cursor="garbage")
    with pytest.raises(InvalidInput):
        manager.list_active_sessions(limit=0)
    assert list(manager.iter_session_ids("bob")) == [bob]


@pytest.mark.parametrize("user", [None, "alice"])
def test_iterating_ids_while_sessions_are_touched_visits_each_once(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch, user: str | None
) -> None:
    # export --all and rotate-keys walk every id while the app keeps writing: a session
    # touched before the walk reached it must still be visited, and only once.
    monkeypatch.setattr("redsession.storage.walk.PAGE", 3)
    ids = [manager.create_session("alice").session_id for _ in range(10)]
    seen: list[str] = []
    for sid in manager.iter_session_ids(user):
        seen.append(sid)
        for other in ids:
            if other not in seen:
                _log(manager, other, "touched")  # the oldest one not visited yet
                break
        _log(manager, sid, "touched again")  # an id already visited comes up again
    assert sorted(seen) == sorted(ids)
    # Users likewise (rotate-keys walks them for the preferences).
    users = [f"user{i}" for i in range(7)]
    for u in users:
        manager.create_session(u)
    seen_users: list[str] = []
    for u in manager.iter_user_ids():
        seen_users.append(u)
        rest = [x for x in users if x not in seen_users]
        if rest:
            manager.create_session(rest[0])
    assert sorted(seen_users) == sorted(["alice", *users])


def test_iteration_over_a_group_of_equal_scores_larger_than_a_page(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Imports keep their last activity, so ids may share one score: none may be skipped.
    monkeypatch.setattr("redsession.storage.walk.PAGE", 3)
    members = {f"tied{i}": 1_000 for i in range(8)} | {"before": 999, "after": 1_001}
    manager.client.zadd(manager.core.store.keys.sessions, members)
    walked = list(manager.iter_session_ids())
    assert walked[0] == "before"
    assert walked[-1] == "after"
    assert sorted(walked) == sorted(members)


def test_index_members_that_are_not_utf8_are_removed_where_met(
    manager: SessionManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only someone writing to our keys directly can put them there; they must not stop the
    # listings, the dump, cleanup, stats or repair (each raised UnicodeDecodeError).
    sid = manager.create_session("alice").session_id
    k, c = manager.core.store.keys, manager.client
    junk = b"\xff\xfe"
    indexes = [k.sessions, k.user_sessions("alice"), k.users, k.expiry, k.dirty]
    for key in indexes:
        c.zadd(key, {junk: 1})
    assert [s.session_id for s in manager.list_active_sessions().sessions] == [sid]
    assert [s.session_id for s in manager.list_active_sessions("alice").sessions] == [sid]
    assert list(manager.iter_user_ids()) == ["alice"]
    assert manager.stats().sessions == 1  # counted before the junk member went
    assert manager.dump_sessions(tmp_path).written == 1
    assert manager.cleanup_expired_sessions() == 0
    for key in indexes:
        assert c.zscore(key, junk) is None, key
    scanned = indexes[:4]  # the walks and repair meet them too (the dump reads P:dirty)
    for key in scanned:
        c.zadd(key, {junk: 1})
    monkeypatch.setattr("redsession.storage.walk.PAGE", 2)  # a first page of junk only
    c.zadd(k.sessions, {b"\xfe": 2, b"\xfe\xff": 3})
    assert list(manager.iter_session_ids()) == [sid]
    manager.repair_indexes()
    for key in scanned:
        assert c.zscore(key, junk) is None, key
    assert manager.get_session(sid).user_id == "alice"


def test_an_application_client_that_decodes_responses(
    backend: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    # An application may hand SessionManager its own client, decode_responses=True included.
    client: redis.Redis | redis.RedisCluster
    if backend == "cluster":
        client = request.getfixturevalue("redis_cluster").client(decode_responses=True)
    else:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
    with client:
        m = SessionManager(client)
        sid = m.create_session("alice", context={"plan": "pro"}).session_id
        _log(m, sid, "héllo", metadata={"n": 1}, topics=["billing"])
        s = m.resume_session(sid, "alice")
        assert [i.user_message for i in s.history] == ["héllo"]
        assert s.context == {"plan": "pro"}
        assert s.topics == ["billing"]
        assert [x.session_id for x in m.list_active_sessions("alice").sessions] == [sid]
        doc = m.export_session_data(sid)
        assert doc["history"][0]["metadata"] == {"n": 1}
        _log(m, sid, "after the export")
        m.import_session_data(doc, overwrite=True)
        back = m.get_session(sid, history=5)
        assert back.history == s.history
        assert back.context == s.context


# -- delete, tombstones --------------------------------------------------------------------


def test_delete_and_no_resurrection(manager: SessionManager, redis_client: redis.Redis) -> None:
    sid = manager.create_session("alice").session_id
    _log(manager, sid, "hi")
    manager.delete_session(sid)
    with pytest.raises(SessionNotFound):
        manager.get_session(sid)
    with pytest.raises(SessionNotFound):
        manager.log_interaction(sid, user_message="late write")
    with pytest.raises(SessionNotFound):
        manager.update_context(sid, {"a": 1})
    with pytest.raises(SessionExists):
        manager.create_session("alice", session_id=sid)
    assert not redis_client.exists(K.session(sid), K.log(sid))
    assert manager.list_active_sessions("alice").sessions == []
    with pytest.raises(SessionNotFound):
        manager.delete_session(sid)


# -- export, import ------------------------------------------------------------------------


def test_export_import_round_trip_exact(manager: SessionManager, redis_client: redis.Redis) -> None:
    sid = manager.create_session("alice", context={"k": [1, 2.5, "x", None]}).session_id
    for n in range(5):
        _log(manager, sid, f"m{n}", metadata={"n": n}, topics=[f"t{n % 2}"])
    manager.update_context(sid, {"more": True})
    doc = manager.export_session_data(sid)
    assert doc["format"] == "redsession.session"
    assert doc["version"] == 2
    assert len(doc["history"]) == 5
    ttl = redis_client.pexpiretime(K.session(sid))
    redis_client.flushall()
    assert manager.import_session_data(doc) == sid
    assert manager.export_session_data(sid) == doc
    assert redis_client.pexpiretime(K.session(sid)) == ttl == redis_client.pexpiretime(K.log(sid))
    assert [s.session_id for s in manager.list_active_sessions("alice").sessions] == [sid]
    with pytest.raises(SessionExists):
        manager.import_session_data(doc)
    assert manager.import_session_data(doc, overwrite=True) == sid


def test_import_overwrite_moves_owner(manager: SessionManager) -> None:
    sid = manager.create_session("alice").session_id
    doc = manager.export_session_data(sid)
    doc["session"]["user_id"] = "bob"
    manager.import_session_data(doc, overwrite=True)
    assert manager.list_active_sessions("alice").sessions == []
    assert [s.session_id for s in manager.list_active_sessions("bob").sessions] == [sid]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other"),
        lambda d: d.update(version=3),
        lambda d: d.pop("session"),
        lambda d: d["session"].update(session_id="../../etc/passwd"),
        lambda d: d["session"].update(user_id="a b"),
        lambda d: d["session"].update(total_interactions=99),
        lambda d: d.update(expires_at="2000-01-01T00:00:00Z"),
        lambda d: d["history"].append(dict(d["history"][0])),
        lambda d: d["history"][0].update(timestamp="yesterday"),
        lambda d: d["session"].update(extra_field=1),
    ],
)
def test_bad_import_documents(manager: SessionManager, mutate: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    sid = manager.create_session("alice").session_id
    _log(manager, sid, "hi")
    doc = manager.export_session_data(sid)
    manager.delete_session(sid)
    mutate(doc)
    with pytest.raises(InvalidInput):
        manager.import_session_data(doc, overwrite=True)
    for junk in ("not json", b"\xff\xfe", "[]", 42, None):
        with pytest.raises(InvalidInput):
            manager.import_session_data(junk)


# -- merge ----------------------------------------------------------------------------------


def test_merge_semantics(manager: SessionManager) -> None:
    a = manager.create_session("alice", context={"x": 1, "shared": {"p": "A", "q": 1}}).session_id
    b = manager.create_session("alice", context={"y": 2, "shared": {"p": "B", "r": 2}}).session_id
    _log(manager, a, "a1", topics=["t1"])
    _log(manager, b, "b1", topics=["t2", "t1"])
    _log(manager, a, "a2")
    _log(manager, b, "b2", topics=["t3"])
    merged = manager.merge_sessions(a, b)
    history = manager.get_history(a)
    assert [i.user_message for i in history] == ["a1", "b1", "a2", "b2"]
    assert merged.total_interactions == 4 == manager.get_session(a).total_interactions
    assert merged.context == {"x": 1, "y": 2, "shared": {"p": "A", "q": 1, "r": 2}}
    assert merged.topics == ["t1", "t2", "t3"]
    assert merged.merged_from == [b]
    assert merged.created_at == min(manager.get_session(a).created_at, merged.created_at)
    # The secondary is a tombstone that redirects to the primary.
    assert manager.resume_session(b, "alice").session_id == a
    with pytest.raises(SessionMerged) as gone:
        manager.log_interaction(b, user_message="late")
    assert gone.value.primary_id == a
    assert manager.list_active_sessions("alice").sessions[0].session_id == a
    assert len(manager.list_active_sessions("alice").sessions) == 1
    # Idempotent: again, same answer, nothing duplicated.
    again = manager.merge_sessions(a, b)
    assert again.total_interactions == 4
    assert manager.get_session(a).version == merged.version


def test_merge_refusals(manager: SessionManager) -> None:
    a = manager.create_session("alice").session_id
    b = manager.create_session("bob").session_id
    with pytest.raises(InvalidInput):
        manager.merge_sessions(a, a)
    with pytest.raises(PermissionDenied):
        manager.merge_sessions(a, b)
    with pytest.raises(PermissionDenied):
        manager.merge_sessions(a, b, user_id="alice")
    assert manager.merge_sessions(a, b, allow_cross_user=True).user_id == "alice"
    with pytest.raises(SessionNotFound):
        manager.merge_sessions(a, "missing")


# -- cleanup, stats --------------------------------------------------------------------------


def test_cleanup_removes_only_expired_index_entries(
    make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    short = make_manager(session_ttl=timedelta(milliseconds=300))
    long = make_manager()
    dead = [short.create_session("alice").session_id for _ in range(5)]
    live = [long.create_session("alice").session_id for _ in range(3)]
    bob_dead = short.create_session("bob").session_id
    assert long.cleanup_expired_sessions(dry_run=True) == 0
    time.sleep(0.5)
    assert long.cleanup_expired_sessions(dry_run=True) == 6
    assert long.cleanup_expired_sessions() == 6
    assert long.cleanup_expired_sessions() == 0
    assert sorted(s.session_id for s in long.list_active_sessions("alice").sessions) == sorted(live)
    assert redis_client.zcard(K.sessions) == 3
    assert redis_client.zcard(K.expiry) == 3
    assert redis_client.zrange(K.users, 0, -1) == [b"alice"]
    assert not redis_client.exists(K.user_sessions("bob"))
    # Expired sessions are marked so the next dump removes their files.
    dirty = {m.decode() for m in redis_client.zrange(K.dirty, 0, -1)}
    assert {*dead, bob_dead} <= dirty


def test_stats(manager: SessionManager) -> None:
    empty = manager.stats()
    assert (empty.sessions, empty.users, empty.interactions) == (0, 0, 0)
    a = manager.create_session("alice").session_id
    manager.create_session("bob")
    for n in range(3):
        _log(manager, a, str(n))
    st = manager.stats()
    assert (st.sessions, st.users, st.interactions, st.expiring_24h) == (2, 2, 3, 0)
    assert st.redis_used_memory > 0
    assert st.oldest_activity is not None
    assert st.newest_activity is not None
    assert st.oldest_activity <= st.newest_activity


# -- outages --------------------------------------------------------------------------------


def test_unreachable_redis_raises_storage_unavailable_then_recovers(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    m = SessionManager.from_url(
        server.url, socket_timeout=1.0, connect_timeout=0.5, retry_deadline=0.5
    )
    try:
        sid = m.create_session("alice").session_id
        server.stop()
        with pytest.raises(StorageUnavailable):
            m.log_interaction(sid, user_message="while down")
        server.start()
        m.log_interaction(sid, user_message="back")
        assert [i.user_message for i in m.get_history(sid)] == ["back"]
    finally:
        m.close()


def test_hung_redis_times_out(server_factory: ServerFactory) -> None:
    server = server_factory()
    m = SessionManager.from_url(
        server.url, socket_timeout=0.5, connect_timeout=0.5, retry_deadline=0.5
    )
    try:
        sid = m.create_session("alice").session_id
        import os
        import signal

        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StorageUnavailable):
                m.get_session(sid)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert m.get_session(sid).session_id == sid
    finally:
        m.close()


# -- Redis restarts: stale pooled connections (as in test_async_manager.py) -----------------

RESTARTS = 20
WARM = 8  # concurrent calls: up to that many pooled connections


def _burst(m: SessionManager, sid: str, texts: list[str]) -> None:
    """Log each of ``texts`` from its own thread, all at once; re-raise the first failure."""
    failures: list[Exception] = []
    start = threading.Barrier(len(texts))

    def call(text: str) -> None:
        start.wait()
        try:
            m.log_interaction(sid, user_message=text)
        except StorageUnavailable as e:  # re-raised below, in the test's thread
            failures.append(e)

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def _calls(m: SessionManager, sid: str, tag: str) -> list[str]:
    """Sequential calls (the pool's most recent connection), then concurrent ones (the rest)."""
    texts = [f"{tag}.{i}" for i in range(3 + WARM)]
    for text in texts[:3]:
        m.log_interaction(sid, user_message=text)
    _burst(m, sid, texts[3:])
    return texts


def test_pooled_connections_are_replaced_after_restarts(server_factory: ServerFactory) -> None:
    """Every call after a restart works, none retried: the pool replaces on checkout the
    connections the old server closed."""
    server = server_factory()
    m = SessionManager.from_url(server.url, socket_timeout=1.0, connect_timeout=0.5)
    try:
        sid = m.create_session("alice").session_id
        sent = _calls(m, sid, "warm")
        with redis.Redis.from_url(server.url) as probe:
            assert int(probe.info("clients")["connected_clients"]) - 1 > 1  # several pooled
        for cycle in range(RESTARTS):
            server.restart()
            sent += _calls(m, sid, str(cycle))
        assert sorted(x.user_message for x in m.get_history(sid)) == sorted(sent)
    finally:
        m.close()


def test_call_while_down_fails_at_the_retry_deadline_then_the_next_calls_work(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    m = SessionManager.from_url(
        server.url, socket_timeout=0.5, connect_timeout=0.5, retry_deadline=0.5
    )
    try:
        sid = m.create_session("alice").session_id
        sent = _calls(m, sid, "warm")
        server.stop()
        t = time.monotonic()
        with pytest.raises(StorageUnavailable):
            m.log_interaction(sid, user_message="down")
        # Retried until the deadline (0.5 s), then given up: not before it, and not a hang
        # (at most one backoff, 1 s, and one socket timeout, 0.5 s, past it).
        assert 0.5 <= time.monotonic() - t < 2.5
        server.start()
        sent += _calls(m, sid, "up")
        assert sorted(x.user_message for x in m.get_history(sid)) == sorted(sent)
    finally:
        m.close()
