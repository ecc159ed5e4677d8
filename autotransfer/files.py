"""Writing run files: small files (JSON, CSV, HTML) replaced atomically, so a reader never sees half of
one, and one clear message for a full disk whichever layer hits it."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autotransfer.errors import AutoTransferError

# The process's umask, read once at import (reading it means setting it, which threads must not see).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``path`` to write; when the block succeeds it replaces ``path``
    in one rename, when it fails it is removed and the previous file, if any, is untouched. Each
    call gets its own name, so concurrent writers of one path never share a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    partial = Path(name)
    os.chmod(partial, 0o666 & ~_UMASK)  # mkstemp makes it 0600: the result gets an ordinary file's mode
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with replacing(path) as partial:
        partial.write_text(text)


def is_disk_full(error: BaseException) -> bool:
    """Out of disk space or quota, whichever layer noticed (an OSError, or SQLite through SQLAlchemy)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "database or disk is full" in str(error) or "No space left on device" in str(error)


def disk_full_error(error: BaseException, where: Path) -> AutoTransferError:
    return AutoTransferError(
        f"The disk is full: {str(error)[:200]}",
        where=str(where),
        fix="free some space (or point {option} / AUTOTRANSFER_CACHE at a larger disk), then run "
        "the same command again: finished trials and caches are kept.",
        option="out",
    )
