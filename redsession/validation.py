"""Checks on everything that comes from a caller, before it reaches Redis or the disk."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterable, Mapping

import orjson

from redsession.errors import InvalidInput, InvalidSessionId, PayloadTooLarge

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# User ids also allow the characters of e-mail addresses and "tenant:user" forms; never
# braces (they are Redis Cluster hash tags) or whitespace.
USER_ID = re.compile(r"[A-Za-z0-9_.@+=:-]{1,256}")
_SCALARS = (str, int, bool, type(None))


def new_session_id() -> str:
    """128 random bits from the OS CSPRNG, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def new_interaction_id() -> str:
    return secrets.token_urlsafe(12)


def session_id(value: object) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise InvalidSessionId(
            f"invalid session id {_show(value)}: use 1-128 characters from A-Z a-z 0-9 _ -"
        )
    return value


def user_id(value: object) -> str:
    if not isinstance(value, str) or not USER_ID.fullmatch(value):
        raise InvalidSessionId(
            f"invalid user id {_show(value)}: use 1-256 characters from A-Z a-z 0-9 _ . @ + = : -"
        )
    return value


def text(value: object, what: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    # A str of n code points is at most 4n UTF-8 bytes: only long strings need encoding.
    if len(value) * 4 > max_bytes:
        try:
            size = len(value.encode())
        except UnicodeEncodeError as e:
            raise InvalidInput(f"{what} is not valid Unicode (lone surrogate)") from e
        if size > max_bytes:
            raise PayloadTooLarge(f"{what} is {size} bytes; the limit is {max_bytes}")
    return value


def topics(values: object, max_topics: int) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidInput("topics must be a list of strings")
    out: list[str] = []
    for t in values:
        if not isinstance(t, str) or not t or len(t) > 256:
            raise InvalidInput(f"topic {_show(t)} must be a non-empty string of at most 256 chars")
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
                    raise InvalidInput(f"{what} has a non-string key {_show(k)}")
                stack.append((v, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
        else:
            raise InvalidInput(f"{what} holds a {type(node).__name__}, which is not JSON")


def _show(value: object) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."
