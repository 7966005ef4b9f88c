"""Host stand-in: users and their OpenAlgo API keys.

Same role and function names as OpenAlgo's ``database.auth_db``.  The key is kept
Fernet-encrypted (for giving it back to the webhook handler) plus an HMAC digest (for
verifying keys on ``/api/v1``), never in plain text.
"""

import base64
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from database.host_db import Base, create_tables, db_session

DEFAULT_USER = "admin"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(80), unique=True)
    key_digest: Mapped[str] = mapped_column(String(64), index=True)
    key_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime, default=lambda: datetime.now(UTC).replace(tzinfo=None)
    )


def init_db() -> None:
    """Create the tables for users and their API keys (the start-up DB init list)."""
    create_tables(User, ApiKey)


def _pepper() -> bytes:
    return os.environ["API_KEY_PEPPER"].encode()


@lru_cache(maxsize=4)
def _fernet(pepper: bytes) -> Fernet:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=b"openalgo-host-api-keys", iterations=100_000
    )
    return Fernet(base64.urlsafe_b64encode(kdf.derive(pepper)))


def _digest(api_key: str) -> str:
    return hmac.new(_pepper(), api_key.encode(), hashlib.sha256).hexdigest()


def ensure_user(username: str, password: str | None = None) -> User:
    """Return the user, creating it (with ``password``, or a random one) if absent."""
    user = db_session.scalar(select(User).where(User.username == username))
    if user is None:
        user = User(
            username=username,
            password_hash=generate_password_hash(password or secrets.token_urlsafe(16)),
        )
        db_session.add(user)
        db_session.commit()
    elif password:
        user.password_hash = generate_password_hash(password)
        db_session.commit()
    return user


#: Checked against when the user does not exist, so an unknown name costs the same hash
#: as a wrong password and timing does not tell which usernames exist.
_NOBODY_HASH = generate_password_hash("no such user")


def authenticate_user(username: str, password: str) -> bool:
    user = db_session.scalar(select(User).where(User.username == username))
    matches = check_password_hash(user.password_hash if user else _NOBODY_HASH, password)
    return bool(user and matches)


def ensure_api_key(user_id: str) -> str:
    """Return the user's API key, creating one if the user has none."""
    existing = get_api_key_for_tradingview(user_id)
    if existing:
        return existing
    api_key = secrets.token_hex(32)
    db_session.add(
        ApiKey(
            user_id=user_id,
            key_digest=_digest(api_key),
            key_encrypted=_fernet(_pepper()).encrypt(api_key.encode()).decode(),
        )
    )
    db_session.commit()
    return api_key


class PepperChanged(Exception):
    """The stored API keys were encrypted with another ``API_KEY_PEPPER``."""


PEPPER_CHANGED = (
    "API_KEY_PEPPER is not the one the API keys were stored with: put the "
    "previous API_KEY_PEPPER back in .env and restart; nothing was queued"
)


def get_api_key_for_tradingview(user_id: str) -> str | None:
    """The user's API key in clear text (what the webhook handler puts in the payload).
    Raises ``PepperChanged`` when it cannot be decrypted with this pepper."""
    row = db_session.scalar(select(ApiKey).where(ApiKey.user_id == user_id))
    if row is None:
        return None
    try:
        return _fernet(_pepper()).decrypt(row.key_encrypted.encode()).decode()
    except InvalidToken:
        raise PepperChanged(PEPPER_CHANGED) from None


def verify_api_key(api_key: str) -> str | None:
    """Return the user id owning ``api_key``, or None."""
    if not isinstance(api_key, str) or not api_key:
        return None
    row = db_session.scalar(select(ApiKey).where(ApiKey.key_digest == _digest(api_key)))
    return row.user_id if row else None
