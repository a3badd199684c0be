"""Backups: timestamped tar.gz archives of the dump folder, with a retention policy."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from redsession import files
from redsession.model.models import utcnow

log = logging.getLogger(__name__)

SESSIONS_DIR = "sessions"
BACKUPS_DIR = "backups"
_STAMP = "%Y%m%dT%H%M%S%fZ"
_NAME = re.compile(r"^sessions-(\d{8}T\d{12}Z)\.tar\.gz$")
# files.atomic_writer names its temp file <prefix><random>.tmp
_TMP_PREFIX = ".sessions-"
_TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class BackupReport:
    """What one backup run did."""

    archive: Path
    files: int
    removed: list[Path] = field(default_factory=list)


def archive_name(at: datetime) -> str:
    """The archive's file name for a UTC time; names sort in time order."""
    return f"sessions-{at.astimezone(timezone.utc).strftime(_STAMP)}.tar.gz"


def archive_time(path: Path) -> datetime | None:
    """The time in an archive's name, or None for a file that is not one of ours."""
    m = _NAME.match(path.name)
    if not m:
        return None
    return datetime.strptime(m.group(1), _STAMP).replace(tzinfo=timezone.utc)


def list_backups(backups_dir: Path) -> list[tuple[datetime, Path]]:
    """Our archives in ``backups_dir``, newest first."""
    if not backups_dir.is_dir():
        return []
    found = [(t, p) for p in backups_dir.iterdir() if (t := archive_time(p)) is not None]
    return sorted(found, reverse=True)


def _add_tree(tar: tarfile.TarFile, root: Path) -> int:
    """Add the regular files below root; a file that vanishes meanwhile is skipped."""
    count = 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            # Dot files are writers' temporaries (atomic writes): never a finished dump.
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root.parent)))
                if not info.isfile():
                    continue
                with path.open("rb") as f:
                    tar.addfile(info, f)
            except FileNotFoundError:
                continue  # removed by cleanup or replaced by a dump between listing and reading
            count += 1
    return count


def write_backup(data_dir: Path, *, now: datetime | None = None) -> tuple[Path, int]:
    """Archive ``data_dir/sessions`` into ``data_dir/backups``; returns (archive, file count).

    The archive is written to a temporary file, fsynced, then renamed into place, so a
    crash never leaves a partial archive under an archive's name. A symlink planted at
    ``backups/`` (where the archive and its temp file go) or at ``sessions/`` (what would be
    archived) raises ConfigError before anything is written.
    """
    now = now or utcnow()
    source = files.ensure_dir(data_dir / SESSIONS_DIR, data_dir, create=False)
    backups = files.ensure_dir(data_dir / BACKUPS_DIR, data_dir)
    target = backups / archive_name(now)
    with (
        files.atomic_writer(target, tmp_prefix=_TMP_PREFIX) as raw,
        tarfile.open(fileobj=raw, mode="w:gz") as tar,
    ):
        count = _add_tree(tar, source) if source.is_dir() else 0
    return target, count


def prune_backups(
    backups_dir: Path, *, keep: int, max_age: timedelta, now: datetime | None = None
) -> list[Path]:
    """Delete archives beyond the newest ``keep`` and those older than ``max_age``.

    Also deletes temporaries left by a crashed backup. Returns what was deleted.
    """
    now = now or utcnow()
    removed: list[Path] = []
    for rank, (at, path) in enumerate(list_backups(backups_dir)):
        if rank >= keep or now - at > max_age:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if backups_dir.is_dir():
        for path in backups_dir.iterdir():
            # Only the leader writes backups, one at a time: any temporary here is a leftover.
            if path.name.startswith(_TMP_PREFIX) and path.name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def run_backup(
    data_dir: Path, *, keep: int, max_age: timedelta, now: datetime | None = None
) -> BackupReport:
    """One backup: prune leftovers, write a new archive, then apply retention."""
    now = now or utcnow()
    archive, files = write_backup(data_dir, now=now)
    removed = prune_backups(data_dir / BACKUPS_DIR, keep=keep, max_age=max_age, now=now)
    log.info("backup %s: %d files; pruned %d old archives", archive.name, files, len(removed))
    return BackupReport(archive=archive, files=files, removed=removed)
