"""Keeping the broker API key out of the queue database in plain text (docs/design.md, "Secrets").

A webhook payload carries ``apikey``.  The queue stores it Fernet-encrypted with a key
derived from ``API_KEY_PEPPER`` (as OpenAlgo does for its own tokens) and identifies the
account by an HMAC of the key, so rate limits can be kept per account without decrypting.
PBKDF2 costs tens of milliseconds, so the Fernet key is derived once per pepper.

The pepper comes from the settings (the only reader of the environment); the runtime
builds the one ``KeySealing`` of the process from it.
"""

import base64
import hashlib
import hmac
import threading
from collections import OrderedDict

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

PEPPER_VARIABLE = "API_KEY_PEPPER"
_SALT = b"openalgo-durable-order-queue"
_ITERATIONS = 100_000


class CredentialsUnavailable(Exception):
    """The stored API key cannot be decrypted (pepper changed or token corrupt)."""


class KeySealing:
    """Seals and opens broker API keys with one pepper.  The runtime builds one from the
    settings and hands it to the store, which seals at enqueue; the sender and the
    reconciler open keys through ``store.sealing``.  Nothing else holds a pepper."""

    def __init__(self, pepper: str):
        """Raises ``CredentialsUnavailable`` for a pepper too short to derive a key from."""
        if len(pepper or "") < 32:
            raise CredentialsUnavailable(
                f"{PEPPER_VARIABLE} must be set to at least 32 characters to encrypt API keys"
            )
        self._pepper = pepper.encode()
        # Derived now (tens of ms), not on a request's time; held here and nowhere else.
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_SALT, iterations=_ITERATIONS)
        self._fernet = Fernet(base64.urlsafe_b64encode(kdf.derive(self._pepper)))
        self._sealed: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._sealed_lock = threading.Lock()

    def seal(self, api_key: str) -> str:
        """Encrypt ``api_key`` for storage."""
        return self._fernet.encrypt(api_key.encode()).decode()

    def unseal(self, token: str) -> str:
        """Decrypt a stored key; raise ``CredentialsUnavailable`` instead of crashing."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError, AttributeError) as exc:
            raise CredentialsUnavailable("stored API key cannot be decrypted") from exc

    def seal_with_account(self, api_key: str) -> tuple[str, str]:
        """``(seal(api_key), account id)`` for an order being queued; the account id is
        a stable, non-reversible HMAC of the key (16 hex characters).  Every order of
        an account carries the same key, so the pair is made once per key and pepper
        and reused (the last ``SEALED_KEPT`` keys, in this object only): the shared
        token tells nothing the account column does not."""
        with self._sealed_lock:
            if api_key in self._sealed:
                self._sealed.move_to_end(api_key)
                return self._sealed[api_key]
        sealed = (
            self.seal(api_key),
            hmac.new(self._pepper, api_key.encode(), hashlib.sha256).hexdigest()[:16],
        )
        with self._sealed_lock:
            self._sealed[api_key] = sealed
            while len(self._sealed) > SEALED_KEPT:
                self._sealed.popitem(last=False)
        return sealed


#: API keys whose sealed form a ``KeySealing`` reuses (one per broker account in use).
SEALED_KEPT = 256


def mask(api_key: str | None) -> str:
    """``****abcd``: enough to tell keys apart on screen, useless to an attacker."""
    if not api_key:
        return ""
    return "****" + api_key[-4:] if len(api_key) > 8 else "****"
