"""The one exception type for mistakes a user can make or fix.

The CLI turns it into a single clear message (no traceback); the Python API lets it propagate.
Every message says what went wrong, where, and what to do about it.

An error about one of a run's options says which with ``option="time_budget"`` (a ``RunOptions``
field, or a command's own option such as ``"older_than"``), and its texts name the option as the
field ``{option}`` (or ``{option:8m}`` with a value): each front end writes it in its own terms.
``str(error)`` is in the command line's (``--time-budget 8m``); the Python API re-raises
``error.in_terms(python_argument)`` (``time_budget="8m"``). Other braces in a text are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable

OPTION_FIELD = re.compile(r"\{option(?::([^{}]*))?\}")

Naming = Callable[[str, str | None], str]  # (option, value or None) -> the option as a front end writes it


def cli_flag(option: str, value: str | None = None) -> str:
    """``time_budget`` as the command line writes it: ``--time-budget`` (``--time-budget 8m``)."""
    flag = "--" + option.replace("_", "-")
    return flag if value is None else f"{flag} {value}"


def python_argument(option: str, value: str | None = None) -> str:
    """``time_budget`` as the Python API writes it: ``time_budget=`` (``time_budget="8m"``)."""
    return f"{option}=" if value is None else f'{option}="{value}"'


class AutoTransferError(Exception):
    """A problem with the user's input or environment, explained in words.

    ``what``, ``where`` and ``fix`` are the texts as shown (the option named in the terms the error
    was rendered in); ``option`` is the run option the error concerns, if one.
    """

    def __init__(
        self,
        what: str,
        *,
        where: str | None = None,
        fix: str | None = None,
        option: str | None = None,
        naming: Naming = cli_flag,
    ) -> None:
        self.option = option
        self._templates = (what, where, fix)
        self.what, self.where, self.fix = (self._render(text, naming) for text in self._templates)
        parts = [self.what]
        if self.where:
            parts.append(f"Where: {self.where}")
        if self.fix:
            parts.append(f"What to do: {self.fix}")
        super().__init__("\n".join(parts))

    def _render(self, text: str | None, naming: Naming) -> str | None:
        if text is None or self.option is None:
            return text
        return OPTION_FIELD.sub(lambda match: naming(self.option, match[1]), text)

    def in_terms(self, naming: Naming) -> AutoTransferError:
        """The same error with its option written by ``naming`` (e.g. ``python_argument``)."""
        what, where, fix = self._templates
        return type(self)(what, where=where, fix=fix, option=self.option, naming=naming)


def written_by_another_version(what: str, fields: list[str]) -> AutoTransferError:
    """The one error for a run directory's ``what`` (e.g. "trial record") whose ``fields`` this version does
    not read (unknown or missing): the run was written by another version, and is not converted."""
    from autotransfer import __version__

    return AutoTransferError(
        f"The {what} in this run directory has fields this version of autotransfer ({__version__}) does not "
        f"read ({', '.join(fields)}): another version wrote it.",
        fix="run fit again with a new --out (this version cannot read or resume that run).",
    )
