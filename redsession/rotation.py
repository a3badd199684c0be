"""`rotate-keys`: re-encrypt every session and every user's preferences under the newest key.

Each step skips what is already sealed under the newest key, so an interrupted rotation is
resumed by running it again; each session is rewritten with a compare-and-set on its
(version, total), so a write that races with the rotation is never lost.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from redsession.codec import encode_interaction, expires_from_hash, hash_fields, record_from_hash
from redsession.commands import Op
from redsession.core import SessionCore
from redsession.errors import ConcurrentModification, ConfigError, SessionNotFound
from redsession.manager import SessionManager
from redsession.models import to_us
from redsession.store import Stamp


class RotationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    sessions_rotated: int = 0
    sessions_current: int = 0
    users_rotated: int = 0
    users_current: int = 0


def rotate_session(core: SessionCore, sid: str) -> Op[bool]:
    """Re-seal one session; False when it already was current (or is gone)."""
    cipher = core.cipher
    for _ in range(core.settings.max_update_retries):
        t = core.stamp()
        try:
            h, raw = yield from core.store.fetch(sid, None, t, touch=False, history=-1)
        except SessionNotFound:
            return False
        if cipher.is_current(h["context"]) and all(cipher.is_current(r) for r in raw):
            return False
        rec = record_from_hash(sid, h, cipher)
        expires = expires_from_hash(sid, h)
        items = core._decode(raw)
        stamp = Stamp(activity=to_us(rec.last_activity), expires=expires, now=t.now)
        written = yield from core.store.write(
            sid, rec.user_id, hash_fields(rec, expires, cipher),
            [encode_interaction(i, cipher) for i in items], stamp,
            mode="cas", expect=(rec.version, rec.total_interactions),
        )  # fmt: skip
        if written:
            return True
    raise ConcurrentModification(f"session {sid!r} kept changing during key rotation")


def rotate_preferences(core: SessionCore, uid: str) -> Op[bool]:
    cipher = core.cipher
    raw = yield from core.store.get_prefs(uid)
    stale = {k: v for k, v in raw.items() if not cipher.is_current(v)}
    if not stale:
        return False
    yield from core.store.set_prefs(
        uid, {k: cipher.seal(cipher.open(v, "a preference")) for k, v in stale.items()}, []
    )
    return True


def rotate_keys(
    manager: SessionManager, *, progress: Callable[[int], None] | None = None
) -> RotationReport:
    """Re-encrypt everything under the newest of Settings.encryption_keys."""
    if not manager.core.cipher.enabled:
        raise ConfigError("no encryption keys: set REDSESSION_ENCRYPTION_KEYS (newest first)")
    counts = dict.fromkeys(RotationReport.model_fields, 0)
    for sid in list(manager.iter_session_ids()):
        done = manager.run(rotate_session(manager.core, sid))
        counts["sessions_rotated" if done else "sessions_current"] += 1
        if progress:
            progress(1)
    for uid in list(manager.iter_user_ids()):
        done = manager.run(rotate_preferences(manager.core, uid))
        counts["users_rotated" if done else "users_current"] += 1
    return RotationReport(**counts)
