"""Writing run files: small files (JSON, CSV, HTML) replaced atomically, so a reader never sees half of
one, and one clear message for a full disk whichever layer hits it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import AutoTransferError


def write_text_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # the previous file, if any, is untouched
        raise


def is_disk_full(error: BaseException) -> bool:
    """Out of disk space or quota, whichever layer noticed (an OSError, or SQLite through SQLAlchemy)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "database or disk is full" in str(error) or "No space left on device" in str(error)


def disk_full_error(error: BaseException, where: Path) -> AutoTransferError:
    return AutoTransferError(f"The disk is full: {str(error)[:200]}", where=str(where),
                             fix="free some space (or point --out / AUTOTRANSFER_CACHE at a larger disk), then run "
                                 "the same command again: finished trials and caches are kept.")
