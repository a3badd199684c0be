"""`rotate-keys`: re-encrypt every session and every user's preferences under the newest key.

Each step skips what is already sealed under the newest key, so an interrupted rotation is
resumed by running it again; each session is rewritten with a compare-and-set on its
(version, total), so a write that races with the rotation is never lost.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from redsession.core import sessions, transfer
from redsession.core.base import Core
from redsession.errors import ConcurrentModification, ConfigError, SessionNotFound
from redsession.maintenance.snapshots import Progress
from redsession.model.codec import expires_from_hash, record_from_hash, sealed_body, side_data
from redsession.model.models import to_us
from redsession.storage.commands import Op


class RotationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    sessions_rotated: int = 0
    sessions_current: int = 0
    users_rotated: int = 0
    users_current: int = 0


def rotate_keys(core: Core, progress: Progress = None) -> Op[RotationReport]:
    """Re-encrypt everything under the newest of Settings.encryption_keys."""
    if not core.cipher.enabled:
        raise ConfigError("no encryption keys: set REDSESSION_ENCRYPTION_KEYS (newest first)")
    counts = dict.fromkeys(RotationReport.model_fields, 0)
    walk = sessions.session_walk(core, None)
    while not walk.done:
        for sid in (yield from walk.next_page()):
            done = yield from rotate_session(core, sid)
            counts["sessions_rotated" if done else "sessions_current"] += 1
            if progress:
                progress(1)
    walk = sessions.user_walk(core)
    while not walk.done:
        for uid in (yield from walk.next_page()):
            done = yield from rotate_preferences(core, uid)
            counts["users_rotated" if done else "users_current"] += 1
    return RotationReport(**counts)


def rotate_session(core: Core, sid: str) -> Op[bool]:
    """Re-seal one session; False when it already was current (or is gone)."""
    cipher = core.cipher
    for _ in range(core.settings.max_update_retries):
        t = core.stamp()
        try:
            h, raw, side = yield from core.store.fetch_all(sid, None, t, side=True)
        except SessionNotFound:
            return False
        values = side.fields.values() if side else ()
        if (
            cipher.is_current(h["context"])
            and all(cipher.is_current(sealed_body(r)) for r in raw)
            and all(cipher.is_current(v) for v in values)
        ):
            return False
        rec = record_from_hash(sid, h, cipher)
        t = core.stamp(
            activity=to_us(rec.last_activity), expires=expires_from_hash(sid, h), op=core.op(None)
        )
        expect = (rec.version, rec.total_interactions)
        data = side_data(side.fields, side.members, cipher) if side else None
        # A checkpoint written meanwhile moves side_rev, not (version, total): check both.
        side_rev = h.get("side_rev", b"0").decode()
        rewritten = yield from transfer.rewrite(
            core, rec, core.decode(raw), t, mode="cas", kind="rotate", expect=expect, side=data,
            side_rev=side_rev,
        )  # fmt: skip
        if rewritten:
            return True
    raise ConcurrentModification(f"session {sid!r} kept changing during key rotation")


def rotate_preferences(core: Core, uid: str) -> Op[bool]:
    """Re-seal one user's preferences; False when they already were current."""
    cipher = core.cipher
    raw = yield from core.store.get_prefs(uid)
    stale = {k: v for k, v in raw.items() if not cipher.is_current(v)}
    if not stale:
        return False
    resealed = {k: cipher.seal(cipher.open(v, "a preference")) for k, v in stale.items()}
    yield from core.store.set_prefs(uid, resealed, [], core.stamp(op=core.op(None)))
    return True
