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


# A Script's code as a Redis function library (Redis 7+), a library of its own named after
# a hash of its code, so that the releases of a rolling deploy each call their own code on
# one server. ``setup`` runs once, when the library loads; the body on every call, with KEYS
# and ARGV set as EVAL sets them. Each script is registered twice: as a write, and with the
# no-writes flag for the calls that only read (Eval.readonly), which Redis lets run where
# writes are refused (at maxmemory, on a replica) as it would a plain read.
_LIBRARY = """#!lua name={library}
local KEYS, ARGV
{setup}
local function run(keys, args)
  KEYS, ARGV = keys, args
{body}
end
redis.register_function('{function}', run)
redis.register_function{{function_name='{function}_ro', callback=run, flags={{'no-writes'}}}}
"""


@dataclass(frozen=True)
class Script:
    """A Lua script, run as a Redis function (FCALL), loaded on the first "Function not
    found" (a server that lost its functions, or a new node). See _LIBRARY."""

    name: str
    body: str  # runs on every call; KEYS and ARGV as in EVAL
    setup: str = ""  # runs once, at load: the local functions and variables the body uses
    writes: bool = False  # changes data: with Settings.write_replicas, WAIT follows it
    function: str = field(init=False, repr=False)  # FCALL's name of it
    readonly_function: str = field(init=False, repr=False)  # of its no-writes twin
    library_name: str = field(init=False, repr=False)  # rs_<hash>
    library: str = field(init=False, repr=False)  # FUNCTION LOAD's source

    def __post_init__(self) -> None:
        code = f"{self.name}\0{self.setup}\0{self.body}\0{_LIBRARY}".encode()
        digest = hashlib.sha1(code).hexdigest()[:16]
        function, name = f"rs_{self.name}_{digest}", f"rs_{digest}"
        library = _LIBRARY.format(
            library=name, setup=self.setup, body=self.body, function=function
        )
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "readonly_function", function + "_ro")
        object.__setattr__(self, "library_name", name)
        object.__setattr__(self, "library", library)


# The commands are named tuples: as immutable as frozen dataclasses, and 2.5 times cheaper
# to build (an operation builds one or more on every call).


class Eval(NamedTuple):
    """Run one script (FCALL, loading its library when the server has not got it)."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]
    readonly: bool = False  # this call only reads: its no-writes function

    def fcall(self) -> tuple[Arg, ...]:
        """The FCALL command."""
        s = self.script
        name = s.readonly_function if self.readonly else s.function
        return ("FCALL", name, len(self.keys), *self.keys, *self.args)


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
