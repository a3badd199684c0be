"""The commands a store operation yields, and the decoding of their replies.

A store operation (store.Store, index_upkeep.IndexUpkeep) is a generator: it yields these
commands and receives their replies, doing no I/O itself ("sans-IO"). drivers.SyncDriver and
AsyncDriver execute them, so the sync and async managers share every line of logic.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from redsession import scripts
from redsession.codec import Reply, flat_to_dict, text

T = TypeVar("T")
Arg = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Eval:
    """Run one script (EVALSHA, loading it on NOSCRIPT)."""

    script: scripts.Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """Plain commands, pipelined without MULTI; the reply is the list of their replies."""

    commands: tuple[tuple[Arg, ...], ...]


@dataclass(frozen=True, slots=True)
class Scan:
    """One page of SCAN (on a cluster: over every primary); reply (next cursor or None, keys).

    The cursor is opaque to the caller: an int on one server, {node name: int} on a cluster.
    """

    match: str
    type: str
    count: int
    cursor: Any = None


@dataclass(frozen=True, slots=True)
class OnEachPrimary:
    """One keyless command on every primary (on a single server: on it); reply: their replies."""

    command: tuple[Arg, ...]


Cmd = Eval | Batch | Scan | OnEachPrimary
Op = Generator[Cmd, Any, T]


def raw_pairs(reply: Reply) -> list[tuple[Reply, Reply]]:
    """A WITHSCORES reply (RESP2 flat list, RESP3 or ZSCAN pairs) as (member, score) pairs."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, s) for m, s in reply]
    it = iter(reply)
    return list(zip(it, it))


def int_score(raw: Reply) -> int:
    return int(float(raw))


def hash_reply(reply: Reply) -> dict[str, str]:
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    return flat_to_dict(reply)
