from __future__ import annotations

import os
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from redsession.errors import ConfigError
from redsession.maintenance.backup import (
    archive_name,
    archive_time,
    list_backups,
    prune_backups,
    run_backup,
    write_backup,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def make_sessions(data_dir: Path) -> None:
    folder = data_dir / "sessions"
    (folder / "quarantine").mkdir(parents=True)
    (folder / "a.json").write_text('{"a": 1}')
    (folder / "b.json").write_text('{"b": 2}')
    (folder / "quarantine" / "bad.json").write_text("junk")
    (folder / ".c.json.tmp-x1y2").write_text("half a dump")


def names(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
        return out


def test_archive_holds_the_dumps_but_no_temporaries(tmp_path: Path) -> None:
    make_sessions(tmp_path)
    archive, count = write_backup(tmp_path, now=T0)
    assert archive == tmp_path / "backups" / "sessions-20260301T120000123456Z.tar.gz"
    assert count == 3
    assert names(archive) == {
        "sessions/a.json": b'{"a": 1}',
        "sessions/b.json": b'{"b": 2}',
        "sessions/quarantine/bad.json": b"junk",
    }
    assert os.listdir(tmp_path / "backups") == [archive.name]


def test_archive_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    archive, count = write_backup(tmp_path, now=T0)
    assert count == 0
    assert names(archive) == {}


def test_a_failed_backup_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_sessions(tmp_path)

    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_backup(tmp_path, now=T0)
    assert os.listdir(tmp_path / "backups") == []


def test_names_round_trip_and_sort_by_time() -> None:
    later = T0 + timedelta(microseconds=1)
    assert archive_time(Path(archive_name(T0))) == T0
    assert archive_name(T0) < archive_name(later)
    assert archive_time(Path("sessions-junk.tar.gz")) is None
    assert archive_time(Path("notes.txt")) is None


def test_retention_keeps_the_newest_n(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    stamps = [T0 - timedelta(hours=h) for h in range(6)]
    for t in stamps:
        (folder / archive_name(t)).write_bytes(b"x")
    (folder / "README").write_text("not ours")
    removed = prune_backups(folder, keep=3, max_age=timedelta(days=30), now=T0)
    assert sorted(removed) == sorted(folder / archive_name(t) for t in stamps[3:])
    assert [t for t, _ in list_backups(folder)] == stamps[:3]
    assert (folder / "README").exists()


def test_retention_drops_archives_past_the_max_age(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    stamps = [T0 - timedelta(days=d) for d in (0, 1, 5, 9)]
    for t in stamps:
        (folder / archive_name(t)).write_bytes(b"x")
    prune_backups(folder, keep=10, max_age=timedelta(days=4), now=T0)
    assert [t for t, _ in list_backups(folder)] == stamps[:2]


def test_retention_removes_leftover_temporaries(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / ".sessions-abc.tar.gz.tmp").write_bytes(b"partial")
    assert prune_backups(folder, keep=1, max_age=timedelta(days=1), now=T0) == [
        folder / ".sessions-abc.tar.gz.tmp"
    ]


def test_run_backup_writes_then_prunes(tmp_path: Path) -> None:
    make_sessions(tmp_path)
    reports = [
        run_backup(tmp_path, keep=2, max_age=timedelta(days=1), now=T0 + timedelta(seconds=s))
        for s in range(4)
    ]
    kept = [p for _, p in list_backups(tmp_path / "backups")]
    assert kept == [reports[3].archive, reports[2].archive]
    assert reports[3].removed == [reports[1].archive]
    assert set(names(reports[3].archive)) == {
        "sessions/a.json",
        "sessions/b.json",
        "sessions/quarantine/bad.json",
    }


@pytest.mark.parametrize("planted", ["backups", "sessions"])
def test_a_symlink_planted_in_data_dir_stops_the_backup(tmp_path: Path, planted: str) -> None:
    data_dir, outside = tmp_path / "data", tmp_path / "outside"
    make_sessions(data_dir)
    outside.mkdir()
    (outside / "secret.json").write_text("not ours")
    if planted == "sessions":
        (data_dir / "sessions").rename(tmp_path / "real-sessions")
    (data_dir / planted).symlink_to(outside)
    with pytest.raises(ConfigError, match=f"{planted} is a symlink; refusing"):
        write_backup(data_dir, now=T0)
    # No archive (nor its temp file) went outside data_dir, nor was any of outside's archived.
    assert os.listdir(outside) == ["secret.json"]
    if planted == "sessions":
        assert not (data_dir / "backups").exists()


def test_backups_that_is_not_a_folder_is_a_config_error(tmp_path: Path) -> None:
    make_sessions(tmp_path)
    (tmp_path / "backups").write_text("a file")
    with pytest.raises(ConfigError, match="backups is not a directory"):
        write_backup(tmp_path, now=T0)


def test_backups_folder_is_owner_only(tmp_path: Path) -> None:
    make_sessions(tmp_path)
    archive, _ = write_backup(tmp_path, now=T0)
    assert archive.parent.stat().st_mode & 0o777 == 0o700
