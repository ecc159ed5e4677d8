"""A run's Optuna storage URL checked before any work, without importing Optuna (SQLAlchemy parses it):
a malformed URL, an unknown database, a missing driver and an SQLite file that cannot be written are
each one message saying which."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from autotransfer.errors import AutoTransferError


def storage_url(url: str) -> str:
    """``postgresql://`` names SQLAlchemy's psycopg2 driver; use psycopg 3 (the ``[postgres]`` extra)
    when only that one is installed. Explicit drivers (``postgresql+psycopg2://``) are kept."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def hide_password(url: str) -> str:
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


DRIVER_EXTRAS = {"postgresql": "pip install 'autotransfer[postgres]' (psycopg 3)"}
# A driver's import name -> the PyPI package that installs it, where they differ (SQLAlchemy's dialect docs).
DRIVER_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "psycopg2": "psycopg2-binary",
    "cx_Oracle": "oracledb",
}


def check_storage_url(url: str) -> None:
    """Before any work: a malformed storage URL, or one whose database driver is not installed,
    is one message saying which (SQLAlchemy's ``make_url`` parses it, the dialect imports its driver)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = hide_password(url)
    example = "e.g. sqlite:///study.db or postgresql://user:password@host:5432/db"
    try:
        parsed = make_url(storage_url(url))
    except (ArgumentError, ValueError) as error:
        raise AutoTransferError(
            f"The {{option}} URL {shown!r} is malformed: {error}.",
            where="{option}",
            fix=f"write it as {example}.",
            option="storage",
        ) from error
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError as error:
        raise AutoTransferError(
            f"The {{option}} URL {shown!r} names an unknown database {parsed.drivername!r}.",
            where="{option}",
            fix=f"use sqlite or postgresql, {example}.",
            option="storage",
        ) from error
    try:
        dialect.import_dbapi()
    except ImportError as error:
        backend = parsed.get_backend_name()
        driver = getattr(error, "name", None) or parsed.get_driver_name()
        install = DRIVER_EXTRAS.get(backend) or f"pip install {DRIVER_PACKAGES.get(driver, driver)}"
        raise AutoTransferError(
            f"The database driver for {backend} URLs ({driver}) is not installed, so {{option:{shown}}} "
            "cannot be opened.",
            where="{option}",
            fix=f"{install}.",
            option="storage",
        ) from error
    if parsed.get_backend_name() == "sqlite":
        check_sqlite_file(parsed.database, shown)


def check_sqlite_file(database: str | None, shown: str) -> None:
    """An SQLite study file must be writable, or be creatable in a folder that exists and is writable
    (SQLite creates the file, never its folder); ``:memory:`` and an empty name need no file."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists():
        problem = None if path.is_file() and os.access(path, os.W_OK) else "it is not a file this user can write"
    elif not path.parent.is_dir():
        problem = f"its folder {path.parent} does not exist"
    else:
        problem = _cannot_create(path)
    if problem:
        raise AutoTransferError(
            f"The {{option}} URL {shown!r} names the SQLite file {path}, but {problem}.",
            where="{option}",
            fix="give a file in a folder you can write to, e.g. sqlite:///study.db (in the current folder), "
            "or create the folder first.",
            option="storage",
        )


def _cannot_create(path: Path) -> str | None:
    """Why no file can be created next to ``path``, found by creating a temporary one there (permission
    bits do not tell root that /proc takes no files); None when one can. The study's own name is never
    touched: another worker may be creating it at this moment."""
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".autotransfer-check-"):
            pass
    except OSError as error:
        return f"no file can be created in its folder ({error.strerror or error})"
    return None
