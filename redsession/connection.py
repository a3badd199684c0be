"""Building redis-py clients from a URL and Settings."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from redsession.config import Settings
from redsession.errors import ConfigError

SCHEMES = ("redis://", "rediss://", "unix://")


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        # No transparent retries: a script that ran but whose reply was lost would run
        # twice (a duplicated interaction). Callers see StorageUnavailable and decide.
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
    }


def _url(url: str | None, settings: Settings) -> str:
    url = url or settings.redis_url
    if not url:
        raise ConfigError("no Redis URL: pass one or set REDSESSION_REDIS_URL")
    if not url.startswith(SCHEMES):
        raise ConfigError(f"unsupported Redis URL {url!r}: use one of {', '.join(SCHEMES)}")
    return url


def sync_client(url: str | None, settings: Settings) -> redis.Redis:
    try:
        return redis.Redis.from_url(_url(url, settings), **_options(settings))
    except ValueError as e:
        raise ConfigError(f"bad Redis URL: {e}") from e


def async_client(url: str | None, settings: Settings) -> redis.asyncio.Redis:
    try:
        return redis.asyncio.Redis.from_url(_url(url, settings), **_options(settings))
    except ValueError as e:
        raise ConfigError(f"bad Redis URL: {e}") from e
