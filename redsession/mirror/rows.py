"""Sessions as rows of the mirror's tables (schema.py), and back: the SQL half of a mirror run.

Each session is written in one transaction (its old rows out, its new rows in), so a reader,
or a crash, never sees half of a session. Fields Redis keeps encrypted are sealed here too
(the same Fernet keys) unless Settings.sql_plaintext; with Settings.sql_text off no message
text is written at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from redsession.config import Settings
from redsession.errors import InvalidInput
from redsession.mirror import schema
from redsession.mirror.database import Database
from redsession.model.crypto import Cipher
from redsession.model.models import Interaction, SessionExport, utcnow

CURSOR = "cursor"


class Rows:
    """Writes and reads the mirror's rows in one database, sealing as Settings say."""

    def __init__(self, db: Database, cipher: Cipher, settings: Settings) -> None:
        if not isinstance(db, Database):
            raise InvalidInput(f"the SQL mirror needs a Database, not {type(db).__name__}")
        self.db = db
        self.cipher = cipher
        self.seal = cipher.enabled and not settings.sql_plaintext
        self.text = settings.sql_text

    # -- values ---------------------------------------------------------------------------

    def _sealed(self, data: bytes) -> str:
        return (self.cipher.seal(data) if self.seal else data).decode()

    def _json(self, value: Any) -> str:
        return self._sealed(orjson.dumps(value))

    def _open(self, value: str | None, what: str) -> Any:
        return None if value is None else orjson.loads(self.cipher.open(value, what))

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, doc: SessionExport) -> None:
        """The session's rows replace whatever the mirror held for it, in one transaction."""
        s = doc.session
        sid = s.session_id
        session = {
            "session_id": sid, "user_id": s.user_id, "created_at": s.created_at,
            "last_activity": s.last_activity, "expires_at": doc.expires_at,
            "total_interactions": s.total_interactions, "version": s.version,
            "context": self._json(s.context), "state": self._json(s.state),
            "scope": None if s.scope is None else orjson.dumps(s.scope).decode(),
            "merged_from": orjson.dumps(s.merged_from).decode(), "expired": False,
            "mirrored_at": utcnow(),
        }  # fmt: skip
        entries = [self._entry(sid, i, e) for i, e in enumerate(doc.history)]
        topics = [{"session_id": sid, "topic": t, "position": i} for i, t in enumerate(s.topics)]
        with self.db.transaction() as conn:
            _delete_session(conn, sid)
            conn.execute(sa.insert(schema.sessions), [session])
            if entries:
                conn.execute(sa.insert(schema.entries), entries)
            if topics:
                conn.execute(sa.insert(schema.topics), topics)

    def _entry(self, sid: str, position: int, e: Any) -> dict[str, Any]:
        row = {
            "session_id": sid, "position": position, "entry_id": e.id, "kind": e.kind,
            "timestamp": e.timestamp, "user_message": None, "assistant_response": None,
            "metadata": None, "topics": None, "item": None,
        }  # fmt: skip
        if isinstance(e, Interaction):
            row["topics"] = self._json(e.topics)
            if self.text:
                row["user_message"] = self._sealed(e.user_message.encode())
                if e.assistant_response is not None:
                    row["assistant_response"] = self._sealed(e.assistant_response.encode())
                row["metadata"] = self._json(e.metadata)
        elif self.text:
            row["item"] = self._json(e.item)
        return row

    def remove(self, sids: Iterable[str]) -> int:
        """Take sessions out of the mirror (deleted, merged away, or expired); how many were in."""
        n = 0
        for sid in sids:
            with self.db.transaction() as conn:
                n += _delete_session(conn, sid)
        return n

    def mark_expired(self, sids: Iterable[str]) -> int:
        """Keep sessions Redis has expired, marked so (Settings.sql_keep_expired)."""
        n = 0
        for sid in sids:
            with self.db.transaction() as conn:
                stmt = sa.update(schema.sessions).where(
                    schema.sessions.c.session_id == sid, schema.sessions.c.expired.is_(False)
                )
                n += conn.execute(stmt.values(expired=True)).rowcount
        return n

    def preferences(self, uid: str, stored: Mapping[str, str]) -> None:
        """The user's preferences as Redis holds them (each value JSON, sealed if encrypted)."""
        # Opened and sealed again: a value written before encryption was on is sealed too.
        rows = [
            {"user_id": uid, "key": k, "value": self._sealed(self.cipher.open(v, "a preference"))}
            for k, v in stored.items()
        ]
        with self.db.transaction() as conn:
            conn.execute(sa.delete(schema.preferences).where(schema.preferences.c.user_id == uid))
            if rows:
                conn.execute(sa.insert(schema.preferences), rows)

    # -- the cursor and listings -------------------------------------------------------------

    def cursor(self) -> str | None:
        """The id of the last event mirrored (None: the database holds no copy yet)."""
        with self.db.connect() as conn:
            t = schema.mirror_state
            return conn.execute(sa.select(t.c.value).where(t.c.name == CURSOR)).scalar()

    def set_cursor(self, event_id: str) -> None:
        t = schema.mirror_state
        with self.db.transaction() as conn:
            conn.execute(sa.delete(t).where(t.c.name == CURSOR))
            conn.execute(sa.insert(t), [{"name": CURSOR, "value": event_id}])

    def session_ids(self, *, expired: bool = False) -> set[str]:
        """The ids of the sessions the mirror holds (live ones, or those marked expired)."""
        t = schema.sessions
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(t.c.session_id).where(t.c.expired.is_(expired)))
            return {r[0] for r in rows}

    # -- reads ----------------------------------------------------------------------------

    def export(self, sid: str) -> SessionExport | None:
        """The mirrored session as an export document (opened with the cipher), or None."""
        with self.db.connect() as conn:
            s = conn.execute(
                sa.select(schema.sessions).where(schema.sessions.c.session_id == sid)
            ).mappings().first()
            if s is None:
                return None
            entries = conn.execute(
                sa.select(schema.entries)
                .where(schema.entries.c.session_id == sid)
                .order_by(schema.entries.c.position)
            ).mappings().all()
            topics = conn.execute(
                sa.select(schema.topics.c.topic)
                .where(schema.topics.c.session_id == sid)
                .order_by(schema.topics.c.position)
            ).scalars().all()
        history = [self._entry_doc(e) for e in entries]
        session = {
            "session_id": sid, "user_id": s["user_id"], "created_at": _utc(s["created_at"]),
            "last_activity": _utc(s["last_activity"]),
            "total_interactions": s["total_interactions"], "version": s["version"],
            "context": self._open(s["context"], "a context"),
            "state": self._open(s["state"], "a state"),
            "scope": None if s["scope"] is None else orjson.loads(s["scope"]),
            "merged_from": orjson.loads(s["merged_from"]), "topics": list(topics),
        }  # fmt: skip
        return SessionExport.model_validate(
            {"session": session, "history": history, "expires_at": _utc(s["expires_at"])}
        )

    def _entry_doc(self, e: sa.RowMapping) -> dict[str, Any]:
        doc = {"id": e["entry_id"], "kind": e["kind"], "timestamp": _utc(e["timestamp"])}
        if e["kind"] == "item":
            return {**doc, "item": self._open(e["item"], "an item")}
        message = e["user_message"]
        answer = e["assistant_response"]
        return {
            **doc,
            "user_message": None if message is None else self.cipher.open(message).decode(),
            "assistant_response": None if answer is None else self.cipher.open(answer).decode(),
            "metadata": self._open(e["metadata"], "metadata") or {},
            "topics": self._open(e["topics"], "topics") or [],
        }


# Built once: a statement's expression costs more to build than SQLite takes to run it.
_SID: sa.BindParameter[str] = sa.bindparam("sid")
_DELETE_CHILDREN = (
    sa.delete(schema.entries).where(schema.entries.c.session_id == _SID),
    sa.delete(schema.topics).where(schema.topics.c.session_id == _SID),
)
_DELETE_SESSION = sa.delete(schema.sessions).where(schema.sessions.c.session_id == _SID)


def _delete_session(conn: Connection, sid: str) -> int:
    """Delete a session's rows (children first: no cascade to rely on); 1 if it was there."""
    for stmt in _DELETE_CHILDREN:
        conn.execute(stmt, {"sid": sid})
    return conn.execute(_DELETE_SESSION, {"sid": sid}).rowcount


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive times (they were written in UTC); PostgreSQL aware ones."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
