"""The dashboard in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium)
against `redsession api` run as a process, on a known data set.

Every page visited is screenshotted into test-screenshots/<run>/ (gitignored); the run's
folder is named at the end of the pytest summary.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from redsession import SessionManager
from redsession.model.models import JobRun
from tests.conftest import SCREENSHOTS

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"
)
ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
RUN = SCREENSHOTS
DAVE = 21  # sessions of dave: with the others, more than one page of 20


def known_data(m: SessionManager) -> None:
    """alice: alice-long (25 interactions), alice-short (1); bob: bob-one (2 items),
    bob-two (empty); carol: carol-a, carol-b (1 each); dave: dave-00..dave-20 (empty)."""
    for n in range(DAVE):
        m.create_session("dave", session_id=f"dave-{n:02d}")
    m.create_session("alice", session_id="alice-long", context={"plan": "pro"})
    m.set_preferences("alice", {"tone": "dry"})
    for n in range(25):
        m.log_interaction("alice-long", user_message=f"q{n}", assistant_response=f"a{n}",
                          topics=["billing"] if n == 0 else None)  # fmt: skip
    m.create_session("alice", session_id="alice-short")
    m.log_interaction("alice-short", user_message="refund?", topics=["billing", "refund"])
    m.create_session("bob", session_id="bob-one")
    m.append_items("bob-one", [{"role": "user", "content": "hello from an agent"},
                               {"role": "assistant", "content": "hi there"}])  # fmt: skip
    m.create_session("bob", session_id="bob-two")
    for sid in ("carol-a", "carol-b"):
        m.create_session("carol", session_id=sid)
        m.log_interaction(sid, user_message=f"in {sid}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def site(redis_url: str, tmp_path: Path, manager: SessionManager) -> Iterator[str]:
    known_data(manager)
    manager.rollup()
    tokens = tmp_path / "tokens.json"
    tokens.write_bytes(orjson.dumps({ALICE: "alice"}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDSESSION_")}
    env |= {"REDSESSION_REDIS_URL": redis_url, "REDSESSION_MCP_TOKEN": ADMIN,
            "REDSESSION_MCP_TOKENS_FILE": str(tokens), "REDSESSION_DATA_DIR": str(tmp_path)}
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "redsession", "api", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"api never listened:\n{(tmp_path / 'api.log').read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    context = browser.new_context(base_url=site, accept_downloads=True)
    outside: list[str] = []
    # Any request to another host fails the test: the dashboard ships everything it uses.
    context.on("request", lambda r: r.url.startswith(site) or outside.append(r.url))
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()
    assert outside == []


Shot = Callable[[str], None]


@pytest.fixture
def shot(page: Page, request: pytest.FixtureRequest) -> Shot:
    """``shot(what)``: a full-page screenshot into this run's folder."""
    taken: list[str] = []

    def take(what: str) -> None:
        RUN.mkdir(parents=True, exist_ok=True)
        taken.append(what)
        page.screenshot(path=RUN / f"{request.node.name}-{len(taken):02d}-{what}.png",
                        full_page=True)  # fmt: skip

    return take


def login(pg: Page, token: str = ADMIN) -> None:
    pg.goto("/ui/sessions")
    assert pg.url.endswith("/ui/login")
    pg.fill("input[name=token]", token)
    pg.click("#login")
    pg.wait_for_url("**/ui/sessions")


def rows(pg: Page) -> list[str]:
    return pg.locator("#sessions tbody tr td:first-child").all_inner_texts()


def test_login_with_a_token_and_the_wrong_token_page(page: Page, shot: Shot) -> None:
    pg = page
    r = pg.goto("/ui/analytics")
    assert pg.url.endswith("/ui/login")
    shot("login")
    pg.fill("input[name=token]", "wrong-token-0123456789")
    posted = lambda r: r.url.endswith("/ui/login") and r.request.method == "POST"  # noqa: E731
    with pg.expect_response(posted) as answer:
        pg.click("#login")
    assert answer.value.status == 401
    assert "not valid" in pg.inner_text("#wrong-token")
    shot("wrong-token")
    login(pg)
    assert len(rows(pg)) == 20
    pg.click("text=Log out")
    pg.wait_for_url("**/ui/login")
    r = pg.goto("/ui/sessions")
    assert r is not None
    assert pg.url.endswith("/ui/login")


def test_the_list_newest_first_paged_and_search(page: Page, shot: Shot) -> None:
    pg = page
    login(pg)
    first = rows(pg)
    # The newest activity first: carol-b was written last, the dave sessions first.
    assert first[:2] == ["carol-b", "carol-a"]
    shot("sessions")
    pg.click("#next")
    second = rows(pg)
    assert len(first) + len(second) == DAVE + 6
    assert not set(first) & set(second)
    assert second[-1] == "dave-00"
    pg.fill("input[name=q]", "alice")
    pg.click("text=Search")
    assert rows(pg) == ["alice-short", "alice-long"]
    shot("search-user")
    pg.fill("input[name=q]", "bob-one")
    pg.click("text=Search")
    assert rows(pg) == ["bob-one"]
    pg.fill("input[name=q]", "nobody")
    pg.click("text=Search")
    assert pg.is_visible("#none")


def test_a_session_its_conversation_by_role_and_history_paging(page: Page, shot: Shot) -> None:
    pg = page
    login(pg)
    pg.click("text=alice-long")
    assert pg.inner_text("#total") == "25"
    assert pg.inner_text("#range") == "Entries 6-25 of 25"
    assert json.loads(pg.inner_text("#context")) == {"plan": "pro"}
    assert json.loads(pg.inner_text("#preferences")) == {"tone": "dry"}
    assert pg.inner_text("#topics").strip() == "billing"
    texts = pg.locator("#conversation .msg.user .text").all_inner_texts()
    assert texts == [f"q{n}" for n in range(5, 25)]
    answers = pg.locator("#conversation .msg.assistant .text").all_inner_texts()
    assert answers == [f"a{n}" for n in range(5, 25)]
    shot("session")
    pg.click("#older")
    assert pg.inner_text("#range") == "Entries 1-5 of 25"
    texts = pg.locator("#conversation .msg.user .text").all_inner_texts()
    assert texts == [f"q{n}" for n in range(5)]
    assert not pg.is_visible("#older")
    shot("session-older")
    pg.click("#newer")
    assert pg.inner_text("#range") == "Entries 6-25 of 25"
    # Framework items are shown by their role too.
    pg.goto("/ui/sessions/bob-one")
    roles = pg.locator("#conversation .role").all_inner_texts()
    assert [r.split()[0] for r in roles] == ["USER", "ASSISTANT"]
    assert "hello from an agent" in pg.inner_text("#conversation")


def test_export(page: Page, tmp_path: Path) -> None:
    pg = page
    login(pg)
    pg.goto("/ui/sessions/alice-short")
    with pg.expect_download() as download:
        pg.click("#export")
    assert download.value.suggested_filename == "alice-short.json"
    path = tmp_path / "export.json"
    download.value.save_as(path)
    doc = orjson.loads(path.read_bytes())
    assert doc["session"]["session_id"] == "alice-short"
    assert [e["user_message"] for e in doc["history"]] == ["refund?"]


def test_delete_asks_for_confirmation(page: Page, shot: Shot, manager: SessionManager) -> None:
    pg = page
    login(pg)
    pg.goto("/ui/sessions/bob-two")
    pg.click("#delete")
    assert "Delete session" in pg.inner_text("h1")
    shot("confirm-delete")
    pg.click("text=Cancel")
    assert manager.get_session("bob-two").session_id == "bob-two"  # nothing deleted yet
    pg.click("#delete")
    pg.click("#confirm")
    assert "was deleted" in pg.inner_text("#deleted")
    shot("deleted")
    assert "bob-two" not in [s.session_id for s in manager.list_active_sessions("bob").sessions]
    r = pg.goto("/ui/sessions/bob-two")
    assert r is not None
    assert r.status == 404


def test_merge(page: Page, shot: Shot, manager: SessionManager) -> None:
    pg = page
    login(pg)
    pg.goto("/ui/sessions/carol-a")
    pg.click("#merge")
    assert pg.input_value("input[name=primary]") == "carol-a"
    pg.fill("input[name=secondary]", "carol-b")
    shot("merge")
    pg.click("#do-merge")
    pg.wait_for_url("**/ui/sessions/carol-a?merged=1")
    assert pg.inner_text("#total") == "2"
    users = pg.locator("#conversation .msg.user .text").all_inner_texts()
    assert users == ["in carol-a", "in carol-b"]
    shot("merged")
    assert manager.get_session("carol-b").session_id == "carol-a"  # the id now leads there
    pg.goto("/ui/merge")
    pg.fill("input[name=primary]", "carol-a")
    pg.fill("input[name=secondary]", "bob-one")
    pg.click("#do-merge")
    assert pg.is_visible("#error")  # two users: refused


def test_analytics_show_the_right_numbers(page: Page, shot: Shot) -> None:
    pg = page
    login(pg)
    pg.goto("/ui/analytics")
    figures = {
        name: pg.inner_text(f"#{name}")
        for name in ("live-sessions", "users", "active-today", "interactions-today",
                     "new-today", "expiring")
    }  # fmt: skip
    assert figures == {
        "live-sessions": str(DAVE + 6), "users": "4", "active-today": str(DAVE + 6),
        # 28 log_interaction calls and bob-one's append_items: one append each.
        "interactions-today": "29", "new-today": "4", "expiring": "0",
    }  # fmt: skip
    topics = pg.locator("#topics tbody tr").all_inner_texts()
    assert [t.split() for t in topics] == [["billing", "2"], ["refund", "1"]]
    # The bars carry their values: today's interactions, and the spread of the sessions.
    today = pg.locator("#chart-activity rect.interactions").last
    assert today.get_attribute("data-value") == "29"
    spread = {
        r.get_attribute("data-label"): r.get_attribute("data-value")
        for r in pg.locator("#chart-spread rect").all()
    }
    assert spread["0"] == str(DAVE + 1)  # dave's and bob-two
    assert (spread["1"], spread["2-5"], spread["21-50"]) == ("3", "1", "1")
    assert pg.locator("#chart-memory circle").count() == 1
    shot("analytics")


def test_worker_page_and_a_user_token(page: Page, shot: Shot, manager: SessionManager) -> None:
    pg = page
    login(pg)
    pg.goto("/ui/worker")
    assert "No worker leads" in pg.inner_text("#leader")
    at = datetime.now(timezone.utc)
    manager.record_job(JobRun(job="dump", at=at, ok=True, seconds=0.25, outcome="written=3"))
    manager.record_job(JobRun(job="backup", at=at, ok=False, seconds=0.01, outcome="disk full"))
    pg.reload()
    jobs = [r.split("\t") for r in pg.locator("#jobs tbody tr").all_inner_texts()]
    by_job = {r[0]: r[1:] for r in jobs}
    assert by_job["dump"][1:] == ["ok", "0.250 s", "written=3"]
    assert by_job["backup"][1:] == ["failed", "0.010 s", "disk full"]
    assert by_job["cleanup"] == ["never recorded"]
    shot("worker")
    pg.click("text=Log out")
    login(pg, ALICE)
    assert sorted(rows(pg)) == ["alice-long", "alice-short"]
    r = pg.goto("/ui/sessions/bob-one")
    assert r is not None
    assert r.status == 404  # another user's session reads as a missing one
    assert pg.goto("/ui/analytics").status == 404  # admin only
    shot("user-token")
