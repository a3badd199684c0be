"""Merging sessions while the conversation goes on: no append lost, none doubled, no give-up.

4 writers append to each side while the merge runs. Each append lands in the primary, or is
refused with SessionMerged and retried there; afterwards the primary holds exactly every
acknowledged append, once. On one server and on a 3-primary cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from redsession import SessionManager, SessionMerged, Settings
from redsession.storage.connection import sync_client

WRITERS_PER_SIDE = 4
MAX_APPENDS = 3000  # per writer: the loop is bounded whatever happens
AFTER = 10  # appends each writer makes once the merge has returned


@pytest.fixture
def m(url: str) -> Iterator[SessionManager]:
    s = Settings()
    with SessionManager(sync_client(url, s), s) as manager:
        yield manager


def test_merge_completes_under_appends_to_both_sides_and_loses_none(
    m: SessionManager, url: str
) -> None:
    primary = m.create_session("alice").session_id
    secondary = m.create_session("alice").session_id
    acked: list[str] = []
    redirected: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(2 * WRITERS_PER_SIDE + 1)
    done = threading.Event()
    counts = [0] * (2 * WRITERS_PER_SIDE)

    def writer(target: str, k: int) -> None:
        with SessionManager.from_url(url) as w:
            started.wait()
            after = 0
            for n in range(MAX_APPENDS):
                if done.is_set():
                    after += 1
                    if after > AFTER:
                        break
                item = {"writer": k, "n": n}
                try:
                    (got,) = w.append_items(target, [item])
                except SessionMerged as e:  # the secondary is fenced or merged: go there
                    with lock:
                        redirected.append(e.primary_id)
                    (got,) = w.append_items(e.primary_id, [item])
                    target = e.primary_id
                with lock:
                    acked.append(got.id)
                counts[k] = n + 1

    threads = [
        threading.Thread(target=writer, args=(side, k))
        for k, side in enumerate([primary, secondary] * WRITERS_PER_SIDE)
    ]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.05)  # the writers are under way
    merged = m.merge_sessions(primary, secondary)
    done.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert merged.session_id == primary
    assert set(redirected) == {primary}
    assert len(redirected) == WRITERS_PER_SIDE  # each secondary writer was told once
    ids = [e.id for e in m.get_history(primary)]
    assert max(counts) < MAX_APPENDS  # every writer was still writing when the merge ended
    assert sorted(ids) == sorted(acked)  # every acknowledged append, exactly once
    assert m.get_session(primary).total_interactions == len(acked)
    # Each writer's appends in its own order (each lands after the one before it).
    items = m.get_items(primary)
    for k in range(2 * WRITERS_PER_SIDE):
        assert [x["n"] for x in items if x["writer"] == k] == list(range(counts[k]))
    with pytest.raises(SessionMerged):
        m.append_items(secondary, [{"late": True}])


def test_a_merge_interrupted_after_its_fence_is_finished_by_running_it_again(
    m: SessionManager,
) -> None:
    p = m.create_session("alice").session_id
    s = m.create_session("alice").session_id
    m.append_items(s, [{"from": "s"}])
    # The first step alone, as if the merge died right after it.
    m.run(m.core.store.fence(s, None, p, "alice", m.core.stamp()))
    with pytest.raises(SessionMerged):  # writes already go to the primary...
        m.append_items(s, [{"late": True}])
    assert m.get_items(s) == [{"from": "s"}]  # ...while its content still reads
    m.merge_sessions(p, s)
    assert m.get_items(p) == [{"from": "s"}]
    assert m.merge_sessions(p, s).total_interactions == 1  # and once more changes nothing
