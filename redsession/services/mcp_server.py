"""The MCP server: the session operations as tools for a model, over stdio or streamable HTTP.

A thin adapter over AsyncSessionManager: each tool parses its arguments, calls the manager
and returns a pydantic model as structured JSON. Every RedsessionError, and every argument
that fails the input schema, comes back as a one-line tool error (``isError``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp

from redsession import __version__
from redsession.async_manager import AsyncSessionManager
from redsession.config import Settings
from redsession.errors import ConfigError, RedsessionError
from redsession.model.models import (
    EVENT_KINDS,
    EventPage,
    Interaction,
    Session,
    SessionExport,
    SessionPage,
)
from redsession.model.validation import problems
from redsession.services.auth import LOOPBACK, BearerAuth, Caller, TokenTable, caller

logger = logging.getLogger(__name__)

HTTP_PATH = "/mcp"
MAX_HISTORY = 1000  # bounds one get_session_context reply; a model's context is small anyway

INSTRUCTIONS = """\
Conversation sessions that persist across restarts and are shared by every app instance.
Start a conversation with start_session (keep the returned session_id) or continue one with
resume_session. Record every exchange with log_interaction. Read the state back with
get_session_context (context, user preferences, topics, recent interactions). Keep
conversation facts in the context (update_session_context) and per-user settings that
outlive one conversation in the preferences (set_user_preferences)."""

SessionId = Annotated[
    str, Field(description="A session id as returned by start_session (A-Z a-z 0-9 _ -).")
]
UserId = Annotated[
    str,
    Field(description="The id of the user the session belongs to (A-Z a-z 0-9 _ . @ + = : -)."),
]
JsonObject = dict[str, Any]
EventKind = Literal[EVENT_KINDS]  # type: ignore[valid-type]  # the tuple, as a JSON enum
Ctx = Context[Any, Any]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionContext(_Result):
    """What get_session_context returns: all a model needs to continue a conversation."""

    session_id: str
    user_id: str
    context: JsonObject
    preferences: JsonObject
    topics: list[str]
    total_interactions: int
    last_activity: AwareDatetime
    expires_at: AwareDatetime
    history: list[Interaction] = Field(description="The newest interactions, oldest first.")


class Logged(_Result):
    """What log_interaction returns: a receipt, not an echo of messages the model already has."""

    session_id: str
    interaction_id: str
    timestamp: AwareDatetime
    topics: list[str] = Field(description="This interaction's topics, deduplicated.")


class Preferences(_Result):
    user_id: str
    preferences: JsonObject


class Cleanup(_Result):
    removed: int = Field(description="How many expired sessions were removed from the indexes.")


class Deleted(_Result):
    session_id: str
    deleted: bool = True


class Imported(_Result):
    session_id: str


class RedsessionMCP(MCPServer[Any]):
    """MCPServer whose tool errors are one clean line, whatever failed."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as e:
            # The SDK treats any exception but its own ToolError as a crash and hides its text;
            # ours are deliberate and written for the caller, so pass them on.
            if isinstance(e.__cause__, RedsessionError):
                raise ToolError(f"{name}: {_one_line(str(e.__cause__))}") from e.__cause__
            raise
        except ToolError as e:
            if isinstance(e.__cause__, ValidationError):
                message = f"{name}: invalid arguments: {problems(e.__cause__, most=10)}"
                raise ToolError(message) from e.__cause__
            raise


def build_server(manager: AsyncSessionManager, settings: Settings) -> RedsessionMCP:
    """The MCP server with every session tool bound to ``manager``; run it on any transport."""
    mcp = RedsessionMCP("redsession", version=__version__, instructions=INSTRUCTIONS)
    tokens = TokenTable.from_settings(settings)

    def who(ctx: Ctx) -> Caller:
        return caller(tokens, ctx.headers)
    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    destroys = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

    @mcp.tool(annotations=writes)
    async def start_session(
        user_id: UserId, ctx: Ctx, context: JsonObject | None = None
    ) -> Session:
        """Start a new conversation session for a user, optionally with an initial context.

        Returns the session; keep its session_id for every later call.
        """
        who(ctx).may_act_for(user_id)
        return await manager.create_session(user_id, context=context)

    @mcp.tool(annotations=writes)
    async def resume_session(session_id: SessionId, user_id: UserId, ctx: Ctx) -> Session:
        """Resume a session of this user: returns it with its recent interactions.

        Counts as activity (pushes its expiry back). Fails if the session does not exist,
        has expired, or belongs to another user. A merged session's id resumes the session
        it was merged into.
        """
        who(ctx).may_act_for(user_id)
        return await manager.resume_session(session_id, user_id)

    @mcp.tool(annotations=writes)
    async def log_interaction(
        session_id: SessionId,
        ctx: Ctx,
        user_message: Annotated[str, Field(description="What the user said.")],
        assistant_response: Annotated[
            str | None, Field(description="What the assistant answered, if anything yet.")
        ] = None,
        metadata: Annotated[
            JsonObject | None, Field(description="Free-form JSON annotations of this exchange.")
        ] = None,
        topics: Annotated[
            list[str] | None, Field(description="Topics of this exchange; added to the session's.")
        ] = None,
    ) -> Logged:
        """Record one exchange (user message and optional assistant response) in a session."""
        i = await manager.log_interaction(
            session_id,
            user_message=user_message,
            assistant_response=assistant_response,
            metadata=metadata,
            topics=topics,
            user_id=who(ctx).user_id,
        )
        return Logged(
            session_id=session_id, interaction_id=i.id, timestamp=i.timestamp, topics=i.topics
        )

    @mcp.tool(annotations=reads)
    async def get_session_context(
        session_id: SessionId,
        ctx: Ctx,
        history: Annotated[
            int, Field(ge=0, le=MAX_HISTORY, description="How many recent interactions to return.")
        ] = 10,
    ) -> SessionContext:
        """Read a session's context, its user's preferences, its topics and recent interactions."""
        s = await manager.get_session(session_id, history=history, user_id=who(ctx).user_id)
        prefs = await manager.get_preferences(s.user_id)
        return SessionContext(
            session_id=s.session_id,
            user_id=s.user_id,
            context=s.context,
            preferences=prefs,
            topics=s.topics,
            total_interactions=s.total_interactions,
            last_activity=s.last_activity,
            expires_at=s.expires_at,
            history=s.history,
        )

    @mcp.tool(annotations=writes)
    async def update_session_context(
        session_id: SessionId,
        ctx: Ctx,
        patch: Annotated[
            JsonObject,
            Field(description="Deep-merged into the context; a null value deletes that key."),
        ],
    ) -> Session:
        """Change a session's context by deep-merging a patch into it; returns the session."""
        return await manager.update_context(session_id, patch, user_id=who(ctx).user_id)

    @mcp.tool(annotations=writes)
    async def set_user_preferences(
        user_id: UserId,
        ctx: Ctx,
        preferences: Annotated[
            JsonObject,
            Field(description="Merged into the user's preferences; a null value removes a key."),
        ],
    ) -> Preferences:
        """Set preferences of a user, shared by all their sessions; returns all of them."""
        who(ctx).may_act_for(user_id)
        return Preferences(
            user_id=user_id, preferences=await manager.set_preferences(user_id, preferences)
        )

    @mcp.tool(annotations=reads)
    async def list_sessions(
        ctx: Ctx,
        user_id: Annotated[
            str | None, Field(description="Only this user's sessions; all users' if omitted.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="Sessions per page.")] = 20,
        cursor: Annotated[
            str | None, Field(description="next_cursor of the previous page, for the next one.")
        ] = None,
    ) -> SessionPage:
        """List live sessions, most recently active first, one page at a time."""
        me = who(ctx)
        if me.user_id is not None:  # a user's token lists that user's sessions only
            user_id = me.may_act_for(user_id or me.user_id)
        return await manager.list_active_sessions(user_id, limit=limit, cursor=cursor)

    @mcp.tool(annotations=reads)
    async def export_session(session_id: SessionId, ctx: Ctx) -> SessionExport:
        """Export a session and its whole history as a versioned JSON document."""
        return await manager.export_session(session_id, user_id=who(ctx).user_id)

    @mcp.tool(annotations=destroys)
    async def import_session(
        ctx: Ctx,
        document: Annotated[JsonObject, Field(description="A document from export_session.")],
        overwrite: Annotated[
            bool, Field(description="Replace a live session with the same id.")
        ] = False,
    ) -> Imported:
        """Load a session from an export_session document, keeping its id and expiry."""
        who(ctx).admin_only("import_session")  # it can name any user and overwrite
        return Imported(session_id=await manager.import_session_data(document, overwrite=overwrite))

    @mcp.tool(annotations=destroys)
    async def merge_sessions(
        primary_id: SessionId, secondary_id: SessionId, ctx: Ctx
    ) -> Session:
        """Merge the secondary session into the primary (both of one user).

        Interactions are interleaved by time, topics united, contexts deep-merged (the
        primary wins conflicts). The secondary id then resolves to the primary.
        """
        return await manager.merge_sessions(primary_id, secondary_id, user_id=who(ctx).user_id)

    @mcp.tool(annotations=destroys)
    async def delete_session(session_id: SessionId, ctx: Ctx) -> Deleted:
        """Delete a session and its history for good."""
        await manager.delete_session(session_id, user_id=who(ctx).user_id)
        return Deleted(session_id=session_id)

    @mcp.tool(annotations=ToolAnnotations(idempotent_hint=True, open_world_hint=False))
    async def cleanup_sessions(ctx: Ctx) -> Cleanup:
        """Remove expired sessions from the indexes (Redis has already expired their data)."""
        who(ctx).admin_only("cleanup_sessions")
        return Cleanup(removed=await manager.cleanup_expired_sessions())

    @mcp.tool(annotations=reads)
    async def read_events(
        ctx: Ctx,
        after: Annotated[
            str | None,
            Field(description="Only events after this id: the `after` of the previous page."),
        ] = None,
        kinds: Annotated[
            list[EventKind] | None, Field(description="Only events of these kinds.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="Events per page.")] = 100,
    ) -> EventPage:
        """For operators: the event stream, oldest first (who changed which session, how,
        and when; never message text). Pass the page's `after` back for the next page."""
        who(ctx).admin_only("read_events")  # every user's activity
        return await manager.events(after, kinds=kinds, limit=limit)

    return mcp


def run_mcp(
    settings: Settings,
    transport: Literal["stdio", "http"] = "stdio",
    host: str | None = None,
    port: int | None = None,
) -> None:
    """Serve the tools until stopped: stdin closed (stdio), SIGTERM (HTTP) or SIGINT.

    ``host`` and ``port`` (HTTP only) default to ``settings.mcp_host`` and ``mcp_port``.
    """
    if transport not in ("stdio", "http"):
        raise ConfigError(f"unknown MCP transport {transport!r}: use stdio or http")
    tokens = TokenTable.from_settings(settings)  # a bad token setting fails before serving
    manager = AsyncSessionManager.from_url(settings.redis_url, **dict(settings))
    try:
        anyio.run(_serve, manager, settings, transport, host, port, tokens)
    except KeyboardInterrupt:  # Ctrl-C is how a terminal user stops a stdio server
        logger.info("MCP server interrupted")


async def _serve(
    manager: AsyncSessionManager,
    settings: Settings,
    transport: Literal["stdio", "http"],
    host: str | None,
    port: int | None,
    tokens: TokenTable | None,
) -> None:
    server = build_server(manager, settings)
    try:
        if transport == "stdio":
            await server.run_stdio_async()
        else:
            await _serve_http(
                server,
                manager,
                settings,
                settings.mcp_host if host is None else host,
                settings.mcp_port if port is None else port,
                tokens,
            )
    finally:
        await manager.close()


async def _serve_http(
    server: RedsessionMCP,
    manager: AsyncSessionManager,
    settings: Settings,
    host: str,
    port: int,
    tokens: TokenTable | None,
) -> None:
    import uvicorn  # only HTTP needs it; stdio servers start faster without
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from redsession.services.metrics import CONTENT_TYPE, Metrics

    metrics = Metrics()
    metrics.watch(manager)

    async def scrape(request: Request) -> Response:
        return Response(await metrics.scrape_async(manager), media_type=CONTENT_TYPE)

    http = server.streamable_http_app(
        streamable_http_path=HTTP_PATH, host=host, max_request_body_size=_max_body(settings)
    )
    # Behind the same bearer check as the tools, like the REST API's /metrics.
    http.router.routes.append(Route("/metrics", scrape, methods=["GET"]))
    app: ASGIApp = http
    if tokens is not None:
        app = BearerAuth(app, tokens)
    elif host not in LOOPBACK:
        logger.warning("MCP server on %s without REDSESSION_MCP_TOKEN: anyone can connect", host)
    logger.info("MCP server on http://%s:%d%s", host, port, HTTP_PATH)
    # log_config=None: logging handlers are the CLI's to configure, not uvicorn's.
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on")
    await uvicorn.Server(config).serve()


def _max_body(s: Settings) -> int:
    # A log_interaction at every limit must get through; JSON escaping can double the size.
    return max(DEFAULT_MAX_REQUEST_BODY_SIZE, 2 * (2 * s.max_message_bytes + s.max_context_bytes))


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
