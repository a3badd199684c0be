"""Encryption at rest: interaction records, contexts, preferences and dump files.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under MultiFernet: the first key in
Settings.encryption_keys encrypts, every key decrypts, so keys rotate without downtime.
Data written before encryption was turned on stays readable (it is not a Fernet token) until
`rotate-keys` encrypts it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from redsession.errors import ConfigError, DecryptionError

# Every Fernet token is base64url of a 0x80 version byte and a 64-bit timestamp; no JSON
# document redsession writes starts like this.
TOKEN_PREFIX = b"gAAAAA"
# A token: version (1 byte), timestamp (8), IV (16), AES-CBC ciphertext (16n, n >= 1), HMAC (32).
_TOKEN_OVERHEAD = 1 + 8 + 16 + 32


def fingerprint(key: str | bytes) -> str:
    """A short non-secret name for a Fernet key: the first 8 hex digits of its SHA-256.

    Fernet tokens carry no key id, so this names the configured keys in messages; an
    operator gets the same from ``printf %s "$KEY" | sha256sum | cut -c1-8``.
    """
    raw = key.encode() if isinstance(key, str) else key
    canonical = base64.urlsafe_b64encode(base64.urlsafe_b64decode(raw))
    return hashlib.sha256(canonical).hexdigest()[:8]


def sealed_at(data: bytes) -> datetime | None:
    """When a well-formed Fernet token says it was sealed (in the clear, unauthenticated).

    None for anything that cannot be a whole token (damaged, truncated, not base64): such
    data is broken whatever the key, whereas a well-formed token no key opens points at a
    missing key (or a forgery).
    """
    try:
        # Strict: urlsafe_b64decode would skip stray bytes and could make garbage look whole.
        raw = base64.b64decode(data.strip(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    body = len(raw) - _TOKEN_OVERHEAD
    if raw[:1] != b"\x80" or body < 16 or body % 16:
        return None
    try:
        return datetime.fromtimestamp(int.from_bytes(raw[1:9], "big"), timezone.utc)
    except (OverflowError, OSError, ValueError):  # a time no Fernet could have written
        return None


class Cipher:
    """Seals and opens stored bytes; with no keys it passes them through unchanged."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        try:
            fernets = [Fernet(k) for k in keys]
        except (ValueError, TypeError) as e:
            raise ConfigError(
                "an encryption key is not a Fernet key (32 url-safe base64 bytes; make one "
                "with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            ) from e
        self._multi = MultiFernet(fernets) if fernets else None
        self._newest = fernets[0] if fernets else None
        self._fingerprints = [fingerprint(k) for k in keys]

    @property
    def enabled(self) -> bool:
        return self._multi is not None

    def fingerprints(self) -> list[str]:
        """The configured keys' fingerprints (see ``fingerprint``), newest first."""
        return list(self._fingerprints)

    def seal(self, data: bytes) -> bytes:
        return self._multi.encrypt(data) if self._multi else data

    def open(self, data: bytes | str, what: str = "data") -> bytes:
        raw = data.encode() if isinstance(data, str) else data
        if not raw.startswith(TOKEN_PREFIX):
            return raw  # written before encryption was turned on
        if self._multi is None:
            raise DecryptionError(
                f"{what} is encrypted but no key is configured: set REDSESSION_ENCRYPTION_KEYS"
            )
        try:
            return self._multi.decrypt(raw)
        except InvalidToken:
            raise DecryptionError(
                f"{what} cannot be decrypted with the configured keys (wrong or missing key)"
            ) from None

    def is_current(self, data: bytes | str) -> bool:
        """Whether ``data`` is already sealed under the newest key (or needs no sealing)."""
        if self._newest is None:
            return True
        raw = data.encode() if isinstance(data, str) else data
        if not raw.startswith(TOKEN_PREFIX):
            return False
        try:
            self._newest.decrypt(raw)
        except InvalidToken:
            return False
        return True
