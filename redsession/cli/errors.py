"""Exit codes, and turning a RedsessionError into one line on stderr with a hint."""

from __future__ import annotations

import click

from redsession.errors import (
    ConfigError,
    DecryptionError,
    InvalidInput,
    PermissionDenied,
    RedsessionError,
    SessionNotFound,
    SqlError,
    StorageError,
    StorageUnavailable,
)

EXIT_ERROR = 1
EXIT_USAGE = 2  # also click's own code for a bad option or argument
EXIT_NOT_FOUND = 3
EXIT_PERMISSION = 4
EXIT_STORAGE = 5
EXIT_BAD_INPUT = 6


class CliError(click.ClickException):
    """A failure shown as ``Error: <message>`` on stderr, exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


class OneLineCommand(click.Command):
    """A command whose bad options and arguments get one line on stderr, as every other
    error does, instead of click's usage block."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if ctx.resilient_parsing:
                raise
            name = ctx.command_path
            raise CliError(f"{name}: {e.format_message()} (see {name} --help)", EXIT_USAGE) from e


def classify(error: RedsessionError) -> tuple[int, str]:
    """The exit code for ``error`` and what the user can do about it ("" if nothing useful)."""
    # Order matters: PermissionDenied is a SessionNotFound, StorageUnavailable a StorageError.
    if isinstance(error, PermissionDenied):
        return EXIT_PERMISSION, ""
    if isinstance(error, SessionNotFound):
        return EXIT_NOT_FOUND, "`redsession list` shows the live sessions"
    if isinstance(error, StorageUnavailable):
        return EXIT_STORAGE, "check --redis-url (or REDSESSION_REDIS_URL) and that Redis is up"
    if isinstance(error, StorageError):
        return EXIT_STORAGE, "see the Redis server's log"
    if isinstance(error, SqlError):
        return EXIT_ERROR, "check --sql-url (or REDSESSION_SQL_URL) and that the database is up"
    if isinstance(error, ConfigError):
        return EXIT_USAGE, "see `redsession --help`"
    if isinstance(error, DecryptionError):
        # A key missing from REDSESSION_ENCRYPTION_KEYS; the message says which setting.
        return EXIT_USAGE, ""
    if isinstance(error, InvalidInput):
        return EXIT_USAGE, ""
    return EXIT_ERROR, ""


def to_cli_error(error: RedsessionError) -> CliError:
    code, hint = classify(error)
    message = (str(error) or type(error).__name__).rstrip(".")
    return CliError(f"{message}; {hint}" if hint else message, code)


def bad_input(where: str, error: BaseException | str) -> CliError:
    """An unreadable or invalid input file: exit code 6."""
    return CliError(f"{where}: {error}; fix the file and try again", EXIT_BAD_INPUT)
