"""Encryption at rest: interaction records, contexts, preferences and dump files.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under MultiFernet: the first key in
Settings.encryption_keys encrypts, every key decrypts, so keys rotate without downtime.
Data written before encryption was turned on stays readable (it is not a Fernet token) until
`rotate-keys` encrypts it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from redsession.errors import ConfigError, DecryptionError

# Every Fernet token is base64url of a 0x80 version byte and a 64-bit timestamp; no JSON
# document redsession writes starts like this.
TOKEN_PREFIX = b"gAAAAA"


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

    @property
    def enabled(self) -> bool:
        return self._multi is not None

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
