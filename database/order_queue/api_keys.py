"""Keeping the broker API key out of the queue database in plain text (docs/design.md, "Secrets").

A webhook payload carries ``apikey``.  The queue stores it Fernet-encrypted with a key
derived from ``API_KEY_PEPPER`` (as OpenAlgo does for its own tokens) and identifies the
account by an HMAC of the key, so rate limits can be kept per account without decrypting.
PBKDF2 costs tens of milliseconds, so the Fernet key is derived once per pepper.

The pepper comes from the settings (the only reader of the environment), handed over
once at start by ``use_pepper``; until then sealing refuses.
"""

import base64
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

PEPPER_VARIABLE = "API_KEY_PEPPER"
_SALT = b"openalgo-durable-order-queue"
_ITERATIONS = 100_000


class CredentialsUnavailable(Exception):
    """The stored API key cannot be decrypted (pepper changed or token corrupt)."""


_current_pepper = b""


def use_pepper(pepper: str) -> None:
    """Seal and open keys with ``pepper`` from now on (``API_KEY_PEPPER``).  Raises
    ``CredentialsUnavailable`` for one too short to derive a key from."""
    global _current_pepper
    if len(pepper or "") < 32:
        raise CredentialsUnavailable(
            f"{PEPPER_VARIABLE} must be set to at least 32 characters to encrypt API keys"
        )
    _current_pepper = pepper.encode()


def _pepper() -> bytes:
    if not _current_pepper:
        raise CredentialsUnavailable(f"{PEPPER_VARIABLE} has not been configured")
    return _current_pepper


@lru_cache(maxsize=4)
def _fernet_for(pepper: bytes) -> Fernet:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_SALT, iterations=_ITERATIONS)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(pepper)))


def seal(api_key: str) -> str:
    """Encrypt ``api_key`` for storage."""
    return _fernet_for(_pepper()).encrypt(api_key.encode()).decode()


def unseal(token: str) -> str:
    """Decrypt a stored key; raise ``CredentialsUnavailable`` instead of crashing."""
    try:
        return _fernet_for(_pepper()).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError, AttributeError) as exc:
        raise CredentialsUnavailable("stored API key cannot be decrypted") from exc


def seal_with_account(api_key: str) -> tuple[str, str]:
    """``(seal(api_key), account id)`` for an order being queued; the account id is a
    stable, non-reversible HMAC of the key (16 hex characters).  Every order of an
    account carries the same key, so the pair is made once per key and pepper and
    reused: the shared token tells nothing the account column does not already."""
    return _sealed_with_account(_pepper(), api_key)


@lru_cache(maxsize=256)
def _sealed_with_account(pepper: bytes, api_key: str) -> tuple[str, str]:
    return (
        _fernet_for(pepper).encrypt(api_key.encode()).decode(),
        hmac.new(pepper, api_key.encode(), hashlib.sha256).hexdigest()[:16],
    )


def mask(api_key: str | None) -> str:
    """``****abcd``: enough to tell keys apart on screen, useless to an attacker."""
    if not api_key:
        return ""
    return "****" + api_key[-4:] if len(api_key) > 8 else "****"
