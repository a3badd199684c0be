"""The first schema: sessions, entries, topics, preferences and the mirror's cursor.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def _session_key() -> sa.Column[str]:
    return sa.Column(
        "session_id", sa.String(128), sa.ForeignKey("sessions.session_id"), primary_key=True
    )


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("last_activity", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("total_interactions", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("scope", sa.Text),
        sa.Column("merged_from", sa.Text, nullable=False),
        sa.Column("expired", sa.Boolean, nullable=False),
        sa.Column("mirrored_at", _TIME, nullable=False),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_index("ix_sessions_created_at", "sessions", ["created_at"])
    op.create_table(
        "entries",
        _session_key(),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("entry_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("timestamp", _TIME, nullable=False),
        sa.Column("user_message", sa.Text),
        sa.Column("assistant_response", sa.Text),
        sa.Column("metadata", sa.Text),
        sa.Column("topics", sa.Text),
        sa.Column("item", sa.Text),
    )
    op.create_table(
        "topics",
        _session_key(),
        sa.Column("topic", sa.String, primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index("ix_topics_topic", "topics", ["topic"])
    op.create_table(
        "preferences",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "mirror_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("mirror_state", "preferences", "topics", "entries", "sessions"):
        op.drop_table(table)
