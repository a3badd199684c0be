"""What the global options give every command: Settings, a SessionManager, the output mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from redsession.config import Settings
from redsession.errors import ConfigError
from redsession.manager import SessionManager
from redsession.model.validation import problems


class State:
    """Built from the global options; Settings and the manager are made on first use."""

    def __init__(self, *, redis_url: str | None, data_dir: Path | None, json: bool) -> None:
        # Only options actually given: the rest still come from REDSESSION_* variables.
        self.given: dict[str, Any] = {}
        if redis_url is not None:
            self.given["redis_url"] = redis_url
        if data_dir is not None:
            self.given["data_dir"] = data_dir
        self.json = json
        self._settings: Settings | None = None
        self._manager: SessionManager | None = None

    def settings(self, **overrides: Any) -> Settings:
        """Settings from the global options, the environment, and ``overrides`` (not None)."""
        extra = {k: v for k, v in overrides.items() if v is not None}
        if self._settings is not None and not extra:
            return self._settings
        try:
            settings = Settings(**self.given, **extra)
        except ValidationError as e:
            raise ConfigError(f"invalid setting {problems(e)}") from e
        if not extra:
            self._settings = settings
        return settings

    @property
    def manager(self) -> SessionManager:
        if self._manager is None:
            self.settings()  # a bad setting fails here, as a ConfigError
            self._manager = SessionManager.from_url(**self.given)
        return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def get_state() -> State:
    state = click.get_current_context().find_object(State)
    if state is None:  # a command invoked without the group, e.g. from a test
        raise click.UsageError("run commands through the redsession group")
    return state


def _json_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        get_state().json = True


json_option = click.option(
    "--json",
    is_flag=True,
    expose_value=False,
    callback=_json_flag,
    help="Print machine-readable JSON (as the global --json does).",
)
