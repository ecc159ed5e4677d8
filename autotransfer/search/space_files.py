"""Where a search space's YAML file is, found without reading it: a built-in space by name or a user's file.

Light on purpose (no torch, no scikit-learn): ``fit --search-space nosuch`` is refused before the engine
is imported (option_checks.py); search/space.py reads and checks the file it names.
"""

from __future__ import annotations

import os
from pathlib import Path

from autotransfer.errors import AutoTransferError

SPACES_DIR = Path(__file__).resolve().parent / "spaces"


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def space_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file of a built-in space (``fast``, ``default``, ``thorough``) or of a file given by path."""
    path = Path(name_or_path)
    if not path.suffix and (SPACES_DIR / f"{path}.yaml").is_file():
        path = SPACES_DIR / f"{path}.yaml"
    if not path.is_file():
        raise AutoTransferError(
            f"No search space {str(name_or_path)!r}.",
            where=f"{{option:{name_or_path}}} (looked for {path.resolve()})",
            fix=f"use one of {', '.join(available_spaces())}, or the path of a YAML file.",
            option="search_space",
        )
    return path
