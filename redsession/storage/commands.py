"""The commands a store operation yields, and the decoding of their replies.

A store operation is a generator: it yields these commands and receives their replies,
doing no I/O itself ("sans-IO"). drivers.SyncDriver and AsyncDriver execute them, so the
sync and async managers share every line of logic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")
Arg = str | bytes | int | float
Reply = Any  # what redis-py hands back: bytes, str, int, lists of those


@dataclass(frozen=True)
class Script:
    """A Lua script; run by SHA (EVALSHA), loaded on the first NOSCRIPT."""

    name: str
    source: str
    writes: bool = False  # changes data: with Settings.write_replicas, WAIT follows it
    sha: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# The commands are named tuples: as immutable as frozen dataclasses, and 2.5 times cheaper
# to build (an operation builds one or more on every call).


class Eval(NamedTuple):
    """Run one script (EVALSHA, loading it on NOSCRIPT)."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


class Batch(NamedTuple):
    """Plain commands, pipelined without MULTI; the reply is the list of their replies."""

    commands: tuple[tuple[Arg, ...], ...]
    # Waits on the server (XREAD BLOCK): a driver that multiplexes one connection sends it
    # on a connection of its own, so that the wait holds up no other caller.
    blocking: bool = False


class Scan(NamedTuple):
    """One page of SCAN (on a cluster: over every primary); reply (next cursor or None, keys).

    The cursor is opaque to the caller: an int on one server, {node name: int} on a cluster.
    """

    match: str
    type: str
    page_size: int  # SCAN's COUNT (a tuple has a count method)
    cursor: Any = None


class OnEachPrimary(NamedTuple):
    """One keyless command on every primary (on a single server: on it); reply: their replies."""

    command: tuple[Arg, ...]


Cmd = Eval | Batch | Scan | OnEachPrimary
Op = Generator[Cmd, Any, T]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def flat_to_dict(flat: Sequence[bytes | str]) -> dict[str, str]:
    """A flat [field, value, ...] reply (HGETALL in RESP2) as a dict of text."""
    it = iter(flat)
    if flat and type(flat[0]) is bytes:  # what our clients return (decode_responses off)
        return {k.decode(): v.decode() for k, v in zip(it, it)}  # type: ignore[union-attr]
    return {text(k): text(v) for k, v in zip(it, it)}


def raw_hash(flat: Sequence[Any]) -> dict[str, bytes]:
    """A flat [field, value, ...] reply as a dict: field names as text, values as bytes
    (as stored: some are sealed or JSON), whether or not the client decodes replies."""
    it = iter(flat)
    if flat and type(flat[0]) is bytes:  # what our clients return (decode_responses off)
        return {k.decode(): v for k, v in zip(it, it)}
    return {text(k): v.encode() if isinstance(v, str) else v for k, v in zip(it, it)}


def hash_reply(reply: Reply) -> dict[str, str]:
    """HGETALL's reply as a dict of text, whether RESP2 (flat) or RESP3 (a map)."""
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    return flat_to_dict(reply)


def raw_pairs(reply: Reply) -> list[tuple[Reply, Reply]]:
    """A WITHSCORES reply (RESP2 flat list, RESP3 or ZSCAN pairs) as (member, score) pairs."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, s) for m, s in reply]
    it = iter(reply)
    return list(zip(it, it))


def int_score(raw: Reply) -> int:
    return int(float(raw))
