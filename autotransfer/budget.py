"""The wall-clock budget of a whole command: parsing ``90s`` / ``10m`` / ``1h30m``, and the deadline."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from autotransfer.errors import AutoTransferError

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)?", re.IGNORECASE)
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, None: 1.0}


POSITIVE = "write e.g. 90s, 10m or 2h."


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``10m``, ``2h``, ``1h30m``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        value = str(text).strip()
        if value.startswith("-"):
            raise AutoTransferError(
                f"The time budget must be positive, got {text!r}.", where="{option}", fix=POSITIVE, option="time_budget"
            )
        parts = _PART.findall(value)
        if not value or "".join(n + (u or "") for n, u in parts).lower() != value.replace(" ", "").lower():
            raise AutoTransferError(
                f"Cannot read the time budget {text!r}.",
                where="{option}",
                fix="write e.g. 90s, 10m, 2h or 1h30m.",
                option="time_budget",
            )
        seconds = sum(float(n) * _UNIT[u.lower() if u else None] for n, u in parts)
    if seconds <= 0:
        raise AutoTransferError(
            f"The time budget must be positive, got {text!r}.", where="{option}", fix=POSITIVE, option="time_budget"
        )
    return seconds


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


@dataclass
class Deadline:
    """``seconds`` from ``start`` (a monotonic clock reading: the command's own start)."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def less(self, seconds: float) -> Deadline:
        """The same start, ``seconds`` earlier: what a step may use when work after it needs its time."""
        return Deadline(self.seconds - seconds, self.start)
