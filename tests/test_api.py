"""The REST API, driven over ASGI by Starlette's TestClient against the suite's Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from redsession import SessionManager, Settings
from redsession.async_manager import AsyncSessionManager
from redsession.errors import RedsessionError
from redsession.services.api import build_app
from redsession.services.leader import LeaderLock
from redsession.services.web import ERRORS
from redsession.storage.keys import Keys
from tests.conftest import ServerFactory

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
MakeApi = Callable[..., TestClient]
DEEP: Any = []
for _ in range(40):
    DEEP = [DEEP]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_bytes(orjson.dumps({ALICE: "alice", BOB: "bob"}))
    return path


@pytest.fixture
def make_api(redis_url: str, tokens_file: Path) -> Iterator[MakeApi]:
    """``make_api(url=..., **settings)``: a TestClient on the app (admin token set by default)."""
    clients: list[TestClient] = []

    def factory(url: str | None = None, **settings: Any) -> TestClient:
        settings = {"mcp_token": ADMIN, "mcp_tokens_file": tokens_file, **settings}
        s = Settings(redis_url=url or redis_url, retry_deadline=0, **settings)
        manager = AsyncSessionManager.from_url(s.redis_url, **s.model_dump(exclude={"redis_url"}))
        client = TestClient(build_app(manager, s), raise_server_exceptions=True)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def api(make_api: MakeApi) -> TestClient:
    return make_api()


def create(api: TestClient, user: str, token: str = ADMIN, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/sessions", json={"user_id": user, **body}, headers=bearer(token))
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


def log(api: TestClient, sid: str, text: str, token: str = ADMIN) -> dict[str, Any]:
    r = api.post(
        f"/v1/sessions/{sid}/interactions", json={"user_message": text, "topics": ["t"]},
        headers=bearer(token),
    )  # fmt: skip
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


def test_create_log_and_page_the_history(api: TestClient) -> None:
    sid = create(api, "alice", context={"lang": "en"})["session_id"]
    for i in range(5):
        log(api, sid, f"m{i}")
    r = api.get(f"/v1/sessions/{sid}", params={"limit": 2}, headers=bearer(ADMIN))
    assert r.status_code == 200
    view = r.json()
    assert [e["user_message"] for e in view["history"]] == ["m3", "m4"]
    assert view["session"]["context"] == {"lang": "en"}
    assert view["before"] == 3
    older = api.get(
        f"/v1/sessions/{sid}", params={"limit": 2, "before": 3}, headers=bearer(ADMIN)
    ).json()
    assert [e["user_message"] for e in older["history"]] == ["m1", "m2"]
    oldest = api.get(
        f"/v1/sessions/{sid}", params={"limit": 2, "before": 1}, headers=bearer(ADMIN)
    ).json()
    assert [e["user_message"] for e in oldest["history"]] == ["m0"]
    assert oldest["before"] is None


def test_resume_context_items_and_preferences(api: TestClient) -> None:
    h = bearer(ALICE)
    sid = create(api, "alice", ALICE)["session_id"]
    r = api.patch(f"/v1/sessions/{sid}/context", json={"patch": {"a": {"b": 1}}}, headers=h)
    assert r.json()["context"] == {"a": {"b": 1}}
    r = api.post(f"/v1/sessions/{sid}/items", json={"items": [{"role": "user", "content": "x"}]},
                 headers=h)  # fmt: skip
    assert r.status_code == 201
    assert r.json()[0]["item"] == {"role": "user", "content": "x"}
    r = api.post(f"/v1/sessions/{sid}/resume", json={"user_id": "alice"}, headers=h)
    assert r.status_code == 200
    assert r.json()["total_interactions"] == 1
    r = api.patch("/v1/users/alice/preferences", json={"tone": "dry"}, headers=h)
    assert r.json() == {"user_id": "alice", "preferences": {"tone": "dry"}}
    assert api.get("/v1/users/alice/preferences", headers=h).json()["preferences"] == {
        "tone": "dry"
    }


def test_listings_page_with_a_cursor(api: TestClient) -> None:
    mine = {create(api, "alice")["session_id"] for _ in range(3)}
    create(api, "bob")
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/users/alice/sessions", params=params, headers=bearer(ADMIN)).json()
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(mine)
    everyone = api.get("/v1/sessions", params={"limit": 100}, headers=bearer(ADMIN)).json()
    assert len(everyone["sessions"]) == 4
    # A user's token lists that user's sessions only, whatever it asks for.
    own = api.get("/v1/sessions", headers=bearer(ALICE)).json()
    assert {s["session_id"] for s in own["sessions"]} == mine


def test_export_import_and_export_all(api: TestClient, manager: SessionManager) -> None:
    sid = create(api, "alice")["session_id"]
    log(api, sid, "hello")
    other = create(api, "bob")["session_id"]
    doc = api.get(f"/v1/sessions/{sid}/export", headers=bearer(ADMIN)).json()
    assert doc["history"][0]["user_message"] == "hello"
    assert api.delete(f"/v1/sessions/{sid}", headers=bearer(ADMIN)).status_code == 204
    r = api.post("/v1/import", json={"document": doc}, headers=bearer(ADMIN))
    assert r.status_code == 409  # the tombstone refuses it: a deleted session stays deleted
    doc["session"]["session_id"] = "restored-1"
    r = api.post("/v1/import", json={"document": doc}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    assert manager.export_session_data("restored-1")["history"] == doc["history"]
    with api.stream("GET", "/v1/export", headers=bearer(ADMIN)) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [orjson.loads(line) for line in r.iter_lines() if line]
    assert sorted(d["session"]["session_id"] for d in lines) == sorted(["restored-1", other])
    with api.stream("GET", "/v1/export", headers=bearer(BOB)) as r:
        assert [orjson.loads(x)["session"]["session_id"] for x in r.iter_lines() if x] == [other]


def test_merge_and_delete(api: TestClient) -> None:
    a, b = create(api, "alice")["session_id"], create(api, "alice")["session_id"]
    log(api, a, "in a")
    log(api, b, "in b")
    r = api.post(f"/v1/sessions/{a}/merge", json={"secondary_id": b}, headers=bearer(ALICE))
    assert r.status_code == 200, r.text
    assert r.json()["total_interactions"] == 2
    r = api.post(f"/v1/sessions/{b}/interactions", json={"user_message": "late"},
                 headers=bearer(ALICE))  # fmt: skip
    assert r.status_code == 409
    assert r.json()["error"] == "merged"
    assert api.delete(f"/v1/sessions/{a}", headers=bearer(ALICE)).status_code == 204
    assert api.get(f"/v1/sessions/{a}", headers=bearer(ALICE)).status_code == 404


def test_no_token_or_a_wrong_one_is_401(api: TestClient) -> None:
    for headers in ({}, bearer("wrong-token-0123456789"), {"Authorization": ADMIN}):
        r = api.get("/v1/sessions", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert api.get("/healthz").status_code == 200  # probes need no token


def test_another_users_session_answers_as_a_missing_one(api: TestClient) -> None:
    live = create(api, "alice")["session_id"]
    deleted = create(api, "alice")["session_id"]
    api.delete(f"/v1/sessions/{deleted}", headers=bearer(ALICE))
    merged = create(api, "alice")["session_id"]
    api.post(f"/v1/sessions/{live}/merge", json={"secondary_id": merged}, headers=bearer(ALICE))

    def answers(sid: str) -> list[tuple[int, str]]:
        out = []
        for method, path, body in (
            ("GET", f"/v1/sessions/{sid}", None),
            ("GET", f"/v1/sessions/{sid}/export", None),
            ("POST", f"/v1/sessions/{sid}/interactions", {"user_message": "x"}),
            ("PATCH", f"/v1/sessions/{sid}/context", {"patch": {"x": 1}}),
            ("DELETE", f"/v1/sessions/{sid}", None),
        ):
            r = api.request(method, path, json=body, headers=bearer(BOB))
            out.append((r.status_code, r.text.replace(sid, "<id>")))
        return out

    missing = answers("never-existed")
    assert {status for status, _ in missing} == {404}
    for sid in (live, deleted, merged):
        assert answers(sid) == missing
    r = api.post(f"/v1/sessions/{live}/resume", json={"user_id": "alice"}, headers=bearer(BOB))
    assert r.status_code == 404
    assert api.get(f"/v1/sessions/{live}", headers=bearer(ALICE)).status_code == 200


def test_admin_only_endpoints(api: TestClient) -> None:
    for method, path in (("POST", "/v1/cleanup"), ("GET", "/v1/stats"),
                         ("POST", "/v1/import"), ("GET", "/metrics")):  # fmt: skip
        body = {"document": {}} if path == "/v1/import" else None
        assert api.request(method, path, json=body, headers=bearer(ALICE)).status_code == 404
    assert api.post("/v1/cleanup", headers=bearer(ADMIN)).json() == {"removed": 0}
    create(api, "alice")
    assert api.get("/v1/stats", headers=bearer(ADMIN)).json()["sessions"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/sessions/bad%20id", None, 400),
        ("POST", "/v1/sessions", {"user_id": "a{b}"}, 400),
        ("POST", "/v1/sessions", {"user_id": "alice", "context": {"x": float("inf")}}, 400),
        ("POST", "/v1/sessions", {"user": "alice"}, 422),
        ("POST", "/v1/sessions", "not an object", 422),
        ("GET", "/v1/sessions", {"limit": 0}, 422),
        ("GET", "/v1/sessions?cursor=abc", None, 400),
        ("PATCH", "/v1/users/alice/preferences", {"deep": DEEP}, 413),
        ("GET", "/v1/nowhere", None, 404),
        ("PUT", "/v1/sessions", None, 405),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_with_a_one_line_body(
    api: TestClient, method: str, path: str, body: Any, status: int
) -> None:
    if method == "GET" and isinstance(body, dict):
        r = api.get(path, params=body, headers=bearer(ADMIN))
    elif body == {"user_id": "alice", "context": {"x": float("inf")}}:
        raw = b'{"user_id": "alice", "context": {"x": Infinity}}'
        headers = {**bearer(ADMIN), "content-type": "application/json"}
        r = api.post(path, content=raw, headers=headers)
    else:
        r = api.request(method, path, json=body, headers=bearer(ADMIN))
    assert r.status_code == status, r.text
    doc = r.json()
    assert set(doc) == {"error", "message"}
    assert "\n" not in doc["message"]


def test_every_error_class_has_a_status() -> None:
    def subclasses(c: type[RedsessionError]) -> set[type[RedsessionError]]:
        return {c} | {x for s in c.__subclasses__() for x in subclasses(s)}

    rows = {kind: status for kind, status, _ in ERRORS}
    for kind in subclasses(RedsessionError):
        status = next(s for k, s in rows.items() if issubclass(kind, k))
        # Only faults of the server's own data or settings are 500s.
        assert status != 500 or kind.__name__ in {
            "RedsessionError", "CorruptData", "DecryptionError", "ConfigError", "ServerError"
        }, kind  # fmt: skip


def test_redis_down_is_503(make_api: MakeApi, server_factory: ServerFactory) -> None:
    server = server_factory()
    api = make_api(server.url, socket_timeout=1.0, connect_timeout=0.5)
    sid = create(api, "alice")["session_id"]
    server.stop()
    r = api.get(f"/v1/sessions/{sid}", headers=bearer(ADMIN))
    assert r.status_code == 503
    assert r.json()["error"] == "unavailable"
    ready = api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["redis"]["ok"] is False


def test_readiness_reports_redis_and_the_worker_heartbeat(
    api: TestClient, redis_client: Any
) -> None:
    r = api.get("/readyz")
    assert r.status_code == 503
    assert r.json()["redis"]["ok"] is True
    assert r.json()["worker"]["ok"] is False
    lock = LeaderLock(redis_client, Keys(), 30.0)
    assert lock.acquire()
    r = api.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["worker"]["ok"] is True
    lock.release()
    assert api.get("/readyz").status_code == 503


def test_metrics(api: TestClient) -> None:
    sid = create(api, "alice")["session_id"]
    log(api, sid, "x")
    api.get("/v1/sessions/missing-one", headers=bearer(ADMIN))
    text = api.get("/metrics", headers=bearer(ADMIN)).text
    assert 'redsession_operations_total{operation="log_interaction"} 1.0' in text
    assert 'redsession_operation_seconds_count{operation="create_session"} 1.0' in text
    error = 'redsession_operation_errors_total{error="SessionNotFound",operation="get_session"}'
    assert f"{error} 1.0" in text
    assert "redsession_sessions 1.0" in text
    assert "redsession_users 1.0" in text
    assert "redsession_redis_up 1.0" in text
    assert "redsession_worker_leader_alive 0.0" in text


def test_openapi_schemas_come_from_the_models(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("Session", "SessionExport", "SessionPage", "Interaction", "Item", "StoreStats"):
        assert name in schemas
    assert "/v1/sessions/{session_id}/merge" in spec["paths"]


def test_the_main_endpoints_on_both_backends(make_api: MakeApi, url: str) -> None:
    api = make_api(url)
    sid = create(api, "alice")["session_id"]
    log(api, sid, "one")
    view = api.get(f"/v1/sessions/{sid}", headers=bearer(ALICE)).json()
    assert [e["user_message"] for e in view["history"]] == ["one"]
    with api.stream("GET", "/v1/export", headers=bearer(ADMIN)) as r:
        assert [orjson.loads(x)["session"]["session_id"] for x in r.iter_lines() if x] == [sid]
    ready = api.get("/readyz").json()
    assert ready["redis"] == {"ok": True, "detail": "reachable"}
    assert "redsession_sessions 1.0" in api.get("/metrics", headers=bearer(ADMIN)).text
