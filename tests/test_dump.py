"""Incremental crash-safe dumps (maintenance/snapshots.py), restore and the quarantine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from redsession import SessionManager, files
from redsession.config import Settings
from redsession.errors import ConfigError, InvalidInput, SessionMerged, SessionNotFound
from redsession.maintenance import restore
from redsession.maintenance.restore import RestoreReport
from redsession.maintenance.snapshots import DumpReport, remove_dump_files, sessions_dir
from redsession.model.models import SessionExport, utcnow
from redsession.storage import scripts
from redsession.storage.commands import Batch, Cmd
from tests.conftest import after_each_command, dirty_ids, is_script


def _manager(url: str, data_dir: Path, **settings: Any) -> SessionManager:
    return SessionManager(redis.Redis.from_url(url), Settings(data_dir=data_dir, **settings))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def manager(redis_url: str, data_dir: Path) -> Iterator[SessionManager]:
    with _manager(redis_url, data_dir) as m:
        yield m


def _populate(m: SessionManager, n: int, interactions: int = 2) -> list[str]:
    ids = []
    for i in range(n):
        sid = m.create_session(f"user{i % 3}", context={"n": i, "nested": {"x": [1, 2.5]}})
        for j in range(interactions):
            m.log_interaction(
                sid.session_id,
                user_message=f"question {j} ✓",
                assistant_response=f"answer {j}",
                metadata={"model": "m", "score": 0.1 * j},
                topics=[f"t{j % 2}"],
            )
        ids.append(sid.session_id)
    return ids


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Each entry's name -> (inode, mtime): a rewrite (os.replace) changes the inode."""
    return {
        e.name: (e.stat().st_ino, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file()
    }


def _read(folder: Path, sid: str) -> SessionExport:
    return SessionExport.model_validate_json((folder / f"{sid}.json").read_bytes())


def _tree(root: Path, exclude: Path) -> dict[str, bytes]:
    """Every file under root (except under ``exclude``) -> its bytes."""
    out = {}
    for path in root.rglob("*"):
        if not path.is_relative_to(exclude) and path.is_file():
            out[str(path)] = path.read_bytes()
    return out


# -- dump ----------------------------------------------------------------------------------


def test_dump_writes_each_session_as_its_export(manager: SessionManager, data_dir: Path) -> None:
    ids = _populate(manager, 12)
    report = manager.dump_sessions()
    assert report == DumpReport(written=12, removed=0, failed=0)
    folder = sessions_dir(data_dir)
    assert folder == data_dir / "sessions"
    assert sorted(_files(folder)) == sorted(f"{sid}.json" for sid in ids)
    for sid in ids:
        assert _read(folder, sid) == manager.export_session(sid)
        # Conversations are personal: owner-only, like the folder.
        assert (folder / f"{sid}.json").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert dirty_ids(manager) == []


def test_dump_is_incremental(manager: SessionManager, data_dir: Path) -> None:
    ids = _populate(manager, 6)
    manager.dump_sessions()
    folder = sessions_dir(data_dir)
    first = _files(folder)

    assert manager.dump_sessions() == DumpReport(written=0, removed=0, failed=0)
    assert _files(folder) == first

    manager.log_interaction(ids[2], user_message="again")
    manager.update_context(ids[4], {"k": "v"})
    assert manager.dump_sessions() == DumpReport(written=2, removed=0, failed=0)
    after = _files(folder)
    changed = {name for name in first if after[name] != first[name]}
    assert changed == {f"{ids[2]}.json", f"{ids[4]}.json"}
    assert _read(folder, ids[2]).session.total_interactions == 3
    assert _read(folder, ids[4]).session.context["k"] == "v"

    manager.delete_session(ids[0])
    assert manager.dump_sessions() == DumpReport(written=0, removed=1, failed=0)
    assert not (folder / f"{ids[0]}.json").exists()
    assert len(_files(folder)) == 5


def test_merge_removes_the_secondary_file_and_rewrites_the_primary(
    manager: SessionManager, data_dir: Path
) -> None:
    primary, secondary = _populate(manager, 2)
    manager.dump_sessions()
    manager.merge_sessions(primary, secondary, allow_cross_user=True)
    assert manager.dump_sessions() == DumpReport(written=1, removed=1, failed=0)
    folder = sessions_dir(data_dir)
    assert sorted(_files(folder)) == [f"{primary}.json"]
    assert _read(folder, primary).session.total_interactions == 4


def test_expired_session_file_is_removed_after_cleanup(redis_url: str, data_dir: Path) -> None:
    with _manager(redis_url, data_dir, session_ttl=timedelta(seconds=2)) as m:
        (sid,) = _populate(m, 1, interactions=0)
        assert m.dump_sessions().written == 1
        deadline = time.monotonic() + 10
        while m.client.exists(m.keys.session(sid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Redis expired the keys on its own; only cleanup knows: it forgets the session in
        # the indexes, then deletes its dump file (the dump then has nothing left to do).
        assert dirty_ids(m) == []
        report = m.cleanup()
        assert (report.sessions, report.session_ids, report.dump_files_removed) == (1, [sid], 1)
        assert m.dump_sessions() == DumpReport(written=0, removed=0, failed=0)
        assert _files(sessions_dir(data_dir)) == {}


def test_dump_streams_in_batches(
    manager: SessionManager, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _populate(manager, 23, interactions=0)
    asked: list[int] = []

    def spy(cmd: Cmd) -> None:  # each read of the dirty index: how many ids it asked for
        if isinstance(cmd, Batch) and cmd.commands[0][:2] == ("ZRANGE", manager.keys.dirty):
            asked.append(int(cmd.commands[0][3]) + 1)

    after_each_command(monkeypatch, manager, spy)
    seen: list[int] = []
    report = manager.dump_sessions(batch=5, progress=seen.append)
    assert report.written == 23
    assert max(asked) == 5  # never more than one batch of ids in hand
    assert len(asked) == 5
    assert seen == [5, 5, 5, 5, 3]
    assert len(_files(sessions_dir(data_dir))) == len(ids)


def test_changes_during_a_dump_wait_for_the_next(
    manager: SessionManager, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _populate(manager, 4, interactions=0)
    def touch_after_export(cmd: Cmd) -> None:
        if is_script(cmd, scripts.FETCH):  # the dump read one whole session
            sid = manager.keys.session_family.ident(cmd.keys[0])
            manager.log_interaction(sid, user_message="written while dumping")

    after_each_command(monkeypatch, manager, touch_after_export)
    # It ends, although every session changed again while it ran.
    assert manager.dump_sessions(batch=1).written == 4
    monkeypatch.undo()
    assert sorted(dirty_ids(manager)) == sorted(ids)
    assert manager.dump_sessions().written == 4
    for sid in ids:
        assert _read(sessions_dir(data_dir), sid).session.total_interactions == 1


def test_a_session_that_cannot_be_exported_stays_marked(
    manager: SessionManager, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = _populate(manager, 2)
    manager.client.hset(manager.keys.session(bad), "created_at", "not a number")
    with caplog.at_level(logging.WARNING, logger="redsession.maintenance"):
        report = manager.dump_sessions(batch=1)
    assert report == DumpReport(written=1, removed=0, failed=1)
    assert bad in caplog.text
    assert dirty_ids(manager) == [bad]
    assert sorted(_files(sessions_dir(data_dir))) == [f"{good}.json"]


def test_invalid_id_in_the_dirty_index_is_dropped(manager: SessionManager, data_dir: Path) -> None:
    manager.client.zadd(manager.keys.dirty, {"../../escape": 1})
    assert manager.dump_sessions() == DumpReport(written=0, removed=0, failed=0)
    assert dirty_ids(manager) == []
    assert not (data_dir.parent / "escape.json").exists()
    assert _files(sessions_dir(data_dir)) == {}


def test_dump_leaves_no_temp_files(manager: SessionManager, data_dir: Path) -> None:
    _populate(manager, 5)
    manager.dump_sessions()
    assert all(name.endswith(".json") for name in os.listdir(sessions_dir(data_dir)))


def test_bad_batch(manager: SessionManager) -> None:
    with pytest.raises(InvalidInput, match="batch"):
        manager.dump_sessions(batch=0)


def test_remove_dump_files(manager: SessionManager, data_dir: Path) -> None:
    ids = _populate(manager, 3, interactions=0)
    manager.dump_sessions()
    assert remove_dump_files(data_dir, [ids[0], ids[1], "never-dumped"]) == 2
    assert sorted(_files(sessions_dir(data_dir))) == [f"{ids[2]}.json"]
    outside = data_dir / "victim.json"
    outside.write_text("{}")
    # Not a session id: it names no dump file, and nothing outside the folder is touched.
    assert remove_dump_files(data_dir, ["../victim", "a/../../victim"]) == 0
    assert outside.exists()


# -- restore -------------------------------------------------------------------------------


def test_dump_flushall_restore_gives_identical_exports(
    manager: SessionManager, data_dir: Path
) -> None:
    ids = _populate(manager, 20, interactions=3)
    manager.set_preferences("user0", {"lang": "fr"})
    before = {sid: manager.export_session(sid) for sid in ids}
    ttls = {sid: manager.client.pttl(manager.keys.session(sid)) for sid in ids}
    manager.dump_sessions()
    manager.client.flushall()
    seen: list[int] = []
    report = manager.restore_sessions(progress=seen.append)
    assert report == RestoreReport(restored=20, replaced=0, skipped=0, expired=0, quarantined=0)
    assert sum(seen) == 20
    for sid in ids:
        assert manager.export_session(sid) == before[sid]
        # The remaining TTL came back, not a fresh 7 days.
        assert 0 < manager.client.pttl(manager.keys.session(sid)) <= ttls[sid]
        assert manager.client.pttl(manager.keys.log(sid)) == pytest.approx(
            manager.client.pttl(manager.keys.session(sid)), abs=50
        )
    listed = {s.session_id for s in manager.list_active_sessions(limit=100).sessions}
    assert listed == set(ids)
    # Restored sessions are live again: writes work and the next dump picks them up.
    manager.log_interaction(ids[0], user_message="after restore")
    assert manager.dump_sessions().written == 20


def test_restore_replaces_only_older_live_sessions(manager: SessionManager, data_dir: Path) -> None:
    older_live, newer_live = _populate(manager, 2, interactions=1)
    manager.dump_sessions()
    disk = _read(sessions_dir(data_dir), older_live)
    # The live copy of one falls behind the disk (Redis restored from an old backup, say)...
    stale = disk.model_copy(
        update={
            "session": disk.session.model_copy(
                update={
                    "last_activity": disk.session.last_activity - timedelta(hours=1),
                    "total_interactions": 0,
                }
            ),
            "history": [],
        }
    )
    manager.import_session_data(stale, overwrite=True)
    # ...while the other moved on after the dump.
    manager.log_interaction(newer_live, user_message="newer than the dump")

    report = manager.restore_sessions(overwrite_older=False)
    assert report == RestoreReport(restored=0, replaced=0, skipped=2, expired=0, quarantined=0)
    assert manager.get_session(older_live).total_interactions == 0

    report = manager.restore_sessions()
    assert report == RestoreReport(restored=0, replaced=1, skipped=1, expired=0, quarantined=0)
    assert manager.export_session(older_live) == disk
    assert manager.get_session(newer_live).total_interactions == 2


@pytest.mark.parametrize("race", ["write", "delete"])
def test_restore_never_overwrites_a_change_made_while_it_compared(
    manager: SessionManager, data_dir: Path, monkeypatch: pytest.MonkeyPatch, race: str
) -> None:
    (sid,) = _populate(manager, 1, interactions=1)
    manager.dump_sessions()
    disk = _read(sessions_dir(data_dir), sid)
    older = disk.session.model_copy(
        update={"last_activity": disk.session.last_activity - timedelta(hours=1)}
    )
    manager.import_session_data(disk.model_copy(update={"session": older}), overwrite=True)
    raced = []

    def race_after_the_read(cmd: Cmd) -> None:  # restore read the live session to compare
        if not raced and is_script(cmd, scripts.FETCH, manager.keys.session(sid)):
            raced.append(cmd)
            if race == "write":
                manager.log_interaction(sid, user_message="lands between compare and replace")
            else:
                manager.delete_session(sid)

    after_each_command(monkeypatch, manager, race_after_the_read)
    report = manager.restore_sessions()
    monkeypatch.undo()
    assert report == RestoreReport(restored=0, replaced=0, skipped=1, expired=0, quarantined=0)
    if race == "write":
        assert manager.get_session(sid).total_interactions == 2
    else:
        with pytest.raises(SessionNotFound, match="deleted"):
            manager.get_session(sid)


def test_restore_does_not_resurrect_deleted_or_merged_sessions(
    manager: SessionManager, data_dir: Path
) -> None:
    deleted, primary, secondary, kept = _populate(manager, 4, interactions=1)
    manager.dump_sessions()
    folder = sessions_dir(data_dir)
    manager.delete_session(deleted)
    manager.merge_sessions(primary, secondary, allow_cross_user=True)
    report = manager.restore_sessions()
    assert report == RestoreReport(restored=0, replaced=0, skipped=4, expired=0, quarantined=0)
    with pytest.raises(SessionNotFound, match="deleted"):
        manager.get_session(deleted)
    with pytest.raises(SessionMerged):
        manager.log_interaction(secondary, user_message="late write")
    assert manager.get_session(secondary).session_id == primary
    # Their stale files went, so a restore into an empty Redis cannot bring them back either.
    assert not (folder / f"{deleted}.json").exists()
    assert not (folder / f"{secondary}.json").exists()
    assert (folder / f"{kept}.json").exists()


def test_restore_skips_and_removes_expired_files(manager: SessionManager, data_dir: Path) -> None:
    live, gone = _populate(manager, 2, interactions=1)
    manager.dump_sessions()
    folder = sessions_dir(data_dir)
    path = folder / f"{gone}.json"
    doc = orjson.loads(path.read_bytes())
    doc["expires_at"] = (utcnow() - timedelta(seconds=1)).isoformat()
    path.write_bytes(orjson.dumps(doc))
    manager.client.flushall()
    report = manager.restore_sessions()
    assert report == RestoreReport(restored=1, replaced=0, skipped=0, expired=1, quarantined=0)
    with pytest.raises(SessionNotFound):
        manager.get_session(gone)
    assert manager.get_session(live).total_interactions == 1
    assert sorted(_files(folder)) == [f"{live}.json"]


def _bad_documents(good_bytes: bytes) -> dict[str, bytes]:
    """File name stem -> content, each a way for a dump file to be unusable."""

    def variant(stem: str, **changes: Any) -> bytes:
        doc = orjson.loads(good_bytes)
        doc["session"] = {**doc["session"], "session_id": stem}
        for key, value in changes.items():
            doc[key] = value
        return orjson.dumps(doc)

    corrupt = bytearray(good_bytes)
    corrupt[len(corrupt) // 2] ^= 0xFF
    escaping = orjson.loads(good_bytes)
    escaping["session"]["session_id"] = "../../etc/x"
    return {
        "corrupt": bytes(corrupt),
        "truncated": good_bytes[: len(good_bytes) // 2],
        "garbage": b"\x00\xff" + os.urandom(300),
        "empty": b"",
        "not-an-object": b"[1, 2, 3]",
        "wrong-version": variant("wrong-version", version=3),
        "wrong-format": variant("wrong-format", format="something.else"),
        "no-session": variant("no-session", session=None),
        "extra-field": variant("extra-field", surprise=True),
        "bad-count": variant("bad-count", history=[]),
        "escaping": orjson.dumps(escaping),
        "other-id": good_bytes,  # a valid document, under another session's name
        "a.b": variant("a.b"),
        ".": variant("."),
    }


def test_bad_files_are_quarantined_and_the_rest_restored(
    manager: SessionManager, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _populate(manager, 5, interactions=2)
    manager.dump_sessions()
    folder = sessions_dir(data_dir)
    good_bytes = (folder / f"{ids[0]}.json").read_bytes()
    bad = _bad_documents(good_bytes)
    for stem, content in bad.items():
        (folder / f"{stem}.json").write_bytes(content)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for restore")
    (folder / "symlink.json").symlink_to(secret)
    (folder / "directory.json").mkdir()
    names = [f"{stem}.json" for stem in bad] + ["symlink.json", "directory.json"]
    before_outside = _tree(tmp_path, exclude=data_dir)
    manager.client.flushall()

    with caplog.at_level(logging.WARNING, logger="redsession.maintenance"):
        report = manager.restore_sessions()

    assert report == RestoreReport(
        restored=5, replaced=0, skipped=0, expired=0, quarantined=len(names)
    )
    for sid in ids:
        assert manager.get_session(sid).total_interactions == 2
    quarantine = folder / "quarantine"
    assert sorted(os.listdir(quarantine)) == sorted(names)
    for stem, content in bad.items():
        assert (quarantine / f"{stem}.json").read_bytes() == content  # moved, never deleted
        assert f"{stem}.json" in caplog.text
    assert (quarantine / "symlink.json").is_symlink()
    assert (quarantine / "directory.json").is_dir()
    assert sorted(_files(folder)) == sorted(f"{sid}.json" for sid in ids)
    assert "not a valid redsession export" in caplog.text
    assert "not 'other-id'" in caplog.text
    assert "is not <session id>.json" in caplog.text
    assert all(r.levelno == logging.WARNING for r in caplog.records if "quarantin" in r.message)
    # Nothing outside data_dir was written or removed, and nothing reached Redis for them.
    assert _tree(tmp_path, exclude=data_dir) == before_outside
    assert not (tmp_path / "etc").exists()
    assert sorted(manager.iter_session_ids()) == sorted(ids)


def test_quarantine_never_overwrites(manager: SessionManager, data_dir: Path) -> None:
    folder = sessions_dir(data_dir)
    folder.mkdir(parents=True)
    (folder / "broken.json").write_bytes(b"first")
    assert manager.restore_sessions().quarantined == 1
    (folder / "broken.json").write_bytes(b"second")
    assert manager.restore_sessions().quarantined == 1
    kept = sorted(os.listdir(folder / "quarantine"))
    assert kept[0] == "broken.json"
    assert len(kept) == 2
    assert kept[1].startswith("broken.json.")
    assert {(folder / "quarantine" / k).read_bytes() for k in kept} == {b"first", b"second"}


def test_restore_from_another_folder_only_reads_it(
    manager: SessionManager, data_dir: Path, tmp_path: Path
) -> None:
    ids = _populate(manager, 3, interactions=1)
    manager.dump_sessions()
    backup = tmp_path / "backup"
    backup.mkdir()
    for sid in ids:
        (backup / f"{sid}.json").write_bytes((sessions_dir(data_dir) / f"{sid}.json").read_bytes())
    (backup / "junk.json").write_bytes(b"{")
    manager.delete_session(ids[0])
    manager.client.delete(manager.keys.tomb(ids[0]))  # as if the tombstone had expired
    manager.delete_session(ids[1])  # this one keeps its tombstone
    before = _tree(backup, exclude=data_dir)
    report = manager.restore_sessions(backup)
    assert report == RestoreReport(restored=1, replaced=0, skipped=2, expired=0, quarantined=1)
    assert _tree(backup, exclude=data_dir) == before
    assert (sessions_dir(data_dir) / "quarantine" / "junk.json").read_bytes() == b"{"
    with pytest.raises(SessionNotFound):
        manager.get_session(ids[1])


def test_restore_with_nothing_to_restore(manager: SessionManager, tmp_path: Path) -> None:
    empty = RestoreReport(restored=0, replaced=0, skipped=0, expired=0, quarantined=0)
    assert manager.restore_sessions() == empty  # first start: no sessions folder yet
    with pytest.raises(InvalidInput, match="not a folder"):
        manager.restore_sessions(tmp_path / "missing")


def test_restore_removes_only_stale_temp_files(manager: SessionManager, data_dir: Path) -> None:
    (sid,) = _populate(manager, 1)
    manager.dump_sessions()
    folder = sessions_dir(data_dir)
    stale = folder / f".{sid}.json.tmp-abc123"
    fresh = folder / f".{sid}.json.tmp-def456"
    stale.write_bytes(b'{"half": ')
    fresh.write_bytes(b'{"being written')
    old = time.time() - restore.STALE_TMP_SECONDS - 5
    os.utime(stale, (old, old))
    os.utime(folder / f"{sid}.json", (old, old))  # an old dump is never taken for a temp file
    manager.client.flushall()
    report = manager.restore_sessions()
    assert (report.restored, report.quarantined) == (1, 0)
    assert not stale.exists()
    assert fresh.exists()
    assert (folder / f"{sid}.json").exists()


# -- symlinks planted inside data_dir (issue 20) ---------------------------------------------


def test_ensure_dir_makes_owner_only_folders_and_refuses_symlinks_below_the_root(
    tmp_path: Path,
) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert files.ensure_dir(root / "a" / "b", root) == root / "a" / "b"
    assert (root / "a" / "b").is_dir()
    assert all((root / p).stat().st_mode & 0o777 == 0o700 for p in ("", "a", "a/b"))
    assert files.ensure_dir(root / "c" / "d", root, create=False) == root / "c" / "d"
    assert not (root / "c").exists()  # create=False only checks

    (root / "link").symlink_to(elsewhere)
    (root / "a" / "file").write_text("x")
    (root / "a" / "dangling").symlink_to(tmp_path / "missing")
    for path, why in [
        (root / "link", "link is a symlink; refusing to write through it"),
        (root / "link" / "x", "link is a symlink"),  # a symlink at any level below the root
        (root / "a" / "dangling", "dangling is a symlink"),
        (root / "a" / "file" / "x", "file is not a directory"),
    ]:
        for create in (True, False):
            with pytest.raises(ConfigError, match=why):
                files.ensure_dir(path, root, create=create)
    assert os.listdir(elsewhere) == []
    assert not (tmp_path / "missing").exists()

    # The root itself is the operator's choice: followed even when it is a symlink.
    (tmp_path / "root-link").symlink_to(root)
    assert files.ensure_dir(tmp_path / "root-link" / "a" / "e", tmp_path / "root-link").is_dir()
    assert (root / "a" / "e").is_dir()


def test_restore_refuses_a_symlinked_quarantine_before_moving_anything(
    manager: SessionManager, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _populate(manager, 3, interactions=1)
    manager.dump_sessions()
    folder = sessions_dir(data_dir)
    (folder / "corrupt.json").write_bytes(b"{ not json")
    (folder / "also-corrupt.json").write_bytes(b"[]")
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "quarantine").symlink_to(outside)
    before = _tree(folder, exclude=folder / "quarantine")
    manager.client.flushall()

    with pytest.raises(ConfigError, match="quarantine is a symlink; refusing to write through"):
        manager.restore_sessions()
    assert os.listdir(outside) == []  # nothing moved out of data_dir
    assert _tree(folder, exclude=folder / "quarantine") == before  # nothing moved at all
    assert "left in place" not in caplog.text  # stopped up front, not skipped file by file
    assert list(manager.iter_session_ids()) == []  # and nothing restored
    # A restore from another folder copies its bad files to the same quarantine: refused too.
    other = tmp_path / "extracted-backup"
    other.mkdir()
    (other / "bad.json").write_bytes(b"{")
    with pytest.raises(ConfigError, match="quarantine is a symlink"):
        manager.restore_sessions(other)
    assert os.listdir(outside) == []

    (folder / "quarantine").unlink()
    report = manager.restore_sessions()
    assert (report.restored, report.quarantined) == (3, 2)
    assert sorted(manager.iter_session_ids()) == sorted(ids)


def test_restore_refuses_a_quarantine_that_is_not_a_folder(
    manager: SessionManager, data_dir: Path
) -> None:
    folder = sessions_dir(data_dir)
    folder.mkdir(parents=True)
    (folder / "broken.json").write_bytes(b"{")
    (folder / "quarantine").write_bytes(b"a file")
    with pytest.raises(ConfigError, match="quarantine is not a directory"):
        manager.restore_sessions()
    assert (folder / "broken.json").read_bytes() == b"{"


def test_restore_and_dump_refuse_a_symlinked_sessions_folder(
    manager: SessionManager, data_dir: Path, tmp_path: Path
) -> None:
    ids = _populate(manager, 2, interactions=1)
    manager.dump_sessions()
    outside = tmp_path / "outside"
    sessions_dir(data_dir).rename(outside)
    sessions_dir(data_dir).symlink_to(outside)
    (outside / "corrupt.json").write_bytes(b"{")
    stale = outside / f".{ids[0]}.json.tmp-abc123"
    stale.write_bytes(b"half")
    old = time.time() - restore.STALE_TMP_SECONDS - 5
    os.utime(stale, (old, old))
    before = _tree(outside, exclude=data_dir)
    manager.log_interaction(ids[1], user_message="dirty again")

    with pytest.raises(ConfigError, match="sessions is a symlink"):
        manager.dump_sessions()
    assert dirty_ids(manager) == [ids[1]]  # not dumped: the next dump, once fixed, does it
    manager.client.flushall()
    with pytest.raises(ConfigError, match="sessions is a symlink"):
        manager.restore_sessions()
    assert _tree(outside, exclude=data_dir) == before  # nothing written, tidied or moved
    assert not (outside / "quarantine").exists()
    assert list(manager.iter_session_ids()) == []


def test_a_symlinked_data_dir_is_the_operators_choice(redis_url: str, tmp_path: Path) -> None:
    real = tmp_path / "volume"
    real.mkdir()
    (tmp_path / "data").symlink_to(real)
    with _manager(redis_url, tmp_path / "data") as m:
        (sid,) = _populate(m, 1)
        assert m.dump_sessions().written == 1
        (real / "sessions" / "bad.json").write_bytes(b"{")
        m.client.flushall()
        report = m.restore_sessions()
        assert (report.restored, report.quarantined) == (1, 1)
    assert (real / "sessions" / f"{sid}.json").is_file()
    assert (real / "sessions" / "quarantine" / "bad.json").is_file()
