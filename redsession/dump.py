"""Crash-safe JSON dumps of changed sessions, and restoring them into Redis.

Each dumped session is ``<data_dir>/sessions/<session_id>.json``, holding its export document
(models.SessionExport). Files that fail to load are moved to ``sessions/quarantine/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from redsession import validation as check
from redsession.crypto import TOKEN_PREFIX
from redsession.errors import (
    ConcurrentModification,
    ConfigError,
    DecryptionError,
    InvalidInput,
    RedsessionError,
    SessionExists,
    SessionNotFound,
    StorageError,
)
from redsession.manager import SessionManager
from redsession.models import SessionExport, to_us

log = logging.getLogger(__name__)

SUFFIX = ".json"
QUARANTINE = "quarantine"
# A temp file is ".<sid>.json.tmp-<random>": hidden, and never ending in .json, so no listing
# of dumps (or glob "*.json") can mistake it for one.
_TMP_MARK = ".json.tmp-"
# A temp file this old belongs to a dump that died; younger ones may be written right now.
STALE_TMP_SECONDS = 60.0
_PROGRESS_EVERY = 100

Progress = Callable[[int], None] | None


class DumpReport(BaseModel):
    """What one dump run did: files written, files removed, sessions left for the next run."""

    model_config = ConfigDict(frozen=True)

    written: int
    removed: int
    failed: int


class RestoreReport(BaseModel):
    """What one restore did with each dump file."""

    model_config = ConfigDict(frozen=True)

    restored: int
    replaced: int
    skipped: int
    expired: int
    quarantined: int


def sessions_dir(data_dir: Path) -> Path:
    """Where dump files live: ``<data_dir>/sessions``."""
    return Path(data_dir) / "sessions"


# -- dump ----------------------------------------------------------------------------------


def dump_sessions(
    manager: SessionManager,
    data_dir: Path | None = None,
    *,
    batch: int = 500,
    progress: Progress = None,
) -> DumpReport:
    """Write every session changed since its last dump; remove files of sessions now gone.

    Streams batch by batch from the dirty index, so memory stays bounded whatever the
    number of changed sessions. A session's mark is cleared only once its file (or its
    removal) is durable on disk. Sessions that change during the run, or fail, stay marked
    for the next run. Run one dumper at a time (the worker leader does).
    """
    if batch < 1:
        raise InvalidInput(f"batch must be at least 1, not {batch!r}")
    folder = _ensure_dir(sessions_dir(manager.settings.data_dir if data_dir is None else data_dir))
    # Changes after this instant wait for the next run, so that a steady write load cannot
    # keep one run going forever.
    cutoff = to_us(manager.core.clock())
    written = removed = failed = 0
    # Failed entries keep their mark and their (oldest) place in the index: read past them.
    skip = 0
    while True:
        entries = manager.changed_sessions(skip + batch)[skip:]
        due = [e for e in entries if e[1] <= cutoff]
        done: list[tuple[str, int]] = []
        wrote_here = removed_here = 0
        for sid, stamp in due:
            try:
                outcome = _dump_one(manager, folder, sid)
            except StorageError:
                raise  # Redis down or refusing: stop (StorageUnavailable is also an OSError)
            except (OSError, RedsessionError) as e:
                log.warning("could not dump session %r (left for the next dump): %s", sid, e)
                skip += 1
                continue
            written += outcome == "written"
            removed += outcome == "removed"
            wrote_here += outcome == "written"
            removed_here += outcome == "removed"
            done.append((sid, stamp))
        if wrote_here or removed_here:
            try:
                _fsync_dir(folder)
            except OSError as e:
                # The renames may not be durable: keep every mark so the next run redoes them.
                log.warning("could not fsync %s; the batch stays marked: %s", folder, e)
                skip += len(done)
                written -= wrote_here
                removed -= removed_here
                done = []
        if done:
            manager.mark_dumped(done)
        if progress is not None and due:
            progress(len(due))
        failed = skip
        if len(due) < len(entries) or len(entries) < batch:
            break
        if skip >= batch:
            log.warning("dump stopped after %d failures; the rest waits for the next run", skip)
            break
    return DumpReport(written=written, removed=removed, failed=failed)


def _dump_one(manager: SessionManager, folder: Path, sid: str) -> str:
    """'written', 'removed', 'gone' (no file to remove) or 'junk' (not a session id)."""
    if not check.SESSION_ID.fullmatch(sid):
        # Not from redsession: no file can be named after it, and keeping the mark would
        # only make every run skip past it.
        log.warning("dropping invalid id %r from the dump index", sid)
        return "junk"
    try:
        doc = manager.export_session(sid)
    except SessionNotFound:  # deleted, merged (a subclass) or expired: its file goes too
        doc = None
    if doc is None or doc.session.session_id != sid:
        # export follows a merged id to its primary, so a different id means this one is gone.
        return "removed" if _unlink(folder / f"{sid}{SUFFIX}") else "gone"
    _write_atomic(folder, sid, manager.core.cipher.seal(doc.model_dump_json().encode()))
    return "written"


def _write_atomic(folder: Path, sid: str, data: bytes) -> None:
    # mkstemp: O_EXCL, mode 0600 (conversations are personal), in the target's folder so that
    # os.replace is a rename on one file system, hence atomic.
    fd, tmp = tempfile.mkstemp(prefix=f".{sid}{_TMP_MARK}", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / f"{sid}{SUFFIX}")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_dump_files(data_dir: Path, session_ids: Iterable[str]) -> int:
    """Remove the dump files of these sessions (those that have one); returns how many."""
    folder = sessions_dir(data_dir)
    n = 0
    for sid in session_ids:
        n += _unlink(folder / f"{check.session_id(sid)}{SUFFIX}")
    if n:
        _fsync_dir(folder)
    return n


# -- restore -------------------------------------------------------------------------------


def restore_sessions(
    manager: SessionManager,
    source: Path | None = None,
    *,
    overwrite_older: bool = True,
    progress: Progress = None,
) -> RestoreReport:
    """Load dump files into Redis; one bad file never stops the rest.

    A session missing from Redis is imported with its remaining TTL. One present in Redis is
    replaced only when ``overwrite_older`` and the file's last_activity is newer. Expired
    files are not loaded. A file that cannot be loaded is quarantined with a WARNING log line.

    When ``source`` is the data dir's own sessions folder (the default), restore also tidies
    it: expired files, files of deleted or merged sessions and stale temp files are removed,
    and bad files are moved to the quarantine. Any other ``source`` (an extracted backup, say)
    is only read: bad files are copied to the quarantine and nothing there is removed.
    """
    data_dir = manager.settings.data_dir
    own = sessions_dir(data_dir)
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
                _unlink(folder / name)
                continue
            if not name.endswith(SUFFIX):
                continue
            outcome = _restore_one(manager, folder, name, overwrite_older, tidy)
            counts[outcome] += 1
            if outcome == "quarantined":
                _quarantine(folder / name, sessions_dir(data_dir) / QUARANTINE, move=tidy)
            pending += 1
            if progress is not None and pending >= _PROGRESS_EVERY:
                progress(pending)
                pending = 0
    if progress is not None and pending:
        progress(pending)
    return RestoreReport(**counts)


def _restore_one(
    manager: SessionManager, folder: Path, name: str, overwrite_older: bool, tidy: bool
) -> str:
    """Load one file; returns the RestoreReport field it counts under."""
    path = folder / name
    stem = name.removesuffix(SUFFIX)
    if not check.SESSION_ID.fullmatch(stem):
        return _bad(path, "its name is not <session id>.json")
    try:
        raw, ident = _read_regular(path)
    except OSError as e:
        return _bad(path, f"it cannot be read as a regular file ({e})")
    cipher = manager.core.cipher
    if raw.startswith(TOKEN_PREFIX) and not cipher.enabled:
        # A configuration problem, not a bad file: stop rather than quarantine every file.
        raise DecryptionError(
            f"dump file {path} is encrypted but no key is configured: set "
            "REDSESSION_ENCRYPTION_KEYS"
        )
    try:
        doc = manager.core.parse_export(cipher.open(raw, f"dump file {name}"))
    except (InvalidInput, DecryptionError) as e:
        return _bad(path, str(e))
    sid = doc.session.session_id
    if sid != stem:
        return _bad(path, f"it holds session {sid!r}, not {stem!r}")
    now = manager.core.clock()
    if doc.expires_at <= now:
        # Expired sessions are gone for good (the TTL is the retention policy); the dump
        # would remove this file too once cleanup saw the expiry, if Redis still knew of it.
        if tidy:
            _unlink_if_same(path, ident)
        return "expired"
    try:
        live = manager.get_session(sid)
    except SessionNotFound:
        return _import_new(manager, doc, path, ident, tidy)
    if live.session_id != sid:
        # get_session follows a merged id to its primary: the id was merged away.
        if tidy:
            _unlink_if_same(path, ident)
        return "skipped"
    if not overwrite_older or doc.session.last_activity <= live.last_activity:
        return "skipped"
    try:
        # Compare-and-set against the state just compared: a write or a delete that lands in
        # between wins, instead of being overwritten or undone (invariants 3 and 4).
        manager.import_session_data(
            doc, overwrite=True, expect=(live.version, live.total_interactions)
        )
    except (ConcurrentModification, SessionNotFound) as e:
        log.info("not restoring %s: %s", name, e)
        return "skipped"
    except InvalidInput as e:  # it expired in between
        log.info("not restoring %s: %s", name, e)
        return "expired"
    return "replaced"


def _import_new(
    manager: SessionManager,
    doc: SessionExport,
    path: Path,
    ident: tuple[int, int],
    tidy: bool,
) -> str:
    try:
        manager.import_session_data(doc)
    except SessionExists:
        # A tombstone: the session was deleted or merged after this file was written. Loading
        # it would resurrect it (invariant 4). The tombstone marked it dirty, so the next dump
        # would remove the file anyway; removing it now also keeps a later restore into an
        # emptied Redis (no tombstone left) from resurrecting it.
        if tidy:
            _unlink_if_same(path, ident)
        return "skipped"
    except InvalidInput as e:
        if doc.expires_at <= manager.core.clock():  # expired since the check above
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
        _ensure_dir(target_dir)
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
        _fsync_dir(target_dir)
        if move:
            _fsync_dir(path.parent)
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
    if not (name.startswith(".") and _TMP_MARK in name) or name.endswith(SUFFIX):
        return False
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    return age > STALE_TMP_SECONDS


# -- files ---------------------------------------------------------------------------------


def _ensure_dir(folder: Path) -> Path:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {folder}: {e}") from e
    return folder


def _fsync_dir(folder: Path) -> None:
    # A rename or unlink is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _unlink_if_same(path: Path, ident: tuple[int, int]) -> None:
    # Only the file that was read: a dump may have replaced it since (os.replace: new inode).
    try:
        st = path.lstat()
        if (st.st_ino, st.st_mtime_ns) == ident:
            os.unlink(path)
    except OSError as e:
        log.warning("could not remove %s: %s", path, e)
