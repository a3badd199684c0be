"""Restoring dump files into Redis, and the quarantine for files that cannot be loaded.

One bad file never stops the rest: it is moved (never deleted) to ``sessions/quarantine/``
with a WARNING saying why. Two configuration problems stop the restore instead, before any
file is loaded or moved: a symlink (or a file) where ``sessions/`` or its quarantine should be
(ConfigError: writing through it would land outside the data dir), and an encrypted dump file
that none of the configured keys opens (DecryptionError: a missing key would otherwise have
every file it sealed quarantined, and the store restored without them).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from redsession import files
from redsession.core import sessions, transfer
from redsession.core.base import Core
from redsession.errors import (
    ConcurrentModification,
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
    sessions_dir,
)
from redsession.model import validation as check
from redsession.model.crypto import TOKEN_PREFIX, Cipher, sealed_at
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

    Raises ConfigError, before anything is read, if ``sessions/`` or ``sessions/quarantine/``
    is a symlink or not a folder, and DecryptionError, before anything is loaded or moved,
    if an encrypted file opens with none of the configured keys (see ``_check_keys``).
    """
    data_dir = Path(core.settings.data_dir)
    own = sessions_dir(data_dir)
    if source is None and not os.path.lexists(own):  # first start: nothing dumped yet
        return RestoreReport(restored=0, replaced=0, skipped=0, expired=0, quarantined=0)
    # Once, up front: tidying writes in sessions/ and quarantining in sessions/quarantine/, so
    # a symlink planted at either must stop the restore before the first file is moved.
    files.ensure_dir(own / QUARANTINE, data_dir, create=False)
    folder = own if source is None else Path(source)
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder of dump files")
    tidy = folder.resolve() == own.resolve()
    _check_keys(core.cipher, folder)
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
                _quarantine(folder / name, own / QUARANTINE, data_dir, move=tidy)
            pending += 1
            if progress is not None and pending >= _PROGRESS_EVERY:
                progress(pending)
                pending = 0
    if progress is not None and pending:
        progress(pending)
    return RestoreReport(**counts)


def _check_keys(cipher: Cipher, folder: Path) -> None:
    """Stop unless a configured key opens every encrypted dump file that is a whole token.

    Fernet authenticates, so a whole token that no configured key opens was sealed under a
    key missing from the settings (or was forged): quarantining it would restore the store
    without that session, and a missing key leaves out every file it sealed. That holds when
    only some files fail too: after ``rotate-keys`` the dump files keep the old key until the
    next dump rewrites them, so dropping the old key early leaves a folder of mixed keys.
    Data that cannot be a whole token (truncated, damaged) is broken whatever the key, and is
    quarantined like any bad file. This reads every encrypted file once more than the restore.
    """
    sealed = failed = 0
    first = ""
    oldest = newest = None
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if not (name.endswith(SUFFIX) and check.SESSION_ID.fullmatch(name[: -len(SUFFIX)])):
                continue  # quarantined for its name, whatever it holds
            try:
                raw = _read_regular(folder / name, tokens_only=True)[0]
            except OSError:
                continue  # not a regular file: quarantined
            if not raw.startswith(TOKEN_PREFIX):
                continue
            if not cipher.enabled:
                raise DecryptionError(
                    f"dump file {folder / name} is encrypted but no key is configured: set "
                    "REDSESSION_ENCRYPTION_KEYS; nothing was restored or quarantined"
                )
            at = sealed_at(raw)
            if at is None:
                continue  # damaged: quarantined
            sealed += 1
            try:
                cipher.open(raw)
            except DecryptionError:
                failed += 1
                first = first or name
                oldest = at if oldest is None else min(oldest, at)
                newest = at if newest is None else max(newest, at)
    if oldest is not None and newest is not None:
        keys = cipher.fingerprints()
        first_day, last_day = _day(oldest), _day(newest)
        when = first_day if first_day == last_day else f"{first_day} to {last_day}"
        raise DecryptionError(
            f"no configured encryption key opens {failed} of the {sealed} encrypted dump "
            f"files in {folder} (such as {first}, sealed {when}); tried {len(keys)} key(s), "
            f"fingerprints {', '.join(keys)} (the first 8 hex digits of each key's SHA-256); "
            "nothing was restored or quarantined. Add the key they were sealed with to "
            "REDSESSION_ENCRYPTION_KEYS, after the current ones (`redsession rotate-keys` is "
            "not the fix: it needs that key too), or move files that do not belong here out "
            "of the folder"
        )


def _day(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


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
        plain = cipher.open(raw, f"dump file {name}")
    except DecryptionError as e:
        # _check_keys let it through: damaged, or written since that check by someone else.
        whole = sealed_at(raw) is not None
        return _bad(path, str(e) if whole else "it is damaged: not a whole encrypted token")
    try:
        doc = transfer.parse_export(core, plain)
    except InvalidInput as e:
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
            core, doc, overwrite=True, expect=(live.version, live.total_interactions),
            kind="restore",
        )  # fmt: skip
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
        yield from transfer.import_session_data(core, doc, overwrite=False, kind="restore")
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


def _read_regular(path: Path, *, tokens_only: bool = False) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes and (inode, mtime); refuses symlinks, FIFOs and other non-files.

    ``tokens_only``: of a file that is not a Fernet token, only its first bytes.
    """
    # O_NOFOLLOW: a symlink planted in sessions/ must not make restore read another file.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"not a regular file: {path}")
        with os.fdopen(os.dup(fd), "rb") as f:
            head = f.read(len(TOKEN_PREFIX)) if tokens_only else b""
            data = head if tokens_only and head != TOKEN_PREFIX else head + f.read()
            return data, (st.st_ino, st.st_mtime_ns)
    finally:
        os.close(fd)


def _quarantine(path: Path, target_dir: Path, root: Path, *, move: bool) -> None:
    """Move (or copy) ``path`` into ``target_dir``, never overwriting a file already there.

    A symlink at ``target_dir`` (or between it and ``root``) raises ConfigError: it stops
    the restore rather than being logged file after file.
    """
    files.ensure_dir(target_dir, root)
    try:
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
    except OSError as e:
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
