"""Encryption at rest: what is sealed, wrong and missing keys, rotation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from redsession import SessionManager
from redsession.errors import ConfigError, DecryptionError
from redsession.model.crypto import Cipher
from redsession.storage.keys import Keys

MakeManager = Callable[..., SessionManager]
K = Keys()
K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
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
    assert doc["interactions"][0]["metadata"] == {"s": SECRET}
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
