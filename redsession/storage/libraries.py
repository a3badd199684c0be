"""The scripts' function libraries on the server: this release's, and retiring the others.

Each script is a library named after a hash of its code (commands.Script), so every release
that changes a script adds libraries, which persist with the data after the release is
gone (~570 KB a release). ``prune`` deletes the libraries of other releases: those named
as ours are (``rs_`` and 16 hex digits) that no script of this release has. Deleting one
that an older instance still calls is safe: it loads it again on its next call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from redsession.storage.commands import OnEachPrimary, Op, Reply, Script, text

OURS = re.compile(r"rs_[0-9a-f]{16}")


def release_scripts() -> list[Script]:
    """Every script of this release."""
    from redsession.storage import checkpoints, events, indexes, scripts, store

    modules = (scripts, indexes, store, events, checkpoints)
    return [v for m in modules for v in vars(m).values() if isinstance(v, Script)]


@dataclass(frozen=True)
class PruneReport:
    """What ``prune`` found on the server (every primary of a cluster), and did."""

    kept: list[str] = field(default_factory=list)  # this release's libraries, loaded
    deleted: list[str] = field(default_factory=list)  # other releases' (or would be: dry run)
    # Other releases' that only some primaries hold: FUNCTION DELETE would fail on the
    # others, so they are left for an operator (docs/operations.md).
    partial: list[str] = field(default_factory=list)


def prune(dry_run: bool = False) -> Op[PruneReport]:
    """Delete the libraries of other releases (see the module's docstring)."""
    replies = yield OnEachPrimary(("FUNCTION", "LIST", "LIBRARYNAME", "rs_*"))
    held = [_names(r) for r in replies]
    everywhere, anywhere = set.intersection(*held), set.union(*held)
    current = {s.library_name for s in release_scripts()}
    stale = sorted(n for n in everywhere if n not in current)
    if not dry_run:
        for name in stale:
            yield OnEachPrimary(("FUNCTION", "DELETE", name))
    return PruneReport(
        kept=sorted(anywhere & current),
        deleted=stale,
        partial=sorted(n for n in anywhere - everywhere if n not in current),
    )


def _names(reply: Sequence[Reply]) -> set[str]:
    """The library names of one server's FUNCTION LIST reply that are named as ours."""
    names = set()
    for lib in reply:
        info = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2]))
        name = text(next(v for k, v in info.items() if text(k) == "library_name"))
        if OURS.fullmatch(name):
            names.add(name)
    return names
