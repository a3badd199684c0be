"""Encryption at rest: what is sealed, wrong and missing keys, rotation."""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from redsession import SessionManager
from redsession.errors import ConfigError, DecryptionError
from redsession.model import crypto
from redsession.model.crypto import Cipher
from redsession.model.models import utcnow
from redsession.storage.keys import Keys

MakeManager = Callable[..., SessionManager]
K = Keys()
K1, K2, K3 = (Fernet.generate_key().decode() for _ in range(3))
SECRET = "my-secret-diagnosis"


def test_cipher() -> None:
    c = Cipher([K1])
    token = c.seal(b'{"a": 1}')
    assert token.startswith(b"gAAAAA")
    assert c.open(token) == b'{"a": 1}'
    assert c.open(b'{"plain": 1}') == b'{"plain": 1}'  # written before encryption
    assert c.is_current(token)
    assert not c.is_current(b"{}")
    rotated = Cipher([K2, K1])
    assert rotated.open(token) == b'{"a": 1}'
    assert not rotated.is_current(token)
    with pytest.raises(DecryptionError):
        Cipher([K2]).open(token)
    with pytest.raises(DecryptionError):
        Cipher().open(token)
    with pytest.raises(ConfigError):
        Cipher(["not a key"])


def _fill(m: SessionManager) -> str:
    sid = m.create_session("alice", context={"diagnosis": SECRET}).session_id
    m.log_interaction(sid, user_message=SECRET, assistant_response=SECRET, metadata={"s": SECRET})
    m.set_preferences("alice", {"note": SECRET})
    return sid


def _raw_dump(r: redis.Redis) -> bytes:
    out = b""
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"hash":
            out += b"".join(k + v for k, v in r.hgetall(key).items())
        elif kind == b"list":
            out += b"".join(r.lrange(key, 0, -1))
    return out


def test_content_is_sealed_in_redis_and_dumps(
    make_manager: MakeManager, redis_client: redis.Redis, tmp_path: Path
) -> None:
    m = make_manager(encryption_keys=[K1], data_dir=tmp_path)
    sid = _fill(m)
    raw = _raw_dump(redis_client)
    assert SECRET.encode() not in raw
    assert b"alice" in raw  # ids stay in the clear for the indexes
    s = m.resume_session(sid, "alice")
    assert s.context == {"diagnosis": SECRET}
    assert s.history[0].user_message == SECRET
    assert m.get_preferences("alice") == {"note": SECRET}
    doc = m.export_session_data(sid)  # exports are for their owner: plaintext
    assert doc["history"][0]["metadata"] == {"s": SECRET}
    m.dump_sessions()
    files = list((tmp_path / "sessions").glob("*.json"))
    assert len(files) == 1
    assert SECRET.encode() not in files[0].read_bytes()
    redis_client.flushall()
    assert m.restore_sessions().restored == 1
    assert m.export_session_data(sid) == doc
    plain = make_manager(data_dir=tmp_path)
    with pytest.raises(DecryptionError):
        plain.restore_sessions()


def test_wrong_or_missing_key_is_a_clear_error(make_manager: MakeManager) -> None:
    sid = _fill(make_manager(encryption_keys=[K1]))
    for m in (make_manager(), make_manager(encryption_keys=[K2])):
        with pytest.raises(DecryptionError):
            m.get_session(sid)
        with pytest.raises(DecryptionError):
            m.get_history(sid)
        with pytest.raises(DecryptionError):
            m.get_preferences("alice")


def test_rotation_re_seals_everything_and_resumes(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_manager()  # plaintext data from before encryption was turned on...
    plain_sid = _fill(old)
    sids = [_fill(make_manager(encryption_keys=[K1])) for _ in range(4)]  # ...and K1 data
    both = make_manager(encryption_keys=[K2, K1])
    assert both.get_session(plain_sid).context == {"diagnosis": SECRET}

    # Interrupted after two sessions: the next run finishes the job and skips those two.
    calls = 0

    def dying(n: int) -> None:  # progress: called once each session is done
        nonlocal calls
        calls += n
        if calls == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        both.rotate_keys(progress=dying)
    report = both.rotate_keys()
    assert report.sessions_rotated == 3
    assert report.sessions_current == 2
    assert report.users_rotated == 1
    again = both.rotate_keys()
    assert (again.sessions_rotated, again.users_rotated) == (0, 0)
    new_only = make_manager(encryption_keys=[K2])
    for sid in [plain_sid, *sids]:
        assert new_only.resume_session(sid, "alice").history[0].user_message == SECRET
    assert new_only.get_preferences("alice") == {"note": SECRET}
    with pytest.raises(ConfigError):
        make_manager().rotate_keys()


# -- restore under keys that do not open the dumps (issue 20) --------------------------------


def _fp(key: str) -> str:
    """What an operator computes by hand: printf %s "$KEY" | sha256sum | cut -c1-8."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def test_fingerprints_name_the_configured_keys_without_revealing_them() -> None:
    c = Cipher([K2, K1])
    assert c.fingerprints() == [_fp(K2), _fp(K1)]  # newest first, as configured
    assert all(len(f) == 8 and int(f, 16) >= 0 for f in c.fingerprints())
    assert not any(f in key for f in c.fingerprints() for key in (K1, K2))
    assert Cipher().fingerprints() == []


def test_sealed_at_tells_whole_tokens_from_damaged_data() -> None:
    token = Cipher([K1]).seal(b"x" * 100)
    at = crypto.sealed_at(token)
    assert at is not None
    assert abs(at - utcnow()) < timedelta(minutes=1)
    assert crypto.sealed_at(token) == crypto.sealed_at(Cipher([K2]).seal(b"x"))  # any key
    assert crypto.sealed_at(token + b"\n") == at  # as Fernet itself reads it
    raw = base64.urlsafe_b64decode(token)
    far_future = base64.urlsafe_b64encode(raw[:1] + b"\xff" * 8 + raw[9:])  # year > 9999
    for damaged in (token[:-1], token[:-4], token[:40], token[:30] + b"\x00" + token[30:],
                    far_future, b"gAAAAA", b'{"plain": 1}', b""):  # fmt: skip
        assert crypto.sealed_at(damaged) is None, damaged


def _dumped(make_manager: MakeManager, data_dir: Path, key: str, n: int) -> list[str]:
    m = make_manager(encryption_keys=[key], data_dir=data_dir)
    sids = [_fill(m) for _ in range(n)]
    assert m.dump_sessions().written == n
    return sids


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_restore_under_other_keys_stops_before_moving_anything(
    make_manager: MakeManager, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _dumped(make_manager, tmp_path, K1, 3)
    folder = tmp_path / "sessions"
    (folder / "corrupt.json").write_bytes(b"{")  # a bad file among them still waits
    before = _listing(folder)
    redis_client.flushall()

    wrong = make_manager(encryption_keys=[K2, K3], data_dir=tmp_path)
    with pytest.raises(DecryptionError) as caught:
        wrong.restore_sessions()
    message = str(caught.value)
    assert "no configured encryption key opens 3 of the 3 encrypted dump files" in message
    assert f"tried 2 key(s), fingerprints {_fp(K2)}, {_fp(K3)} " in message
    assert "nothing was restored or quarantined" in message
    assert "REDSESSION_ENCRYPTION_KEYS" in message
    assert "`redsession rotate-keys` is not the fix" in message
    assert "\n" not in message
    assert not any(k in message for k in (K1, K2, K3))
    with pytest.raises(DecryptionError, match="encrypted but no key is configured"):
        make_manager(data_dir=tmp_path).restore_sessions()
    assert _listing(folder) == before  # nothing quarantined, nothing removed
    assert redis_client.dbsize() == 0  # nothing restored

    # The fix: add the old key (after the current ones).
    report = make_manager(encryption_keys=[K2, K1], data_dir=tmp_path).restore_sessions()
    assert (report.restored, report.quarantined) == (3, 1)


def test_one_file_under_a_missing_key_stops_the_restore_too(
    make_manager: MakeManager, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Dump files keep their key until a dump rewrites them: a folder can hold several keys.
    _dumped(make_manager, tmp_path, K1, 3)
    (other,) = _dumped(make_manager, tmp_path / "elsewhere", K3, 1)
    folder = tmp_path / "sessions"
    shutil.copy(tmp_path / "elsewhere" / "sessions" / f"{other}.json", folder)
    before = _listing(folder)
    redis_client.flushall()

    only_k1 = make_manager(encryption_keys=[K1], data_dir=tmp_path)
    with pytest.raises(DecryptionError, match=rf"opens 1 of the 4 encrypted .*such as {other}\."):
        only_k1.restore_sessions()
    assert _listing(folder) == before
    assert redis_client.dbsize() == 0
    both = make_manager(encryption_keys=[K1, K3], data_dir=tmp_path)
    assert both.restore_sessions().restored == 4


def test_a_damaged_encrypted_file_is_quarantined_like_any_bad_file(
    make_manager: MakeManager,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, bad = _dumped(make_manager, tmp_path, K1, 2)
    path = tmp_path / "sessions" / f"{bad}.json"
    path.write_bytes(path.read_bytes()[:-5])  # truncated: no key could open it
    redis_client.flushall()
    with caplog.at_level(logging.WARNING, logger="redsession.maintenance"):
        report = make_manager(encryption_keys=[K1], data_dir=tmp_path).restore_sessions()
    assert (report.restored, report.quarantined) == (1, 1)
    assert (tmp_path / "sessions" / "quarantine" / f"{bad}.json").is_file()
    assert "it is damaged: not a whole encrypted token" in caplog.text
