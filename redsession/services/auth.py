"""Who is calling the MCP server over HTTP: bearer tokens, and the identity each one grants.

REDSESSION_MCP_TOKEN is the admin token (every user's sessions). REDSESSION_MCP_TOKENS_FILE
names a JSON object mapping more tokens to identities: a user id, whose holder sees and
changes only that user's sessions, or "*" for another admin token. Over stdio there is no
token: the server is a child of the client that started it and acts for every user.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

import orjson
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from redsession.config import Settings
from redsession.errors import ConfigError, InvalidInput, PermissionDenied
from redsession.model import validation as check

ADMIN = "*"
# Without a token, the HTTP services are meant for this machine only.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class TokenTable:
    """token -> identity (a user id, or ADMIN)."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = [(t.encode(), who) for t, who in tokens.items()]

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable | None:
        """The configured tokens, or None when HTTP is open (no token at all)."""
        table: dict[str, str] = {}
        if settings.mcp_token is not None:
            token = settings.mcp_token.get_secret_value()
            if not token:
                raise ConfigError("REDSESSION_MCP_TOKEN is empty: set a token or unset it")
            table[token] = ADMIN
        if settings.mcp_tokens_file is not None:
            table.update(_read_tokens(settings.mcp_tokens_file))
        return cls(table) if table else None

    def identity(self, authorization: bytes | str | None) -> str | None:
        """The identity an Authorization header value grants, or None if it grants none."""
        raw = authorization.encode() if isinstance(authorization, str) else authorization or b""
        scheme, _, given = raw.partition(b" ")
        # The scheme is case-insensitive (RFC 9110); compare_digest leaves no timing oracle,
        # and every token is compared so the time does not say which one matched.
        found = None
        if scheme.lower() == b"bearer":
            for token, who in self._tokens:
                if hmac.compare_digest(given.strip(), token):
                    found = who
        return found


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the MCP tokens file {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of token -> user id (or \"*\")")
    for token, who in data.items():
        if len(token) < 16:
            raise ConfigError(f"{path}: tokens must be at least 16 characters")
        if who != ADMIN:
            try:
                check.user_id(who)
            except InvalidInput as e:
                raise ConfigError(f"{path}: {e}") from e
    return data


class BearerAuth:
    """ASGI middleware that refuses requests whose bearer token the table does not know."""

    def __init__(self, app: ASGIApp, tokens: TokenTable) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.tokens.identity(_auth(scope)) is None:
            if scope["type"] == "http":
                refusal = JSONResponse(
                    {"error": "unauthorized", "error_description": "a bearer token is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="redsession"'},
                )
                await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _auth(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None


class Caller:
    """The identity behind one tool call: None acts for every user (admin, stdio, open HTTP)."""

    def __init__(self, user_id: str | None) -> None:
        self.user_id = user_id

    def may_act_for(self, user_id: str) -> str | None:
        """The user id to check ownership against; refuses another user's id."""
        if self.user_id is not None and user_id != self.user_id:
            raise PermissionDenied(user_id, f"this token is for another user than {user_id!r}")
        return self.user_id

    def admin_only(self, what: str) -> None:
        if self.user_id is not None:
            raise PermissionDenied("*", f"{what} needs an admin token")


def caller(tokens: TokenTable | None, headers: Mapping[str, str] | None) -> Caller:
    if tokens is None or headers is None:  # open HTTP on loopback, or stdio
        return Caller(None)
    who = tokens.identity(headers.get("authorization"))
    if who is None:  # BearerAuth let it through, so this cannot happen; fail closed anyway
        raise PermissionDenied("*", "no valid bearer token")
    return Caller(None if who == ADMIN else who)
