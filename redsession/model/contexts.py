"""Pure functions on contexts: a patch over a context, and two contexts merged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def apply_patch(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``: dicts merge recursively, None deletes, anything else replaces."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping):
            prev = out.get(k)
            out[k] = apply_patch(prev if isinstance(prev, Mapping) else {}, v)
        else:
            out[k] = v
    return out


def overlay(winner: Mapping[str, Any], loser: Mapping[str, Any]) -> dict[str, Any]:
    """Both contexts deep-merged; on a conflict ``winner``'s value stays (None included)."""
    out = dict(loser)
    for k, v in winner.items():
        prev = out.get(k)
        if isinstance(v, Mapping) and isinstance(prev, Mapping):
            out[k] = overlay(v, prev)
        else:
            out[k] = v
    return out
