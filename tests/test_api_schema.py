"""schemathesis against the REST API's own OpenAPI spec: no 500 for any input, and every
response conforms to the spec (status code, content type, body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from redsession import Settings
from redsession.async_manager import AsyncSessionManager
from redsession.services.api import build_app
from redsession.services.leader import LeaderLock
from redsession.storage.keys import Keys
from tests.drivers import several_loops_at_once

TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


@pytest.fixture
def app(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    s = Settings(redis_url=redis_url, mcp_token=TOKEN, retry_deadline=0, data_dir=tmp_path)
    manager = AsyncSessionManager.from_url(redis_url, **s.model_dump(exclude={"redis_url"}))
    app = build_app(manager, s)
    # A leader heartbeat, so that readiness answers 200: a 503 there would be right.
    lock = LeaderLock(redis.Redis.from_url(redis_url), Keys(), 120.0)
    assert lock.acquire()
    with TestClient(app) as client:
        # Something to find: generated ids mostly miss, but listings and exports see these.
        for i in range(3):
            r = client.post("/v1/sessions", json={"user_id": f"u{i}", "session_id": f"s{i}"},
                            headers=AUTH)  # fmt: skip
            assert r.status_code == 201
        yield app
    lock.release()


# schemathesis calls the app from event loops of its own while the fixture's TestClient holds
# another open.
@several_loops_at_once
def test_api_conforms_to_its_spec(app: Any) -> None:
    # schemathesis' pytest loader (from_fixture) does not run on this pytest, so the
    # operations are walked here, each with its own Hypothesis run.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def check(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        check()
        ran.append(operation.label)
    assert len(ran) >= 20, ran  # every endpoint of the spec was exercised
