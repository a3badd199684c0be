"""Durable files: atomic writes, folder fsyncs and removals, for dumps, backups and CLI output.

A file written here is either its old complete self or its new complete self at any kill
point: the bytes go to a temp file in the same folder, are fsynced, renamed over the target,
and the folder is fsynced so that the rename itself survives a power loss. The folders that
redsession writes into below the data dir are made (and checked) by ensure_dir, which never
follows a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from redsession.errors import ConfigError

# Open one folder level without following a symlink: ELOOP (or ENOTDIR) instead.
_NO_FOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, tmp_prefix: str | None = None, sync_dir: bool = True
) -> Iterator[IO[bytes]]:
    """Yield a file whose content replaces ``path`` all or nothing when the block ends.

    The temp file is ``tmp_prefix`` + random in the target's folder (mode 0600: mkstemp), so
    ``os.replace`` is a rename on one file system. On an error the temp file is removed and
    ``path`` is untouched. ``sync_dir=False`` leaves the folder fsync to the caller (a dump
    fsyncs once per batch).
    """
    path = Path(path).absolute()
    prefix = f".{path.name}." if tmp_prefix is None else tmp_prefix
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_atomic(
    path: Path, data: bytes, *, tmp_prefix: str | None = None, sync_dir: bool = True
) -> None:
    """``path`` holds exactly ``data``, durably; see atomic_writer."""
    with atomic_writer(path, tmp_prefix=tmp_prefix, sync_dir=sync_dir) as f:
        f.write(data)


def fsync_dir(folder: Path) -> None:
    """Make the renames and removals in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink(path: Path) -> bool:
    """Remove ``path``; False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def ensure_dir(path: Path, root: Path, *, create: bool = True) -> Path:
    """Make ``path`` and the folders between it and ``root`` (mode 0700); returns ``path``.

    ``root`` (the data dir) is the operator's choice and is followed even if it is a symlink.
    Each folder below it is made and opened relative to its parent with O_NOFOLLOW and
    O_DIRECTORY, so a symlink (or a file) planted at any of them raises ConfigError instead
    of letting a write land outside ``root``. ``create=False`` only checks: a folder that
    does not exist yet ends the walk (nothing below it can be a symlink).
    """
    root, path = Path(root).absolute(), Path(path).absolute()
    parts = path.relative_to(root).parts  # ValueError: a caller's bug, not an input's
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{path} is not a plain path below {root}")
    try:
        if create:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if create:
            raise ConfigError(f"cannot create {root}: it vanished meanwhile") from None
        return path
    except OSError as e:
        raise ConfigError(f"cannot create {root}: {e}") from e
    here = root
    try:
        for part in parts:
            here = here / part
            try:
                if create:
                    with contextlib.suppress(FileExistsError):  # a symlink is "existing" too
                        os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, _NO_FOLLOW_DIR, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise ConfigError(f"cannot create {here}: it vanished meanwhile") from None
                return path
            except OSError as e:
                raise _refusal(here, part, fd, e) from e
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return path


def _refusal(here: Path, part: str, parent_fd: int, error: OSError) -> ConfigError:
    try:
        mode = os.stat(part, dir_fd=parent_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISLNK(mode):
        return ConfigError(f"{here} is a symlink; refusing to write through it")
    if (mode is not None and not stat.S_ISDIR(mode)) or error.errno == errno.ENOTDIR:
        return ConfigError(f"{here} is not a directory; refusing to write into it")
    return ConfigError(f"cannot create {here}: {error}")
