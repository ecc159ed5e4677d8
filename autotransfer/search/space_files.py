"""Where a search space's YAML file is, found without reading it: a built-in space by name or a user's file.

Light on purpose (no torch, no scikit-learn): ``fit --search-space nosuch`` is refused before the engine
is imported (option_checks.py); search/space.py reads and checks the file it names.
"""

from __future__ import annotations

import os
from pathlib import Path

from autotransfer.builtin_yaml import builtin_or_path, names_in

SPACES_DIR = Path(__file__).resolve().parent / "spaces"


def available_spaces() -> list[str]:
    return names_in(SPACES_DIR)


def space_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file of a built-in space (``fast``, ``default``, ``thorough``) or of a file given by path."""
    return builtin_or_path(name_or_path, SPACES_DIR, kind="search space", option="search_space")
