"""Crash-safe JSON dumps of changed sessions (restore.py loads them back).

Each dumped session is ``<data_dir>/sessions/<session_id>.json``, holding its export document
(models.SessionExport), sealed as a whole when encryption is on. Like every core operation,
a dump is a generator of store commands (the managers run it); its file I/O is inline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from redsession import files
from redsession.core import transfer
from redsession.core.base import Core
from redsession.errors import RedsessionError, SessionNotFound, StorageError
from redsession.model import validation as check
from redsession.storage.commands import Op

log = logging.getLogger(__name__)

SUFFIX = ".json"
QUARANTINE = "quarantine"
# A temp file is ".<sid>.json.tmp-<random>.tmp": hidden, and never ending in .json, so no
# listing of dumps (or glob "*.json") can mistake it for one.
TMP_MARK = ".json.tmp-"

Progress = Callable[[int], None] | None


class DumpReport(BaseModel):
    """What one dump run did: files written, files removed, sessions left for the next run."""

    model_config = ConfigDict(frozen=True)

    written: int
    removed: int
    failed: int


def sessions_dir(data_dir: Path) -> Path:
    """Where dump files live: ``<data_dir>/sessions``."""
    return Path(data_dir) / "sessions"


def dump_path(folder: Path, sid: str) -> Path:
    """The dump file of session ``sid`` in ``folder`` (``sid`` must be a valid session id)."""
    return folder / f"{sid}{SUFFIX}"


def dump_sessions(
    core: Core, data_dir: Path, *, batch: int = 500, progress: Progress = None
) -> Op[DumpReport]:
    """Write every session changed since its last dump; remove files of sessions now gone.

    Streams batch by batch from the dirty index, so memory stays bounded whatever the
    number of changed sessions. A session's mark is cleared only once its file (or its
    removal) is durable on disk. Sessions that change during the run, or fail, stay marked
    for the next run. Run one dumper at a time (the worker leader does).
    """
    batch = check.integer(batch, "batch", 1)
    # Refuses a symlink planted at sessions/: the files and their temp files go in there.
    folder = files.ensure_dir(sessions_dir(data_dir), data_dir)
    upkeep = core.store.upkeep
    # Changes after this instant wait for the next run, so that a steady write load cannot
    # keep one run going forever.
    cutoff = core.now()
    written = removed = 0
    # Failed entries keep their mark and their (oldest) place in the index: read past them.
    skip = 0
    while True:
        entries = (yield from upkeep.dirty(skip + batch))[skip:]
        due = [e for e in entries if e[1] <= cutoff]
        done: list[tuple[str, int]] = []
        wrote_here = removed_here = 0
        for sid, stamp in due:
            try:
                outcome = yield from _dump_one(core, folder, sid)
            except StorageError:
                raise  # Redis down or refusing: stop (StorageUnavailable is also an OSError)
            except (OSError, RedsessionError) as e:
                log.warning("could not dump session %r (left for the next dump): %s", sid, e)
                skip += 1
                continue
            wrote_here += outcome == "written"
            removed_here += outcome == "removed"
            done.append((sid, stamp))
        if wrote_here or removed_here:
            try:
                files.fsync_dir(folder)
            except OSError as e:
                # The renames may not be durable: keep every mark so the next run redoes them.
                log.warning("could not fsync %s; the batch stays marked: %s", folder, e)
                skip += len(done)
                wrote_here = removed_here = 0
                done = []
        written += wrote_here
        removed += removed_here
        if done:
            yield from upkeep.clear_dirty(done)
        if progress is not None and due:
            progress(len(due))
        if len(due) < len(entries) or len(entries) < batch:
            break
        if skip >= batch:
            log.warning("dump stopped after %d failures; the rest waits for the next run", skip)
            break
    return DumpReport(written=written, removed=removed, failed=skip)


def _dump_one(core: Core, folder: Path, sid: str) -> Op[str]:
    """'written', 'removed', 'gone' (no file to remove) or 'junk' (not a session id)."""
    if not check.SESSION_ID.fullmatch(sid):
        # Not from redsession: no file can be named after it, and keeping the mark would
        # only make every run skip past it.
        log.warning("dropping invalid id %r from the dump index", sid)
        return "junk"
    try:
        doc = yield from transfer.export(core, sid, None, follow_merged=False)
    except SessionNotFound:  # deleted, merged (a subclass) or expired: its file goes too
        return "removed" if files.unlink(dump_path(folder, sid)) else "gone"
    data = core.cipher.seal(doc.model_dump_json().encode())
    # The folder is fsynced once per batch, before the marks are cleared.
    tmp = f".{sid}{TMP_MARK}"
    files.write_atomic(dump_path(folder, sid), data, tmp_prefix=tmp, sync_dir=False)
    return "written"


def remove_dump_files(data_dir: Path, session_ids: Iterable[str]) -> int:
    """Remove the dump files of these sessions (those that have one); returns how many.

    An id that is not a valid session id has no file (none was ever named after it).
    """
    folder = files.ensure_dir(sessions_dir(data_dir), data_dir, create=False)
    n = sum(
        files.unlink(dump_path(folder, s)) for s in session_ids if check.SESSION_ID.fullmatch(s)
    )
    if n:
        files.fsync_dir(folder)
    return n
