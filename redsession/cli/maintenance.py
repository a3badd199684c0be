"""Maintenance commands: cleanup, dump, restore, stats, repair-index, rotate-keys,
prune-scripts."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from redsession.cli.errors import CliError
from redsession.cli.output import console, print_json, progress, size, when
from redsession.cli.state import get_state, json_option

SHOW_IDS = 20


@click.command()
@json_option
@click.option("--dry-run", is_flag=True, help="Only say which sessions would be cleaned up.")
def cleanup(dry_run: bool) -> None:
    """Drop index entries and dump files of sessions Redis has expired."""
    state = get_state()
    with progress("cleaning up"):
        report = state.manager.cleanup(dry_run=dry_run)
    if state.json:
        print_json(report)
        return
    ids, files = report.session_ids, report.dump_files_removed
    if dry_run:
        click.echo(f"would clean up {len(ids)} expired session(s)")
        for sid in ids[:SHOW_IDS]:
            click.echo(f"  {sid}")
        if len(ids) > SHOW_IDS:
            click.echo(f"  ... and {len(ids) - SHOW_IDS} more (--json lists them all)")
    else:
        click.echo(f"cleaned up {len(ids)} expired session(s) and {files} dump file(s)")


@click.command()
@json_option
def dump() -> None:
    """Write the JSON dump file of every session changed since the last dump."""
    state = get_state()
    with progress("dumping") as advance:
        report = state.manager.dump_sessions(progress=advance)
    failed = report.failed
    if state.json:
        print_json(report)
    else:
        click.echo(
            f"wrote {report.written} dump file(s), removed {report.removed}, {failed} failed"
        )
    if failed:
        raise CliError(
            f"{failed} session(s) could not be dumped; rerun with --log-level INFO to see why"
        )


@click.command()
@json_option
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Folder of dump files [default: DATA_DIR/sessions].",
)
def restore(source: Path | None) -> None:
    """Load dump files into Redis; a newer dump replaces an older session."""
    state = get_state()
    with progress("restoring") as advance:
        report = state.manager.restore_sessions(source, progress=advance)
    quarantined = report.quarantined
    if state.json:
        print_json(report)
    else:
        click.echo(
            f"restored {report.restored}, replaced {report.replaced}, "
            f"skipped {report.skipped}, expired {report.expired}, "
            f"quarantined {quarantined}"
        )
    if quarantined:
        click.echo(
            f"warning: {quarantined} file(s) could not be loaded and were moved to the "
            "quarantine folder; the log says why",
            err=True,
        )


@click.command()
@json_option
def stats() -> None:
    """Counts, memory, and the oldest and newest session."""
    state = get_state()
    s = state.manager.stats()
    if state.json:
        print_json(s)
        return
    table = Table.grid(padding=(0, 2))
    table.add_row("sessions", str(s.sessions))
    table.add_row("users", str(s.users))
    table.add_row("interactions", str(s.interactions))
    table.add_row("redis memory used", size(s.redis_used_memory))
    table.add_row("oldest activity", when(s.oldest_activity))
    table.add_row("newest activity", when(s.newest_activity))
    table.add_row("expiring in 24 h", str(s.expiring_24h))
    table.add_row("events", str(s.events))
    table.add_row("webhook dead letters", str(s.webhook_dead_letters))
    console().print(table)


@click.command("repair-index")
@json_option
def repair_index() -> None:
    """Rebuild the index entries from the sessions themselves (SCAN; run it off-peak)."""
    state = get_state()
    with progress("repairing"):
        report = state.manager.repair_indexes()
    if state.json:
        print_json(report)
        return
    click.echo(
        f"checked {report.sessions} session(s): put back {report.added} index entries, "
        f"removed {report.removed} stale ones and {report.users_removed} empty user(s)"
    )


@click.command("rotate-keys")
@json_option
def rotate_keys() -> None:
    """Re-encrypt every session and preference under the newest key (safe to re-run)."""
    state = get_state()
    with progress("re-encrypting") as advance:
        report = state.manager.rotate_keys(progress=advance)
    if state.json:
        print_json(report)
        return
    click.echo(
        f"re-encrypted {report.sessions_rotated} session(s) "
        f"({report.sessions_current} already current) and the preferences of "
        f"{report.users_rotated} user(s) ({report.users_current} already current)"
    )


@click.command("prune-scripts")
@json_option
@click.option("--dry-run", is_flag=True, help="Only say which libraries would be deleted.")
def prune_scripts(dry_run: bool) -> None:
    """Delete other releases' script libraries from Redis (needs an admin user)."""
    state = get_state()
    report = state.manager.prune_scripts(dry_run=dry_run)
    if state.json:
        print_json(report)
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {len(report.deleted)} library(ies) of other releases; "
        f"kept {len(report.kept)} of this one"
    )
    for name in report.deleted[:SHOW_IDS]:
        click.echo(f"  {name}")
    if report.partial:
        click.echo(
            f"left {len(report.partial)} that only some primaries hold (FUNCTION DELETE "
            f"them there by hand): {' '.join(report.partial)}"
        )
