"""redsession, a Redis-backed, distributed session store for conversational assistants."""

from redsession.async_manager import AsyncSessionManager
from redsession.config import Settings
from redsession.errors import (
    ConcurrentModification,
    ConfigError,
    CorruptData,
    InvalidInput,
    InvalidSessionId,
    PayloadTooLarge,
    PermissionDenied,
    RedsessionError,
    RevisionConflict,
    SessionExists,
    SessionMerged,
    SessionNotFound,
    StorageError,
    StorageUnavailable,
)
from redsession.manager import SessionManager
from redsession.model.models import (
    Event,
    EventPage,
    Interaction,
    Session,
    SessionExport,
    SessionPage,
    SessionRecord,
    SessionSummary,
    StoreStats,
)

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"

__all__ = [
    "AsyncSessionManager",
    "ConcurrentModification",
    "ConfigError",
    "CorruptData",
    "Event",
    "EventPage",
    "Interaction",
    "InvalidInput",
    "InvalidSessionId",
    "PayloadTooLarge",
    "PermissionDenied",
    "RedsessionError",
    "RevisionConflict",
    "Session",
    "SessionExists",
    "SessionExport",
    "SessionManager",
    "SessionMerged",
    "SessionNotFound",
    "SessionPage",
    "SessionRecord",
    "SessionSummary",
    "Settings",
    "StorageError",
    "StorageUnavailable",
    "StoreStats",
    "__version__",
]
