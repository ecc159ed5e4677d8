"""The one exception type for mistakes a user can make or fix.

The CLI turns it into a single clear message (no traceback); the Python API lets it propagate.
Every message says what went wrong, where, and what to do about it.
"""

from __future__ import annotations


class AutoTransferError(Exception):
    """A problem with the user's input or environment, explained in words."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what, self.where, self.fix = what, where, fix
        parts = [what]
        if where:
            parts.append(f"Where: {where}")
        if fix:
            parts.append(f"What to do: {fix}")
        super().__init__("\n".join(parts))
