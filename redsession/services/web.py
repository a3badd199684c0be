"""What the REST API and the dashboard share: the context every request reads (the manager,
the tokens, the metrics), the caller a request acts for, and the status of each error."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from redsession.async_manager import AsyncSessionManager
from redsession.config import Settings
from redsession.errors import (
    ConcurrentModification,
    ConfigError,
    CorruptData,
    DecryptionError,
    InvalidInput,
    PayloadTooLarge,
    RedsessionError,
    SessionExists,
    SessionMerged,
    SessionNotFound,
    SqlError,
    StorageError,
)
from redsession.services.auth import ADMIN, Caller, TokenTable
from redsession.services.metrics import Metrics

# The status of each error, most specific first; the body names the status, never the
# class, so a PermissionDenied reads exactly as a SessionNotFound.
ERRORS: tuple[tuple[type[RedsessionError], int, str], ...] = (
    (PayloadTooLarge, 413, "too_large"),
    (InvalidInput, 400, "invalid_input"),
    (SessionMerged, 409, "merged"),
    (SessionNotFound, 404, "not_found"),  # PermissionDenied too
    (SessionExists, 409, "exists"),
    (ConcurrentModification, 409, "conflict"),
    (StorageError, 503, "unavailable"),  # Redis down, or refusing writes (OOM, replica)
    (SqlError, 503, "unavailable"),  # the SQL mirror's database
    (CorruptData, 500, "corrupt_data"),
    (DecryptionError, 500, "decryption"),
    (ConfigError, 500, "config"),
    (RedsessionError, 500, "error"),
)
HTTP_CODES = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
         422: "invalid_input"}  # fmt: skip


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    one_line = " ".join(message.split())
    return JSONResponse({"error": code, "message": one_line}, status, headers=headers or None)


def classify(e: RedsessionError) -> tuple[int, str]:
    for kind, status, code in ERRORS:
        if isinstance(e, kind):
            return status, code
    raise AssertionError("RedsessionError is the last row")  # pragma: no cover


class Api:
    """What every endpoint needs: the manager, the tokens, the metrics."""

    def __init__(self, manager: AsyncSessionManager, settings: Settings) -> None:
        self.manager = manager
        self.settings = settings
        self.tokens = TokenTable.from_settings(settings)
        self.metrics = Metrics()
        self.metrics.watch(manager)

    def identity(self, request: Request) -> str | None:
        """The caller's identity (ADMIN or a user id); None when it presents no valid token.
        With no token configured (loopback), everyone is admin."""
        if self.tokens is None:
            return ADMIN
        header = request.headers.get("authorization")
        if header is None and (cookie := request.cookies.get(TOKEN_COOKIE)):
            header = f"Bearer {cookie}"
        return self.tokens.identity(header)

    def caller(self, request: Request) -> Caller | None:
        """Whom the request acts for; None when it presents no valid token."""
        who = self.identity(request)
        return None if who is None else Caller(None if who == ADMIN else who)


TOKEN_COOKIE = "redsession_token"


def api_of(request: Request) -> Api:
    api: Api = request.app.state.api
    return api
