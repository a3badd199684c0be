"""Generated sessions for the benchmarks, and fast pipelined loading of them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from redsession import SessionManager
from redsession.core import transfer
from redsession.storage.commands import Eval

# A typical exchange with a chat assistant: a short question, a paragraph of answer.
USER_MESSAGE = "How do I move my subscription to the annual plan without losing my credits? " * 2
ASSISTANT_RESPONSE = (
    "You can switch from Settings > Billing > Plan. Your remaining credits carry over, "
    "and the annual price is prorated against what you already paid this month. "
) * 3
METADATA: dict[str, Any] = {"model": "assistant-large", "tokens": 321, "latency_ms": 812}
TOPICS = ["billing"]
DAY = timedelta(days=1)


def interaction(i: int, at: datetime) -> dict[str, Any]:
    return {
        "id": f"i{i:07d}{secrets.token_hex(3)}",
        "timestamp": at.isoformat(),
        "user_message": USER_MESSAGE,
        "assistant_response": ASSISTANT_RESPONSE,
        "metadata": METADATA,
        "topics": TOPICS,
    }


def export_doc(sid: str, uid: str, n: int, *, expires_in: timedelta = 7 * DAY) -> dict[str, Any]:
    """An export document of a session with ``n`` interactions, one second apart."""
    now = datetime.now(timezone.utc)
    start = now - timedelta(seconds=n + 1)
    items = [interaction(i, start + timedelta(seconds=i)) for i in range(n)]
    return {
        "format": "redsession.session",
        "version": 1,
        "session": {
            "session_id": sid,
            "user_id": uid,
            "created_at": start.isoformat(),
            "last_activity": (start + timedelta(seconds=max(n - 1, 0))).isoformat(),
            "total_interactions": n,
            "context": {"locale": "en-GB", "plan": "monthly", "tier": 2},
            "topics": TOPICS if n else [],
            "version": 0,
            "merged_from": [],
        },
        "interactions": items,
        "expires_at": (now + expires_in).isoformat(),
    }


def load(
    manager: SessionManager, client: redis.Redis, docs: Iterable[dict[str, Any]],
    batch: int = 500,
) -> int:  # fmt: skip
    """Import documents through redsession's own import path, pipelined ``batch`` at a time.

    Each import is validated and encoded by the core exactly as import_session_data does;
    only the FCALL calls are sent together instead of one round trip each.
    """
    count = 0
    pending: list[tuple[Any, Eval]] = []
    for doc in docs:
        op = transfer.import_session_data(manager.core, doc, True)
        cmd = next(op)
        assert isinstance(cmd, Eval), "a single server imports in one script"
        pending.append((op, cmd))
        if len(pending) >= batch:
            count += _flush(client, pending)
    return count + _flush(client, pending)


def _flush(client: redis.Redis, pending: list[tuple[Any, Eval]]) -> int:
    if not pending:
        return 0
    for script in {cmd.script for _, cmd in pending}:
        client.function_load(script.library, replace=True)
    pipe = client.pipeline(transaction=False)
    for _, cmd in pending:
        pipe.execute_command(*cmd.fcall())
    replies = pipe.execute()
    for (op, _), reply in zip(pending, replies):
        try:
            op.send(reply)
        except StopIteration:
            continue
        raise RuntimeError("import needed a second round trip")
    n = len(pending)
    pending.clear()
    return n


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


def pick(seq: Sequence[str], i: int) -> str:
    return seq[i % len(seq)]
