"""Host stand-in: the engine and session for the host's own tables.

OpenAlgo keeps users, API keys and strategies in ``db/openalgo.db`` (``DATABASE_URL``);
the host does the same so the order queue, in its own file, is exercised the way it is
deployed.  ``configure()`` exists so each test can point the host at a fresh file.  The models
live in ``auth_db``, ``strategy_db`` and ``paper_broker_db``, each with its ``init_db``.
"""

import os

from sqlalchemy import create_engine, event
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///db/openalgo.db"

db_session = scoped_session(sessionmaker(expire_on_commit=False))


class Base(DeclarativeBase):
    pass


_engine = None


def _ensure_sqlite_directory(url: str) -> None:
    """The directory, and the file created private (0600) before SQLite opens it: it
    holds users, password hashes and API keys."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        path = url[len("sqlite:///") :]
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        try:  # only a new file: closing a descriptor of an open one drops SQLite's locks
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass


def configure(url: str | None = None):
    """(Re)bind the host session to ``url`` (default: ``DATABASE_URL`` or db/openalgo.db)."""
    global _engine
    url = url or os.getenv("DATABASE_URL") or DEFAULT_DATABASE_URL
    _ensure_sqlite_directory(url)
    db_session.remove()
    if _engine is not None:
        _engine.dispose()
    _engine = create_engine(
        url, connect_args={"check_same_thread": False} if url.startswith("sqlite") else {}
    )
    if url.startswith("sqlite"):

        @event.listens_for(_engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.close()

    db_session.configure(bind=_engine)
    return _engine


def create_tables(*tables) -> None:
    """Create ``tables`` if absent: each host model module's ``init_db`` (the start-up
    DB init list in app.py names them, as OpenAlgo's does).  This module imports none
    of them, so models depend on it and never the other way round."""
    if _engine is None:
        configure()
    Base.metadata.create_all(_engine, tables=[table.__table__ for table in tables])
