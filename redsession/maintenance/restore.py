"""Restoring dump files into Redis, and the quarantine for files that cannot be loaded.

One bad file never stops the rest: it is moved (never deleted) to ``sessions/quarantine/``
with a WARNING saying why. A configuration problem (dumps encrypted under no configured
key) stops the restore instead, since it would otherwise quarantine every file.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from redsession import files
from redsession.core import sessions, transfer
from redsession.core.base import Core
from redsession.errors import (
    ConcurrentModification,
    ConfigError,
    DecryptionError,
    InvalidInput,
    SessionExists,
    SessionMerged,
    SessionNotFound,
)
from redsession.maintenance.snapshots import (
    QUARANTINE,
    SUFFIX,
    TMP_MARK,
    Progress,
    ensure_dir,
    sessions_dir,
)
from redsession.model import validation as check
from redsession.model.crypto import TOKEN_PREFIX
from redsession.model.models import SessionExport
from redsession.storage.commands import Op

log = logging.getLogger(__name__)

# A temp file this old belongs to a dump that died; younger ones may be written right now.
STALE_TMP_SECONDS = 60.0
_PROGRESS_EVERY = 100


class RestoreReport(BaseModel):
    """What one restore did with each dump file."""

    model_config = ConfigDict(frozen=True)

    restored: int
    replaced: int
    skipped: int
    expired: int
    quarantined: int


def restore_sessions(
    core: Core,
    source: Path | None = None,
    *,
    overwrite_older: bool = True,
    progress: Progress = None,
) -> Op[RestoreReport]:
    """Load dump files into Redis; one bad file never stops the rest.

    A session missing from Redis is imported with its remaining TTL. One present in Redis is
    replaced only when ``overwrite_older`` and the file's last_activity is newer. Expired
    files are not loaded. A file that cannot be loaded is quarantined with a WARNING log line.

    When ``source`` is the data dir's own sessions folder (the default), restore also tidies
    it: expired files, files of deleted or merged sessions and stale temp files are removed,
    and bad files are moved to the quarantine. Any other ``source`` (an extracted backup, say)
    is only read: bad files are copied to the quarantine and nothing there is removed.
    """
    own = sessions_dir(core.settings.data_dir)
    folder = own if source is None else Path(source)
    if not folder.is_dir():
        if source is None:
            return RestoreReport(restored=0, replaced=0, skipped=0, expired=0, quarantined=0)
        raise InvalidInput(f"{folder} is not a folder of dump files")
    tidy = folder.resolve() == own.resolve()
    counts = dict.fromkeys(RestoreReport.model_fields, 0)
    pending = 0
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if tidy and _is_stale_tmp(entry):
                log.info("removing %s, left by an interrupted dump", name)
                files.unlink(folder / name)
                continue
            if not name.endswith(SUFFIX):
                continue
            outcome = yield from _restore_one(core, folder, name, overwrite_older, tidy)
            counts[outcome] += 1
            if outcome == "quarantined":
                _quarantine(folder / name, own / QUARANTINE, move=tidy)
            pending += 1
            if progress is not None and pending >= _PROGRESS_EVERY:
                progress(pending)
                pending = 0
    if progress is not None and pending:
        progress(pending)
    return RestoreReport(**counts)


def _restore_one(
    core: Core, folder: Path, name: str, overwrite_older: bool, tidy: bool
) -> Op[str]:
    """Load one file; returns the RestoreReport field it counts under."""
    path = folder / name
    stem = name.removesuffix(SUFFIX)
    if not check.SESSION_ID.fullmatch(stem):
        return _bad(path, "its name is not <session id>.json")
    try:
        raw, ident = _read_regular(path)
    except OSError as e:
        return _bad(path, f"it cannot be read as a regular file ({e})")
    cipher = core.cipher
    if raw.startswith(TOKEN_PREFIX) and not cipher.enabled:
        # A configuration problem, not a bad file: stop rather than quarantine every file.
        raise DecryptionError(
            f"dump file {path} is encrypted but no key is configured: set "
            "REDSESSION_ENCRYPTION_KEYS"
        )
    try:
        doc = transfer.parse_export(core, cipher.open(raw, f"dump file {name}"))
    except (InvalidInput, DecryptionError) as e:
        return _bad(path, str(e))
    sid = doc.session.session_id
    if sid != stem:
        return _bad(path, f"it holds session {sid!r}, not {stem!r}")
    if doc.expires_at <= core.clock():
        # Expired sessions are gone for good (the TTL is the retention policy); the dump
        # would remove this file too once cleanup saw the expiry, if Redis still knew of it.
        if tidy:
            _unlink_if_same(path, ident)
        return "expired"
    try:
        live = yield from sessions.get_session(core, sid, 0, None, follow_merged=False)
    except SessionMerged:
        # Merged away: its content lives in the primary, and its file must not come back.
        if tidy:
            _unlink_if_same(path, ident)
        return "skipped"
    except SessionNotFound:
        return (yield from _import_new(core, doc, path, ident, tidy))
    if not overwrite_older or doc.session.last_activity <= live.last_activity:
        return "skipped"
    try:
        # Compare-and-set against the state just compared: a write or a delete that lands in
        # between wins, instead of being overwritten or undone (invariants 3 and 4).
        yield from transfer.import_session_data(
            core, doc, overwrite=True, expect=(live.version, live.total_interactions)
        )
    except (ConcurrentModification, SessionNotFound) as e:
        log.info("not restoring %s: %s", name, e)
        return "skipped"
    except InvalidInput as e:  # it expired in between
        log.info("not restoring %s: %s", name, e)
        return "expired"
    return "replaced"


def _import_new(
    core: Core, doc: SessionExport, path: Path, ident: tuple[int, int], tidy: bool
) -> Op[str]:
    try:
        yield from transfer.import_session_data(core, doc, overwrite=False)
    except SessionExists:
        # A tombstone: the session was deleted or merged after this file was written. Loading
        # it would resurrect it (invariant 4). The tombstone marked it dirty, so the next dump
        # would remove the file anyway; removing it now also keeps a later restore into an
        # emptied Redis (no tombstone left) from resurrecting it.
        if tidy:
            _unlink_if_same(path, ident)
        return "skipped"
    except InvalidInput as e:
        if doc.expires_at <= core.clock():  # expired since the check above
            return "expired"
        return _bad(path, str(e))
    return "restored"


def _bad(path: Path, reason: str) -> str:
    log.warning("quarantining dump file %s: %s", path, reason)
    return "quarantined"


def _read_regular(path: Path) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes and (inode, mtime); refuses symlinks, FIFOs and other non-files."""
    # O_NOFOLLOW: a symlink planted in sessions/ must not make restore read another file.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"not a regular file: {path}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(), (st.st_ino, st.st_mtime_ns)
    finally:
        os.close(fd)


def _quarantine(path: Path, target_dir: Path, *, move: bool) -> None:
    """Move (or copy) ``path`` into ``target_dir``, never overwriting a file already there."""
    try:
        ensure_dir(target_dir)
        target = _free_name(target_dir, path.name)
        if move and path.is_dir() and not path.is_symlink():
            os.rename(path, target)  # directories cannot be hard-linked
        elif move:
            # link + unlink: a no-clobber move (link fails if the name was taken meanwhile).
            os.link(path, target, follow_symlinks=False)
            os.unlink(path)
        elif stat.S_ISREG(path.lstat().st_mode):
            shutil.copyfile(path, target, follow_symlinks=False)
        else:
            log.warning("not copying %s to the quarantine: not a regular file", path)
            return
        files.fsync_dir(target_dir)
        if move:
            files.fsync_dir(path.parent)
    except (OSError, ConfigError) as e:
        # Never delete instead: leaving the file where it is loses nothing.
        log.warning("could not quarantine %s (left in place): %s", path, e)


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    if not os.path.lexists(target):
        return target
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        target = folder / f"{name}.{stamp}" if n == 0 else folder / f"{name}.{stamp}-{n}"
        if not os.path.lexists(target):
            return target
    raise OSError(f"no free name for {name} in {folder}")


def _is_stale_tmp(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    if not (name.startswith(".") and TMP_MARK in name) or name.endswith(SUFFIX):
        return False
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    return age > STALE_TMP_SECONDS


def _unlink_if_same(path: Path, ident: tuple[int, int]) -> None:
    # Only the file that was read: a dump may have replaced it since (os.replace: new inode).
    try:
        st = path.lstat()
        if (st.st_ino, st.st_mtime_ns) == ident:
            os.unlink(path)
    except OSError as e:
        log.warning("could not remove %s: %s", path, e)
