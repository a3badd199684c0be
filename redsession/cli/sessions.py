"""Commands on sessions: list, show, export, import, merge, delete."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import click
import orjson
from rich.table import Column, Table
from rich.text import Text

from redsession.cli.errors import EXIT_PERMISSION, EXIT_USAGE, CliError, bad_input
from redsession.cli.output import (
    Advance,
    console,
    err_console,
    print_json,
    progress,
    when,
)
from redsession.cli.state import State, get_state, json_option
from redsession.errors import (
    InvalidInput,
    PermissionDenied,
    RedsessionError,
    SessionExists,
    SessionNotFound,
)
from redsession.files import atomic_writer
from redsession.model.models import Interaction, Session, as_items, item_text

log = logging.getLogger(__name__)

OutputPath = click.Path(dir_okay=False, allow_dash=True, path_type=Path)


def _interactive() -> bool:
    return sys.stdin.isatty()


@click.command("list")
@json_option
@click.option("--user", "user_id", metavar="USER", help="Only this user's sessions.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--cursor", help="Continue a listing: the cursor the previous page printed.")
def list_sessions(user_id: str | None, limit: int, cursor: str | None) -> None:
    """List live sessions, newest activity first."""
    state = get_state()
    page = state.manager.list_active_sessions(user_id, limit=limit, cursor=cursor)
    if state.json:
        print_json(page)
        return
    # Cut or wrapped, an id could not be copied.
    session = Column("session", no_wrap=True)
    table = Table(session, "user", "interactions", "created", "last activity", "expires")
    for s in page.sessions:
        table.add_row(
            Text(s.session_id), Text(s.user_id), str(s.total_interactions),
            when(s.created_at), when(s.last_activity), when(s.expires_at),
        )  # fmt: skip
    out = console()
    if page.sessions:
        out.print(table)
    else:
        out.print("no live sessions")
    if page.next_cursor:
        again = f" --user {user_id}" if user_id else ""
        click.echo(f"more: redsession list{again} --cursor {page.next_cursor}", err=True)


@click.command()
@json_option
@click.argument("session_id", metavar="SID")
@click.option("--history", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many of the newest interactions to show.")  # fmt: skip
def show(session_id: str, history: int) -> None:
    """Show a session: its state and newest interactions."""
    state = get_state()
    session = state.manager.get_session(session_id, history=history)
    if state.json:
        print_json(session)
        return
    _print_session(session)


def _print_session(s: Session) -> None:
    out = console()
    fields = Table.grid(padding=(0, 2))
    fields.add_row("session", Text(s.session_id))
    fields.add_row("user", Text(s.user_id))
    fields.add_row("interactions", str(s.total_interactions))
    fields.add_row("created", when(s.created_at))
    fields.add_row("last activity", when(s.last_activity))
    fields.add_row("expires", when(s.expires_at))
    fields.add_row("version", str(s.version))
    fields.add_row("topics", Text(", ".join(s.topics) or "-"))
    if s.merged_from:
        fields.add_row("merged from", Text(", ".join(s.merged_from)))
    fields.add_row("context", Text(orjson.dumps(s.context, option=orjson.OPT_INDENT_2).decode()))
    out.print(fields)
    if s.history:
        table = Table("time", "role", "message", "topics", title="history (oldest first)")
        for e in s.history:
            topics = Text(", ".join(e.topics)) if isinstance(e, Interaction) else Text("")
            for item in as_items([e]):
                role, message = item_text(item)
                table.add_row(when(e.timestamp), Text(role), Text(message), topics)
        out.print(table)


@click.command()
@json_option
@click.argument("session_id", metavar="[SID]", required=False)
@click.option("--all", "all_", is_flag=True, help="Every session, one JSON document a line.")
@click.option("--user", "user_id", metavar="USER", help="With --all: only this user's sessions.")
@click.option("-o", "--output", type=OutputPath, help="Write here (atomically), not stdout.")
def export(session_id: str | None, all_: bool, user_id: str | None, output: Path | None) -> None:
    """Export a session as JSON, or with --all every session as JSON Lines."""
    if (session_id is None) == (not all_):
        raise click.UsageError("give either a session id or --all")
    if user_id is not None and not all_:
        raise click.UsageError("--user goes with --all")
    state = get_state()
    to_file = output is not None and str(output) != "-"
    if all_:
        count = _write(output, lambda f: _export_all(state, user_id, f))
    else:
        assert session_id is not None
        text = orjson.dumps(state.manager.export_session_data(session_id),
                            option=orjson.OPT_INDENT_2) + b"\n"  # fmt: skip

        def one(f: IO[bytes]) -> int:
            f.write(text)
            return 1

        count = _write(output, one)
    if to_file:
        if state.json:
            print_json({"exported": count, "output": str(output)})
        else:
            click.echo(f"exported {count} session(s) to {output}", err=True)


def _write(output: Path | None, produce: Callable[[IO[bytes]], int]) -> int:
    if output is None or str(output) == "-":
        sys.stdout.flush()  # anything already printed goes first
        count = produce(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return count
    try:
        with atomic_writer(output) as f:
            return produce(f)
    except RedsessionError:
        raise  # StorageUnavailable is a ConnectionError, hence an OSError: not a file problem
    except OSError as e:
        raise CliError(f"cannot write {output}: {e.strerror or e}; nothing was written") from e


def _export_all(state: State, user_id: str | None, f: IO[bytes]) -> int:
    manager, count = state.manager, 0
    with progress("exporting") as advance:
        for sid in manager.iter_session_ids(user_id):  # each id once
            try:
                # A session merged meanwhile is skipped: its primary is written on its own.
                doc = manager.export_session(sid, follow_merged=False)
            except SessionNotFound:
                log.info("session %s ended during the export; skipped", sid)
                continue
            f.write(doc.model_dump_json().encode() + b"\n")
            count += 1
            advance(1)
    return count


@click.command("import")
@json_option
@click.argument("source", metavar="FILE|-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--overwrite", is_flag=True, help="Replace sessions that already exist.")
def import_(source: str, overwrite: bool) -> None:
    """Import sessions from an export: one JSON document, a JSON array, or JSON Lines.

    Stops at the first invalid document (exit 6), saying how many were imported before it.
    Existing sessions are left alone unless --overwrite is given (then exit 1 at the end).
    """
    state = get_state()
    name = "stdin" if source == "-" else source
    imported = skipped = 0
    try:
        # Standard input is not ours to close.
        opened: contextlib.AbstractContextManager[IO[bytes]] = (
            contextlib.nullcontext(sys.stdin.buffer) if source == "-" else open(source, "rb")  # noqa: SIM115 (closed by the with below)
        )
    except OSError as e:
        raise bad_input(name, f"cannot read: {e.strerror or e}") from e
    with opened as f:
        total = _regular_file_size(f)
        with progress("importing", total, in_bytes=total is not None) as advance:
            by_bytes: Advance = advance if total is not None else (lambda n: None)
            for where, doc in _documents(f, name, by_bytes):
                try:
                    state.manager.import_session_data(doc, overwrite=overwrite)
                except InvalidInput as e:
                    raise bad_input(where, f"{e} ({imported} session(s) imported before it)") from e
                except SessionExists:
                    skipped += 1
                else:
                    imported += 1
                if total is None:
                    advance(1)
    if state.json:
        print_json({"imported": imported, "skipped_existing": skipped})
    if skipped:
        raise CliError(
            f"imported {imported} session(s); {skipped} already existed and were left as they "
            "were: pass --overwrite to replace them"
        )
    if not state.json:
        click.echo(f"imported {imported} session(s)", err=True)


def _regular_file_size(f: IO[bytes]) -> int | None:
    try:
        info = os.fstat(f.fileno())
    except (OSError, ValueError):  # click's test runner gives stdin without a descriptor
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _documents(f: IO[bytes], name: str, advance: Advance) -> Iterator[tuple[str, object]]:
    """(where, document) for each document of ``f``; JSON Lines are passed on as raw bytes."""
    lines = iter(f)
    number, first = 0, b""
    try:
        for first in lines:
            number += 1
            advance(len(first))
            if first.strip():
                break
        else:
            return
        try:
            jsonl = isinstance(orjson.loads(first), dict)
        except orjson.JSONDecodeError:
            jsonl = False  # an indented document, read whole below
        if jsonl:
            yield f"{name} line {number}", first
            for line in lines:
                number += 1
                advance(len(line))
                if line.strip():
                    yield f"{name} line {number}", line
            return
        rest = f.read()
        advance(len(rest))
    except OSError as e:
        raise bad_input(name, f"cannot read: {e.strerror or e}") from e
    try:
        value = orjson.loads(first + rest)
    except orjson.JSONDecodeError as e:
        raise bad_input(name, f"neither JSON nor JSON Lines ({e})") from e
    if isinstance(value, list):
        for i, doc in enumerate(value, 1):
            yield f"{name} document {i}", doc
    else:
        yield name, value


@click.command()
@json_option
@click.argument("primary", metavar="PRIMARY")
@click.argument("secondary", metavar="SECONDARY")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--allow-cross-user", is_flag=True, help="Merge sessions of two different users.")
def merge(primary: str, secondary: str, yes: bool, allow_cross_user: bool) -> None:
    """Fold SECONDARY into PRIMARY; SECONDARY then redirects to PRIMARY."""
    state = get_state()
    manager = state.manager
    if not yes:
        if not _interactive():
            raise CliError(
                "merge asks for confirmation and there is no terminal; pass --yes to merge",
                EXIT_USAGE,
            )
        p, s = manager.get_session(primary), manager.get_session(secondary)
        out = err_console()
        out.print(Text(
            f"Merge {s.session_id} (user {s.user_id}, {s.total_interactions} interactions)\n"
            f" into {p.session_id} (user {p.user_id}, {p.total_interactions} interactions).\n"
            f"{s.session_id} will then redirect to {p.session_id}. This cannot be undone."
        ))  # fmt: skip
        if p.user_id != s.user_id:
            out.print("The sessions belong to different users.")
        click.confirm("Merge?", abort=True, err=True)
    try:
        merged = manager.merge_sessions(primary, secondary, allow_cross_user=allow_cross_user)
    except PermissionDenied as e:
        raise CliError(
            f"{primary!r} and {secondary!r} belong to different users; "
            "pass --allow-cross-user to merge them anyway",
            EXIT_PERMISSION,
        ) from e
    if state.json:
        print_json(merged)
    else:
        click.echo(
            f"merged {secondary} into {merged.session_id}: {merged.total_interactions} interactions"
        )


@click.command()
@json_option
@click.argument("session_id", metavar="SID")
def delete(session_id: str) -> None:
    """Delete a session; late writes to it are refused."""
    state = get_state()
    state.manager.delete_session(session_id)
    if state.json:
        print_json({"deleted": session_id})
    else:
        click.echo(f"deleted {session_id}")
