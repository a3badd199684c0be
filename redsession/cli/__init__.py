"""The `redsession` command line: a thin layer that parses, calls the library, and prints.

Exit codes: 0 ok, 1 other error, 2 usage or configuration, 3 session not found,
4 permission (another user's session), 5 Redis unavailable or refusing, 6 bad input file.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from redsession import __version__
from redsession.cli import events, maintenance, services, sessions, sql
from redsession.cli.errors import to_cli_error
from redsession.cli.state import State
from redsession.errors import RedsessionError

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_OURS = "_redsession_cli_handler"


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedsessionError as e:
            # With --log-level DEBUG the traceback goes to the log; otherwise one line.
            log.debug("%s failed", ctx.invoked_subcommand, exc_info=True)
            raise to_cli_error(e) from e


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _OURS, True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


EXIT_CODES = (
    "Exit codes: 0 ok, 1 error, 2 usage or configuration, 3 session not found, "
    "4 another user's session, 5 Redis unavailable or refusing, 6 bad input file."
)


@click.group(
    cls=_Group, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--redis-url",
    envvar="REDSESSION_REDIS_URL",
    metavar="URL",
    help="Redis to use, e.g. redis://localhost:6379/0 [env REDSESSION_REDIS_URL].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dumps, backups and the embedded server's files [env REDSESSION_DATA_DIR].",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    envvar="REDSESSION_LOG_LEVEL",
    help="Log to stderr at this level; DEBUG also shows tracebacks.",
)
@click.option("--json", "json_", is_flag=True, help="Print machine-readable JSON.")
@click.version_option(__version__, "-V", "--version", prog_name="redsession")
@click.pass_context
def cli(
    ctx: click.Context, redis_url: str | None, data_dir: Path | None, log_level: str, json_: bool
) -> None:
    """Operate a redsession store: inspect, export, import, merge and maintain sessions."""
    _configure_logging(log_level.upper())
    state = State(redis_url=redis_url, data_dir=data_dir, json=json_)
    ctx.obj = state
    ctx.call_on_close(state.close)


for _command in (
    sessions.list_sessions,
    sessions.show,
    sessions.export,
    sessions.import_,
    sessions.merge,
    sessions.delete,
    maintenance.cleanup,
    maintenance.dump,
    maintenance.restore,
    maintenance.stats,
    events.events,
    maintenance.repair_index,
    maintenance.rotate_keys,
    maintenance.prune_scripts,
    sql.sql,
    services.server,
    services.worker,
    services.mcp,
    services.api,
    services.up,
    services.version,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="redsession")
