"""A YAML file named like a built-in one (a search space, a benchmark suite) or given by its path.

Light on purpose (no torch, no scikit-learn): the CLI refuses a wrong name before the engine is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from autotransfer.errors import AutoTransferError


def names_in(folder: Path) -> list[str]:
    """The built-in names: the stems of ``folder``'s YAML files."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def builtin_or_path(name_or_path: str | os.PathLike, folder: Path, *, kind: str, option: str) -> Path:
    """``folder/<name>.yaml`` for a built-in name, else ``name_or_path`` itself when it is a file.

    Raises AutoTransferError naming the ``kind`` ("search space"), where it looked and the built-in names."""
    path = Path(name_or_path)
    if not path.suffix and (folder / f"{path}.yaml").is_file():
        path = folder / f"{path}.yaml"
    if not path.is_file():
        raise AutoTransferError(
            f"No {kind} {str(name_or_path)!r}.",
            where=f"{{option:{name_or_path}}} (looked for {path.resolve()})",
            fix=f"use one of {', '.join(names_in(folder))}, or the path of a YAML file.",
            option=option,
        )
    return path
