"""Every Redis key name redsession uses. No other module spells the prefix or a key pattern.

Session keys carry the session id as a Redis Cluster hash tag (``{SID}``) so that one Lua
script can write all of a session's keys atomically; user keys carry the user id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redsession.errors import ConfigError

_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (Settings.key_prefix)."""

    prefix: str = "redsession"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ConfigError(
                f"key prefix {self.prefix!r} must match {_PREFIX.pattern} (no braces or spaces)"
            )

    # One session: a hash, its interaction log and, after delete/merge, a tombstone.
    def session(self, sid: str) -> str:
        return f"{self.prefix}:s:{{{sid}}}"

    def log(self, sid: str) -> str:
        return f"{self.prefix}:s:{{{sid}}}:log"

    def tomb(self, sid: str) -> str:
        return f"{self.prefix}:s:{{{sid}}}:tomb"

    def session_keys(self, sid: str) -> tuple[str, str, str]:
        return self.session(sid), self.log(sid), self.tomb(sid)

    # One user: the index of their sessions and their preferences.
    def user_sessions(self, uid: str) -> str:
        return f"{self.prefix}:u:{{{uid}}}:sessions"

    def user_prefs(self, uid: str) -> str:
        return f"{self.prefix}:u:{{{uid}}}:prefs"

    def user_key_parts(self) -> tuple[str, str, str]:
        """(head, sessions tail, prefs tail): head + uid + tail is a user key.

        Lua scripts on a single server derive a session owner's keys from these, because
        the owner is only known inside the script.
        """
        head = f"{self.prefix}:u:{{"
        return head, "}:sessions", "}:prefs"

    # Global indexes.
    @property
    def sessions(self) -> str:
        """ZSET session id -> last activity (µs)."""
        return f"{self.prefix}:sessions"

    @property
    def users(self) -> str:
        """ZSET user id -> last activity (µs)."""
        return f"{self.prefix}:users"

    @property
    def expiry(self) -> str:
        """ZSET "sid:uid" -> expires_at (µs); cleanup reads only what has expired."""
        return f"{self.prefix}:expiry"

    @property
    def dirty(self) -> str:
        """ZSET session id -> time of its last change (µs), for the incremental dump."""
        return f"{self.prefix}:dirty"

    def index_keys(self) -> tuple[str, str, str, str]:
        return self.sessions, self.users, self.expiry, self.dirty

    # The worker.
    @property
    def worker_leader(self) -> str:
        return f"{self.prefix}:worker:leader"

    @property
    def worker_heartbeat(self) -> str:
        return f"{self.prefix}:worker:hb"


def expiry_member(sid: str, uid: str) -> str:
    """The expiry index member: session ids have no ':', so the first ':' splits it."""
    return f"{sid}:{uid}"


def split_expiry_member(member: str) -> tuple[str, str]:
    sid, _, uid = member.partition(":")
    return sid, uid
