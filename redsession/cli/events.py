"""`redsession events`: the event stream as a table or NDJSON, once or following it."""

from __future__ import annotations

from collections.abc import Sequence

import click
import orjson

from redsession.cli.errors import OneLineCommand
from redsession.cli.output import when
from redsession.cli.state import get_state, json_option
from redsession.manager import SessionManager
from redsession.model import validation as check
from redsession.model.models import EVENT_KINDS, Event

FOLLOW_BLOCK = 1.0  # seconds each wait for new events lasts; Ctrl-C ends the follow at once
_COLUMNS = "{:<20}  {:<8}  {:<24}  {:<20}  {:<24}  {}"


@click.command(cls=OneLineCommand)
@json_option
@click.option("--after", metavar="ID", help="Only events after this id (as printed).")
@click.option(
    "--kind", "kinds", multiple=True, type=click.Choice(EVENT_KINDS),
    help="Only events of this kind (repeat for more).",
)  # fmt: skip
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Events per page; without --follow, the one page printed.")  # fmt: skip
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
def events(after: str | None, kinds: Sequence[str], limit: int, follow: bool) -> None:
    """Show the event stream (oldest first): who changed which session, how, and when.

    Events hold ids, kinds and times, never message text. With --json, one JSON object a
    line (NDJSON).
    """
    state = get_state()
    if after is not None:
        check.event_id(after)  # a bad id fails before anything is printed
    m = state.manager
    wanted = kinds or None
    printer = _Printer(json=state.json)
    try:
        page = m.events(after, kinds=wanted, limit=limit)
        printer.print(page.events)
        if not follow:
            if not page.events and not state.json:
                click.echo("no events")
            if len(page.events) == limit and page.after:
                click.echo(f"more: redsession events --after {page.after}", err=True)
            return
        _follow(m, page.after, wanted, limit, printer)
    except KeyboardInterrupt:
        return  # Ctrl-C ends a follow: exit 0, no traceback


def _follow(
    m: SessionManager, after: str | None, kinds: Sequence[str] | None, limit: int,
    printer: _Printer,
) -> None:  # fmt: skip
    while True:  # until Ctrl-C; each wait is bounded (FOLLOW_BLOCK)
        page = m.wait_for_events(after, kinds=kinds, limit=limit, block=FOLLOW_BLOCK)
        printer.print(page.events)
        after = page.after


class _Printer:
    """Events as NDJSON, or as aligned columns under one header line."""

    def __init__(self, *, json: bool) -> None:
        self.json = json
        self._header = not json

    def print(self, events: list[Event]) -> None:
        for e in events:
            if self.json:
                click.echo(orjson.dumps(e.model_dump(mode="json")).decode())
                continue
            if self._header:
                click.echo(_COLUMNS.format("time", "kind", "session", "user", "op", "id"))
                self._header = False
            extras = " ".join(f"{k}={v}" for k, v in e.extras.items())
            line = _COLUMNS.format(
                when(e.time), e.kind, e.session_id, e.user_id, e.op_id, e.id
            )
            click.echo(f"{line}  {extras}".rstrip())
