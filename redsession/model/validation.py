"""Checks on everything that comes from a caller, before it reaches Redis or the disk."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import reprlib
import secrets
from collections.abc import Iterable, Mapping

import orjson
from pydantic import ValidationError

from redsession.errors import InvalidInput, InvalidSessionId, PayloadTooLarge

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# User ids also allow the characters of e-mail addresses and "tenant:user" forms; never
# braces (they are Redis Cluster hash tags) or whitespace.
USER_ID = re.compile(r"[A-Za-z0-9_.@+=:-]{1,256}")
_SCALARS = (str, int, bool, type(None))
_PLAIN = frozenset(_SCALARS)  # exactly these types need no further look (most values)
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def new_session_id() -> str:
    """128 random bits from the OS CSPRNG, URL-safe (22 characters).

    Never starting with "-": such an id would read as an option on every command line.
    """
    while True:
        sid = secrets.token_urlsafe(16)
        if sid[0] != "-":
            return sid


def _derived(size: int, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(("redsession", *parts)).encode()).digest()
    derived = base64.urlsafe_b64encode(digest[:size]).rstrip(b"=").decode()
    return "A" + derived[1:] if derived[0] == "-" else derived  # never an option


def session_id_for_op(user_id: str, op: str) -> str:
    """The id a create with a caller's operation id (and no session id) gives its session:
    derived from both, so the call repeated makes the same session, not a second one."""
    return _derived(16, "create", user_id, op)


def entry_id_for_op(op: str, n: int) -> str:
    """The id of the ``n``-th entry a write with a caller's operation id appends: the call
    repeated returns the entries it stored the first time."""
    return _derived(12, "entry", op, str(n))


def new_entry_id() -> str:
    """An interaction's or item's id: 96 random bits, url-safe (16 characters)."""
    return secrets.token_urlsafe(12)


OP_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def op_id(value: object) -> str:
    """An operation id a caller gives a write, so that repeating the call is safe."""
    if not isinstance(value, str) or not OP_ID.fullmatch(value):
        raise InvalidInput(
            f"invalid operation id {show(value)}: use 1-128 characters from A-Z a-z 0-9 _ . : -"
        )
    return value


def session_id(value: object) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise InvalidSessionId(
            f"invalid session id {show(value)}: use 1-128 characters from A-Z a-z 0-9 _ -"
        )
    return value


def entry_id(value: object) -> str:
    """A history entry's id: the alphabet of session ids (it is written into the record)."""
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise InvalidInput(
            f"invalid entry id {show(value)}: use 1-128 characters from A-Z a-z 0-9 _ -"
        )
    return value


def user_id(value: object) -> str:
    if not isinstance(value, str) or not USER_ID.fullmatch(value):
        raise InvalidSessionId(
            f"invalid user id {show(value)}: use 1-256 characters from A-Z a-z 0-9 _ . @ + = : -"
        )
    return value


def text(value: object, what: str, max_bytes: int) -> str:
    """A str that is valid Unicode (no lone surrogate) and at most ``max_bytes`` as UTF-8."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    if value.isascii():  # most text, checked in C: one byte a character, nothing to encode
        size = len(value)
    else:
        try:
            size = len(value.encode())
        except UnicodeEncodeError as e:
            raise InvalidInput(f"{what} is not valid Unicode (lone surrogate)") from e
    if size > max_bytes:
        raise PayloadTooLarge(f"{what} is {size} bytes; the limit is {max_bytes}")
    return value


def integer(value: object, what: str, minimum: int | None = None) -> int:
    """An int (not a bool) small enough to be a Redis argument, and >= minimum if given."""
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 2**53:
        raise InvalidInput(f"{what} must be an integer, not {show(value)}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{what} must be at least {minimum}, not {value}")
    return value


def stamped_ids(entries: object) -> list[tuple[str, int]]:
    """(session id, stamp) pairs as changed_sessions returns them; ids are not checked."""
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
        raise InvalidInput("entries must be a list of (session id, stamp) pairs")
    out = []
    for e in entries:
        if not isinstance(e, (tuple, list)) or len(e) != 2 or not isinstance(e[0], str):
            raise InvalidInput(f"entry {show(e)} is not a (session id, stamp) pair")
        if not e[0].isascii():  # ids from Redis are UTF-8; only a caller can pass surrogates
            try:
                e[0].encode()
            except UnicodeEncodeError:
                raise InvalidInput(f"entry {show(e)} holds a lone surrogate") from None
        out.append((e[0], integer(e[1], "stamp")))
    return out


def topics(values: object, max_topics: int) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidInput("topics must be a list of strings")
    out: list[str] = []
    for t in values:
        if not isinstance(t, str) or not t or len(t) > 256:
            raise InvalidInput(f"topic {show(t)} must be a non-empty string of at most 256 chars")
        text(t, "a topic", 1024)
        if t not in out:
            out.append(t)
    if len(out) > max_topics:
        raise PayloadTooLarge(f"{len(out)} topics; the limit is {max_topics}")
    return out


def json_object(value: object, what: str, *, max_bytes: int, max_depth: int) -> bytes:
    """Encode a JSON object (str keys; str/int/float/bool/None/list/dict values) with limits."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a JSON object (a dict), not {type(value).__name__}")
    _check_tree(value, what, max_depth)
    try:
        data = orjson.dumps(value)
    except TypeError as e:  # orjson: >64-bit ints, lone surrogates
        raise InvalidInput(f"{what} is not JSON: {e}") from e
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{what} is {len(data)} bytes as JSON; the limit is {max_bytes}")
    return data


def _check_tree(root: object, what: str, max_depth: int) -> None:
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _SCALARS):
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidInput(f"{what} holds {node}, which JSON cannot represent")
            continue
        if depth > max_depth:
            raise PayloadTooLarge(f"{what} is nested deeper than {max_depth} levels")
        if isinstance(node, Mapping):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise InvalidInput(f"{what} has a non-string key {show(k)}")
                if type(v) not in _PLAIN:
                    stack.append((v, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node if type(v) not in _PLAIN)
        else:
            raise InvalidInput(f"{what} holds a {type(node).__name__}, which is not JSON")


def show(value: object) -> str:
    """A short repr of a caller's value for an error message, whatever its size or depth."""
    # reprlib bounds the depth too: repr() of a deeply nested value raises RecursionError.
    r = _REPR.repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def problems(e: ValidationError, *, most: int = 3) -> str:
    """A pydantic ValidationError as one line: "where: what; ..." for the first ``most``.

    The rejected values are not shown: they are the caller's data, and may be huge.
    """
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
        for err in e.errors(include_url=False, include_input=False)[:most]
    ]
    more = e.error_count() - len(parts)
    return " ".join("; ".join(parts).splitlines()) + (f" (and {more} more)" if more > 0 else "")
