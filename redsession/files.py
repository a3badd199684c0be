"""Durable files: atomic writes, folder fsyncs and removals, for dumps, backups and CLI output.

A file written here is either its old complete self or its new complete self at any kill
point: the bytes go to a temp file in the same folder, are fsynced, renamed over the target,
and the folder is fsynced so that the rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


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
