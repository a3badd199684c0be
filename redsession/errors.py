"""The one exception hierarchy of redsession: every error a caller sees is a RedsessionError."""

from __future__ import annotations


class RedsessionError(Exception):
    """Base of every error redsession raises on purpose."""


class ConfigError(RedsessionError):
    """Settings or a connection URL that cannot work."""


class InvalidInput(RedsessionError, ValueError):
    """An argument or document that fails validation; nothing was written."""


class InvalidSessionId(InvalidInput):
    """A session or user id outside the allowed alphabet or length."""


class PayloadTooLarge(InvalidInput):
    """A message, context, metadata or topic list over its configured limit."""


class SessionNotFound(RedsessionError, LookupError):
    """No live session has that id (never created, expired, or deleted)."""

    def __init__(self, session_id: str, message: str | None = None) -> None:
        super().__init__(message or f"session {session_id!r} not found or expired")
        self.session_id = session_id


class SessionMerged(SessionNotFound):
    """The session was merged into another; reads follow it, writes are refused."""

    def __init__(self, session_id: str, primary_id: str) -> None:
        super().__init__(
            session_id, f"session {session_id!r} was merged into {primary_id!r}; use that id"
        )
        self.primary_id = primary_id


class SessionExists(RedsessionError):
    """A create or import would overwrite a session (or a deleted session's tombstone)."""


class PermissionDenied(SessionNotFound):
    """The session belongs to another user.

    Its message is the one a missing session gets, so that a caller cannot tell whether
    someone else's session id exists; only code that must (the operator CLI) tells them apart.
    """


class ConcurrentModification(RedsessionError):
    """An optimistic update kept losing to other writers and gave up."""


class RevisionConflict(ConcurrentModification):
    """A write checked against a revision found another one: the session changed (or was
    deleted, or already exists) since the caller read it. Read it again and retry."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} changed since it was read (revision)")
        self.session_id = session_id


class StorageError(RedsessionError):
    """Redis refused a command (out of memory under noeviction, a read-only replica, ...)."""


class StorageUnavailable(StorageError, ConnectionError):
    """Redis could not be reached or did not answer in time; retry once it is back."""


class CorruptData(RedsessionError):
    """Data in Redis that redsession did not write (or that was damaged) and cannot decode."""


class DecryptionError(RedsessionError):
    """Stored data is encrypted under a key that is not configured (or is not a token)."""


class SqlError(RedsessionError):
    """The SQL mirror's database is unreachable, or failed a statement."""
