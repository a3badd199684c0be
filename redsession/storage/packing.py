"""Commands packed in one call to hiredis, for the connections redsession's clients make.

redis-py 8.2 encodes each argument of a command in Python before hiredis packs it (so that
a client's own ``encoding`` applies), and first scans the arguments for memoryviews: about
140,000 instructions for a command of 20 arguments, a third of what log_interaction costs
the client. redsession's clients keep redis-py's defaults (UTF-8, strict errors), which are
exactly what hiredis applies itself, so the command goes to hiredis as it is and comes out
byte for byte as redis-py's own packer would send it (tests/test_packing.py checks that).

The packing is a property of the connection class: ``packing(cls)`` returns a subclass of a
redis-py connection class, sync or asyncio, that packs this way. storage/connection.py puts
it into every pool and cluster it builds; a client built by the caller is left as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis.asyncio.connection
from redis._parsers.encoders import Encoder
from redis.exceptions import DataError

pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command
except ImportError:  # hiredis is a dependency, but a platform may lack its wheel
    pack_command = None

_ENCODER = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]  # a default client's


def pack(*args: Any) -> list[bytes]:
    """One command as RESP, as redis-py packs it for a client with the default encoding."""
    head = args[0]
    # A command name of several words ("CLIENT KILL") goes out as one argument per word.
    if isinstance(head, str):
        args = (*head.encode().split(), *args[1:])
    elif b" " in head:
        args = (*head.split(), *args[1:])
    try:
        return [pack_command(args)]  # type: ignore[misc]  # packing() checked it is not None
    except TypeError as e:
        # A hiredis older than 3.0 takes neither bytearray nor memoryview: copy them to bytes.
        # Anything else that hiredis refused, redis-py's encoder names (a bool, None, ...).
        copied = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
        for arg in copied:
            _ENCODER.encode(arg)  # type: ignore[no-untyped-call]
        try:
            return [pack_command(copied)]  # type: ignore[misc]
        except TypeError:
            raise DataError(str(e)) from e


class _Packer:
    """A sync connection's ``command_packer``: anything with ``pack`` (this class will do)."""

    pack = staticmethod(pack)


class _SyncPacking:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["command_packer"] = _Packer
        super().__init__(*args, **kwargs)


class _AsyncPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        return pack(*args)


@functools.cache
def packing(cls: type[Any]) -> type[Any]:
    """``cls`` (a redis-py connection class), packing each command in one call to hiredis.

    Without hiredis's packer, ``cls`` itself: redis-py then packs in Python, as it would.
    """
    if pack_command is None or issubclass(cls, (_SyncPacking, _AsyncPacking)):
        return cls
    if issubclass(cls, redis.asyncio.connection.AbstractConnection):
        mixin: type[Any] = _AsyncPacking
    else:
        mixin = _SyncPacking
    return type(cls.__name__, (mixin, cls), {"__module__": __name__})


__all__ = ["pack", "packing"]
