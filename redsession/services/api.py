"""The REST API (FastAPI): the session operations over HTTP, and the dashboard under /ui.

A thin adapter over AsyncSessionManager, like the CLI and the MCP tools: each endpoint
parses, calls one manager method and returns a model of redsession.model.models, whose
schemas are the OpenAPI spec's. Identities are the MCP server's (services/auth.py): the
admin token acts for every user, a user's token only for that user's sessions, and another
user's session answers exactly as a missing one does. Every RedsessionError becomes a
status and a one-line JSON body (``web.ERRORS``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from redsession import __version__
from redsession.async_manager import AsyncSessionManager
from redsession.config import Settings
from redsession.errors import (
    RedsessionError,
    SessionNotFound,
    StorageError,
)
from redsession.model.models import (
    Entry,
    Interaction,
    Item,
    Session,
    SessionExport,
    SessionPage,
    StoreStats,
    WorkerStatus,
    utcnow,
)
from redsession.services import dashboard
from redsession.services.auth import LOOPBACK, Caller, TokenTable
from redsession.services.metrics import CONTENT_TYPE
from redsession.services.web import HTTP_CODES, Api, api_of, classify, error_response

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
MAX_PAGE = 1000  # entries or sessions per response: bounds one reply

class ErrorBody(BaseModel):
    """Every error response: a code and one line of text."""

    error: str
    message: str


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSession(_In):
    user_id: str
    context: JsonObject | None = None
    session_id: str | None = Field(default=None, description="Given id (else generated).")


class Resume(_In):
    user_id: str


class LogInteraction(_In):
    user_message: str
    assistant_response: str | None = None
    metadata: JsonObject | None = None
    topics: list[str] | None = None


class AppendItems(_In):
    items: list[JsonObject]
    topics: list[str] | None = None


class ContextPatch(_In):
    patch: JsonObject = Field(description="Deep-merged into the context; null deletes a key.")


class Merge(_In):
    secondary_id: str


class ImportDocument(_In):
    document: JsonObject = Field(description="A document from the export endpoint.")
    overwrite: bool = False


class SessionView(BaseModel):
    """A session with one page of its history (``history``, oldest first)."""

    session: Session
    history: list[Entry]
    before: int | None = Field(description="Pass as ``before`` for the page older than this.")


class Preferences(BaseModel):
    user_id: str
    preferences: JsonObject


class Imported(BaseModel):
    session_id: str


class Cleanup(BaseModel):
    removed: int


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    redis: Check
    worker: Check


class Unauthorized(Exception):
    pass


def _caller(request: Request) -> Caller:
    caller = api_of(request).caller(request)
    if caller is None:
        raise Unauthorized
    return caller


def _manager(request: Request) -> AsyncSessionManager:
    return api_of(request).manager


Who = Annotated[Caller, Depends(_caller)]
Manager = Annotated[AsyncSessionManager, Depends(_manager)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 422, 503)
}


def build_app(manager: AsyncSessionManager, settings: Settings) -> FastAPI:
    """The API and the dashboard, bound to ``manager``; closes it when the app stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await manager.close()

    app = FastAPI(
        title="redsession", version=__version__, lifespan=lifespan, responses=ERROR_RESPONSES,
        description="Conversation sessions in Redis: the REST API of redsession.",
    )  # fmt: skip
    app.state.api = Api(manager, settings)
    _handlers(app)
    _routes(app)
    dashboard.mount(app)
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RedsessionError)
    async def redsession_error(request: Request, e: RedsessionError) -> JSONResponse:
        status, code = classify(e)
        if status == 500:
            log.error("%s %s: %s", request.method, request.url.path, e)
        return error_response(status, code, str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_input", f"invalid request: {_problems(e)}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(e.status_code, "error")
        return error_response(e.status_code, code, str(e.detail))

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, e: Unauthorized) -> JSONResponse:
        return error_response(
            401, "unauthorized", "a valid bearer token is required",
            **{"WWW-Authenticate": 'Bearer realm="redsession"'},
        )  # fmt: skip


def _problems(e: RequestValidationError) -> str:
    parts = []
    for err in list(e.errors())[:10]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request does not match the API's schema"


def _routes(app: FastAPI) -> None:
    v1 = "/v1"

    @app.post(f"{v1}/sessions", status_code=201, tags=["sessions"])
    async def create_session(body: CreateSession, who: Who, m: Manager) -> Session:
        """Create a session for a user (the id is generated unless given)."""
        who.may_act_for(body.user_id)
        return await m.create_session(
            body.user_id, context=body.context, session_id=body.session_id
        )

    @app.get(f"{v1}/sessions", tags=["sessions"])
    async def list_sessions(
        who: Who, m: Manager, user_id: str | None = None, limit: Limit = 20,
        cursor: str | None = None,
    ) -> SessionPage:  # fmt: skip
        """Live sessions, newest activity first (one user's with ``user_id``), a page at a time."""
        if who.user_id is not None:
            user_id = who.may_act_for(user_id or who.user_id)
        return await m.list_active_sessions(user_id, limit=limit, cursor=cursor)

    @app.get(f"{v1}/users/{{user_id}}/sessions", tags=["sessions"])
    async def list_user_sessions(
        user_id: str, who: Who, m: Manager, limit: Limit = 20, cursor: str | None = None
    ) -> SessionPage:
        """One user's live sessions, newest activity first."""
        who.may_act_for(user_id)
        return await m.list_active_sessions(user_id, limit=limit, cursor=cursor)

    @app.get(f"{v1}/sessions/{{session_id}}", tags=["sessions"])
    async def get_session(
        session_id: str, who: Who, m: Manager, limit: Limit = 20,
        before: Annotated[int | None, Query(ge=0)] = None,
    ) -> SessionView:  # fmt: skip
        """A session and one page of its history: the newest ``limit`` entries before
        position ``before`` (all positions when omitted)."""
        s = await m.get_session(session_id, user_id=who.user_id)
        entries = await m.get_history(
            s.session_id, limit=limit, before=before, user_id=who.user_id
        )
        end = s.total_interactions if before is None else min(before, s.total_interactions)
        start = max(0, end - len(entries))
        return SessionView(session=s, history=entries, before=start or None)

    @app.post(f"{v1}/sessions/{{session_id}}/resume", tags=["sessions"])
    async def resume_session(session_id: str, body: Resume, who: Who, m: Manager) -> Session:
        """Resume a session of this user (counts as activity); a merged id resumes its primary."""
        who.may_act_for(body.user_id)
        return await m.resume_session(session_id, body.user_id)

    @app.post(f"{v1}/sessions/{{session_id}}/interactions", status_code=201, tags=["history"])
    async def log_interaction(
        session_id: str, body: LogInteraction, who: Who, m: Manager
    ) -> Interaction:
        """Record one exchange in a session."""
        return await m.log_interaction(
            session_id, user_message=body.user_message,
            assistant_response=body.assistant_response, metadata=body.metadata,
            topics=body.topics, user_id=who.user_id,
        )  # fmt: skip

    @app.post(f"{v1}/sessions/{{session_id}}/items", status_code=201, tags=["history"])
    async def append_items(
        session_id: str, body: AppendItems, who: Who, m: Manager
    ) -> list[Item]:
        """Append framework items (opaque JSON objects) to a session's history."""
        return await m.append_items(
            session_id, body.items, topics=body.topics, user_id=who.user_id
        )

    @app.patch(f"{v1}/sessions/{{session_id}}/context", tags=["sessions"])
    async def update_context(
        session_id: str, body: ContextPatch, who: Who, m: Manager
    ) -> Session:
        """Deep-merge a patch into the session's context."""
        return await m.update_context(session_id, body.patch, user_id=who.user_id)

    @app.delete(f"{v1}/sessions/{{session_id}}", status_code=204, tags=["sessions"])
    async def delete_session(session_id: str, who: Who, m: Manager) -> Response:
        """Delete a session and its history (a tombstone keeps late writes out)."""
        await m.delete_session(session_id, user_id=who.user_id)
        return Response(status_code=204)

    @app.post(f"{v1}/sessions/{{session_id}}/merge", tags=["sessions"])
    async def merge_sessions(session_id: str, body: Merge, who: Who, m: Manager) -> Session:
        """Merge ``secondary_id`` into this session (both of one user)."""
        return await m.merge_sessions(session_id, body.secondary_id, user_id=who.user_id)

    @app.get(f"{v1}/sessions/{{session_id}}/export", tags=["transfer"])
    async def export_session(session_id: str, who: Who, m: Manager) -> SessionExport:
        """The session and its whole history as a versioned document (import takes it back)."""
        return await m.export_session(session_id, user_id=who.user_id)

    @app.get(
        f"{v1}/export", tags=["transfer"], response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}},
                         "description": "One export document per line."}},
    )  # fmt: skip
    async def export_all(who: Who, m: Manager) -> StreamingResponse:
        """Every session (a user token: that user's) as NDJSON, one export per line."""
        return StreamingResponse(_ndjson(m, who.user_id), media_type="application/x-ndjson")

    @app.post(f"{v1}/import", status_code=201, tags=["transfer"])
    async def import_session(body: ImportDocument, who: Who, m: Manager) -> Imported:
        """Load an exported session, keeping its id and expiry (admin only)."""
        who.admin_only("import")  # it can name any user and overwrite
        sid = await m.import_session_data(body.document, overwrite=body.overwrite)
        return Imported(session_id=sid)

    @app.get(f"{v1}/users/{{user_id}}/preferences", tags=["users"])
    async def get_preferences(user_id: str, who: Who, m: Manager) -> Preferences:
        who.may_act_for(user_id)
        return Preferences(user_id=user_id, preferences=await m.get_preferences(user_id))

    @app.patch(f"{v1}/users/{{user_id}}/preferences", tags=["users"])
    async def set_preferences(
        user_id: str, body: JsonObject, who: Who, m: Manager
    ) -> Preferences:
        """Merge into the user's preferences (shared by all their sessions); null removes."""
        who.may_act_for(user_id)
        return Preferences(user_id=user_id, preferences=await m.set_preferences(user_id, body))

    @app.post(f"{v1}/cleanup", tags=["maintenance"])
    async def cleanup(who: Who, m: Manager) -> Cleanup:
        """Remove expired sessions from the indexes (admin only)."""
        who.admin_only("cleanup")
        return Cleanup(removed=await m.cleanup_expired_sessions())

    @app.get(f"{v1}/stats", tags=["maintenance"])
    async def stats(who: Who, m: Manager) -> StoreStats:
        """Store-wide counts (admin only; reads every session's count: O(sessions))."""
        who.admin_only("stats")
        return await m.stats()

    @app.get(f"{v1}/worker", tags=["maintenance"])
    async def worker(who: Who, m: Manager) -> WorkerStatus:
        """The worker leader and the last run of each job (admin only)."""
        who.admin_only("worker status")
        return await m.worker_status()

    @app.get("/healthz", tags=["health"])
    async def liveness() -> Check:
        """The process serves requests (no Redis call)."""
        return Check(ok=True, detail="serving")

    @app.get("/readyz", tags=["health"], responses={s: {"model": Readiness} for s in (200, 503)})
    async def readiness(m: Manager) -> Response:
        """Redis reachable and the worker leader's heartbeat fresh, each reported."""
        r = await _readiness(m, settings_of(app))
        return JSONResponse(r.model_dump(), 200 if r.ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(who: Who, request: Request) -> Response:
        who.admin_only("metrics")
        api = api_of(request)
        return Response(await api.metrics.scrape_async(api.manager), media_type=CONTENT_TYPE)


def settings_of(app: FastAPI) -> Settings:
    api: Api = app.state.api
    return api.settings


async def _readiness(m: AsyncSessionManager, settings: Settings) -> Readiness:
    try:
        await m.ping()
        worker = await m.worker_status()
    except StorageError as e:
        down = Check(ok=False, detail=str(e))
        return Readiness(ready=False, redis=down, worker=Check(ok=False, detail="unknown"))
    redis_ok = Check(ok=True, detail="reachable")
    if worker.heartbeat_at is None:
        beat = Check(ok=False, detail="no live worker leader heartbeat")
    else:
        # The heartbeat key expires with the lease, so a present one is at most a lease old.
        age = (utcnow() - worker.heartbeat_at).total_seconds()
        fresh = age <= settings.worker_lease.total_seconds()
        beat = Check(ok=fresh, detail=f"leader heartbeat {age:.1f} s old")
    return Readiness(ready=beat.ok, redis=redis_ok, worker=beat)


async def _ndjson(m: AsyncSessionManager, user_id: str | None) -> AsyncIterator[bytes]:
    async for sid in m.iter_session_ids(user_id):
        try:
            doc = await m.export_session(sid, user_id=user_id, follow_merged=False)
        except SessionNotFound:
            continue  # deleted, merged or expired since the walk met it
        yield orjson.dumps(doc.model_dump(mode="json")) + b"\n"


def app_from_settings(settings: Settings) -> FastAPI:
    return build_app(AsyncSessionManager.from_url(settings.redis_url, **dict(settings)), settings)


def run_api(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve the API and the dashboard until SIGTERM or Ctrl-C."""
    import uvicorn

    tokens = TokenTable.from_settings(settings)  # a bad token setting fails before serving
    host = settings.api_host if host is None else host
    port = settings.api_port if port is None else port
    if tokens is None and host not in LOOPBACK:
        log.warning("API on %s without REDSESSION_MCP_TOKEN: anyone can connect", host)
    log.info("API on http://%s:%d (dashboard at /ui)", host, port)
    config = uvicorn.Config(
        app_from_settings(settings), host=host, port=port, log_config=None, lifespan="on"
    )
    uvicorn.Server(config).run()
