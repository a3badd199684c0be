"""The operator dashboard under /ui: server-rendered HTML (Jinja2), forms instead of scripts.

Every page calls the same manager methods as the REST API, with the caller's identity: the
admin token sees every session, a user's token only that user's. The token is given once on
the login page and kept in an HttpOnly, SameSite=Strict cookie, so no other site can post a
form with it. Pages make no request to any other host: styles are inline, charts are SVG.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.templating import Jinja2Templates

from redsession.async_manager import AsyncSessionManager
from redsession.errors import InvalidInput, RedsessionError, SessionNotFound
from redsession.model import validation as check
from redsession.model.models import Interaction, SessionSummary, item_text, utcnow
from redsession.services import charts
from redsession.services.auth import Caller
from redsession.services.web import TOKEN_COOKIE, api_of, classify

PAGE = 20  # sessions per list page, entries per history page
templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("redsession.services", "templates"),
        autoescape=select_autoescape(default=True),
    )
)


class _Login(Exception):
    """No valid token: send the browser to the login page."""


def mount(app: FastAPI) -> None:
    app.include_router(router)

    @app.exception_handler(_Login)
    async def login(request: Request, e: _Login) -> Response:
        return RedirectResponse("/ui/login", status_code=303)


router = APIRouter(prefix="/ui", include_in_schema=False)


def _caller(request: Request) -> Caller:
    caller = api_of(request).caller(request)
    if caller is None:
        raise _Login
    return caller


def _render(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
    api = api_of(request)
    context.setdefault("login", api.tokens is not None)
    return templates.TemplateResponse(request, name, context, status_code=code)


def _failure(request: Request, e: RedsessionError) -> HTMLResponse:
    status, _ = classify(e)
    return _render(request, "error.html", status, status=status, message=str(e))


def _m(request: Request) -> AsyncSessionManager:
    return api_of(request).manager


# -- login ---------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    return _render(request, "login.html", login=False)


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form()] = "") -> Response:
    api = api_of(request)
    if api.tokens is not None and api.tokens.identity(f"Bearer {token}") is None:
        return _render(request, "login.html", 401, wrong=True, login=False)
    response = RedirectResponse("/ui/sessions", status_code=303)
    if api.tokens is not None:
        response.set_cookie(
            TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/",
            secure=request.url.scheme == "https",
        )  # fmt: skip
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return response


# -- sessions ------------------------------------------------------------------------------


@router.get("")
async def home() -> Response:
    return RedirectResponse("/ui/sessions", status_code=303)


@router.get("/sessions")
async def sessions(request: Request, q: str = "", cursor: str | None = None) -> HTMLResponse:
    """Newest activity first, a page at a time; ``q`` is a user id or a session id."""
    who, m = _caller(request), _m(request)
    q = q.strip()
    found: list[SessionSummary] = []
    next_cursor = None
    try:
        if q:
            found = await _by_id(m, q, who)
        if not found:
            user = q or None
            if who.user_id is not None:  # a user's token: that user's sessions only
                user = who.may_act_for(user or who.user_id)
            page = await m.list_active_sessions(user, limit=PAGE, cursor=cursor)
            found, next_cursor = list(page.sessions), page.next_cursor
    except (InvalidInput, SessionNotFound):  # not a user id, or another user's: none shown
        found = []
    except RedsessionError as e:
        return _failure(request, e)
    return _render(request, "sessions.html", sessions=found, q=q, next_cursor=next_cursor,
                   now=utcnow())  # fmt: skip


async def _by_id(m: AsyncSessionManager, q: str, who: Caller) -> list[SessionSummary]:
    try:
        check.session_id(q)
        s = await m.get_session(q, user_id=who.user_id)
    except (InvalidInput, SessionNotFound):
        return []
    return [SessionSummary.model_validate(s.model_dump(include=set(SessionSummary.model_fields)))]


@router.get("/sessions/{session_id}")
async def session(request: Request, session_id: str, before: int | None = None) -> HTMLResponse:
    who, m = _caller(request), _m(request)
    try:
        s = await m.get_session(session_id, user_id=who.user_id)
        entries = await m.get_history(
            s.session_id, limit=PAGE, before=before, user_id=who.user_id
        )
        prefs = await m.get_preferences(s.user_id)
    except RedsessionError as e:
        return _failure(request, e)
    end = s.total_interactions if before is None else min(before, s.total_interactions)
    start = max(0, end - len(entries))
    return _render(
        request, "session.html", s=s, messages=_messages(entries), prefs=prefs,
        context_json=_pretty(s.context), prefs_json=_pretty(prefs), start=start, end=end,
        older=start or None, newer=(end + PAGE if end < s.total_interactions else None),
    )  # fmt: skip


def _messages(entries: list[Any]) -> list[dict[str, Any]]:
    """Each entry as the messages a person reads: (role, text, time), oldest first."""
    out: list[dict[str, Any]] = []
    for e in entries:
        if isinstance(e, Interaction):
            out.append({"role": "user", "text": e.user_message, "at": e.timestamp,
                        "topics": e.topics})  # fmt: skip
            if e.assistant_response is not None:
                out.append({"role": "assistant", "text": e.assistant_response,
                            "at": e.timestamp, "topics": []})  # fmt: skip
        else:
            role, text = item_text(e.item)
            out.append({"role": role, "text": text, "at": e.timestamp, "topics": []})
    return out


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


@router.get("/sessions/{session_id}/export")
async def export(request: Request, session_id: str) -> Response:
    who, m = _caller(request), _m(request)
    try:
        doc = await m.export_session(session_id, user_id=who.user_id)
    except RedsessionError as e:
        return _failure(request, e)
    name = quote(f"{doc.session.session_id}.json")
    return Response(
        orjson.dumps(doc.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
        media_type="application/json",
        headers={"Content-Disposition": f"attachment; filename={name}"},
    )


@router.get("/sessions/{session_id}/delete")
async def confirm_delete(request: Request, session_id: str) -> HTMLResponse:
    who, m = _caller(request), _m(request)
    try:
        s = await m.get_session(session_id, user_id=who.user_id)
    except RedsessionError as e:
        return _failure(request, e)
    return _render(request, "delete.html", s=s)


@router.post("/sessions/{session_id}/delete")
async def delete(request: Request, session_id: str) -> Response:
    who, m = _caller(request), _m(request)
    try:
        await m.delete_session(session_id, user_id=who.user_id)
    except RedsessionError as e:
        return _failure(request, e)
    return _render(request, "deleted.html", session_id=session_id)


@router.get("/merge")
async def merge_page(request: Request, primary: str = "", secondary: str = "") -> HTMLResponse:
    _caller(request)
    return _render(request, "merge.html", primary=primary, secondary=secondary)


@router.post("/merge")
async def merge(
    request: Request, primary: Annotated[str, Form()], secondary: Annotated[str, Form()]
) -> Response:
    who, m = _caller(request), _m(request)
    try:
        s = await m.merge_sessions(primary.strip(), secondary.strip(), user_id=who.user_id)
    except RedsessionError as e:
        return _render(request, "merge.html", _status(e), primary=primary,
                       secondary=secondary, error=str(e))  # fmt: skip
    return RedirectResponse(f"/ui/sessions/{quote(s.session_id)}?merged=1", status_code=303)


def _status(e: RedsessionError) -> int:
    return classify(e)[0]


# -- the worker and the analytics ------------------------------------------------------------


@router.get("/worker")
async def worker(request: Request) -> HTMLResponse:
    who, m = _caller(request), _m(request)
    try:
        who.admin_only("the worker's page")
        status = await m.worker_status()
    except RedsessionError as e:
        return _failure(request, e)
    return _render(request, "worker.html", w=status, now=utcnow())


@router.get("/analytics")
async def analytics(request: Request) -> HTMLResponse:
    who, m = _caller(request), _m(request)
    try:
        who.admin_only("the analytics")
        a = await m.analytics(days=30)
        overview = await m.overview()
    except RedsessionError as e:
        return _failure(request, e)
    labels = [d.day.strftime("%m-%d") for d in a.days]
    figures = {
        "activity": charts.bars(
            "Active sessions and interactions per day",
            [("sessions", [d.active_sessions for d in a.days]),
             ("interactions", [d.interactions for d in a.days])],
            labels, every=5,
        ),
        "users": charts.bars(
            "New and returning users per day",
            [("new", [d.new_users for d in a.days]),
             ("returning", [max(d.active_users - d.new_users, 0) for d in a.days])],
            labels, every=5,
        ),
        "spread": charts.bars(
            "Sessions by number of interactions",
            [("sessions", list(a.interactions_per_session.values()))],
            list(a.interactions_per_session), width=420,
        ),
        "memory": charts.line(
            "Redis used memory", [(_hour(x.at), x.used_memory) for x in a.memory]
        ),
    }  # fmt: skip
    return _render(request, "analytics.html", a=a, o=overview, charts=figures,
                   today=a.days[-1])  # fmt: skip


def _hour(at: datetime) -> str:
    return at.strftime("%m-%d %H:00")
