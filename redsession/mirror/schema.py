"""The tables of the SQL mirror (SQLAlchemy Core), as of the newest migration.

JSON values are text columns: with encryption on (and Settings.sql_plaintext off) they hold
the Fernet token instead, as Redis does, so no column type may assume JSON. Times are UTC.
Ids, owners, times, counts, kinds and session topics stay in the clear, as in Redis.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row per live (or, with Settings.sql_keep_expired, expired) session.
sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(128), primary_key=True),
    Column("user_id", String(256), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("last_activity", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("total_interactions", Integer, nullable=False),  # entries: interactions and items
    Column("version", Integer, nullable=False),
    Column("context", Text, nullable=False),  # JSON object, or a token
    Column("state", Text, nullable=False),  # JSON object, or a token
    Column("scope", Text),  # JSON object, or NULL
    Column("merged_from", Text, nullable=False),  # JSON array of session ids
    Column("expired", Boolean, nullable=False),  # true: gone from Redis, kept here
    Column("mirrored_at", DateTime(timezone=True), nullable=False),
)

# The history, one row per entry, at its place (0 = oldest). Text columns are NULL when
# Settings.sql_text is off, and NULL where the entry's kind has no such field.
entries = Table(
    "entries",
    metadata,
    Column("session_id", String(128), ForeignKey("sessions.session_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("entry_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # 'interaction' or 'item'
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("user_message", Text),
    Column("assistant_response", Text),
    Column("metadata", Text),  # JSON object, or a token
    Column("topics", Text),  # JSON array, or a token (sealed in Redis with the record)
    Column("item", Text),  # a framework item's JSON, or a token
)

# A session's topics, first seen first.
topics = Table(
    "topics",
    metadata,
    Column("session_id", String(128), ForeignKey("sessions.session_id"), primary_key=True),
    Column("topic", String, primary_key=True),
    Column("position", Integer, nullable=False),
    Index("ix_topics_topic", "topic"),
)

# A user's preferences, one row per key.
preferences = Table(
    "preferences",
    metadata,
    Column("user_id", String(256), primary_key=True),
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),  # JSON, or a token
)

# The mirror's own bookkeeping: 'cursor', the last event mirrored. Kept in the database it
# describes (a new database starts from a full copy), written after each batch.
mirror_state = Table(
    "mirror_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
