"""What every command module shares: the two consoles, the run defaults shown in --help, the checks of
an output path before any work, and the checkpoint-path check that needs no torch."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from autotransfer.errors import AutoTransferError
from autotransfer.options import DEFAULTS as RUN_DEFAULTS

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
DEFAULTS = asdict(RUN_DEFAULTS)  # autotransfer/options.py: light, so --help stays fast
# Piped output (CI logs, `| less`) gets a width that fits the tables instead of rich's default 80.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def prepare_output(path: Path, option: str, directory: bool = False) -> None:
    """Check before any work that ``path`` (a file, or a folder with ``directory``) can be written.

    A file's folder must exist (a mistyped folder would otherwise be created silently, the output lost
    among folders nobody looks in); a run folder's parents are created. A file in the way or a
    read-only place is one clear error."""
    if not directory and path.is_dir():
        raise AutoTransferError(
            f"{option} {path} is a folder; a file name is needed.", where=str(path), fix="give a file path."
        )
    if directory and path.exists() and not path.is_dir():
        raise AutoTransferError(
            f"{option} {path} is a file; a folder is needed.", where=str(path), fix="give a folder path."
        )
    in_the_way = any(p.exists() and not p.is_dir() for p in [path.parent, *path.parent.parents])
    if not directory and not in_the_way and not path.parent.is_dir():
        raise AutoTransferError(
            f"Cannot write {option} {path}: the folder {path.parent} does not exist.",
            where=str(path.parent),
            fix=f"create it first (mkdir -p {path.parent}) or give a file in an existing folder.",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(path, option, error) from error
    if directory and not path.exists():
        _check_creatable(path, option)
    if not os.access(path.parent, os.W_OK):
        raise output_error(path, option, PermissionError(13, "Permission denied", str(path.parent)))
    if not directory:  # os.access says yes to root in places no file can be made (/proc, /sys): try it
        existed = path.exists()
        try:
            with open(path, "a"):
                pass
        except OSError as error:
            raise output_error(path, option, error) from error
        if not existed:
            path.unlink(missing_ok=True)


def _check_creatable(path: Path, option: str) -> None:
    """Create the folder ``path`` and remove it again: a place where no folder can be made (under /proc, a
    read-only mount) is refused now rather than when the run creates it, after the heavy imports. Removed so
    that an argument refused later leaves nothing behind; a folder another process filled meanwhile stays."""
    try:
        path.mkdir()
    except FileExistsError:
        return
    except OSError as error:
        raise AutoTransferError(
            f"Cannot create {option} {path}: {error.strerror or error}.",
            where=str(path),
            fix="choose a path in a folder you can write to.",
        ) from error
    with contextlib.suppress(OSError):
        path.rmdir()


def output_error(path: Path, option: str, error: OSError, note: str = "") -> AutoTransferError:
    """An OSError met while writing an output, as one message naming the path and the way out."""
    blocking = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None and blocking != path:
        what = f"Cannot write {option} {path}: {blocking} is a file, not a folder."
    else:
        what = f"Cannot write {option} {path}: {error.strerror or error}."
    return AutoTransferError(what + note, where=str(path), fix="choose a path in a folder you can write to.")


def check_inputs_exist(inputs: list[Path]) -> None:
    """``predict``'s inputs when none of them exists (a typo), answered before the pipeline and torch are
    loaded; a missing one among others is that input's own error row."""
    if inputs and not any(p.exists() or p.is_symlink() for p in inputs):
        names = ", ".join(str(p) for p in inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
        raise AutoTransferError(
            f"No such file or folder: {names}.",
            where=names,
            fix="give image files or folders of images that exist (check the path, relative to the current folder).",
        )


def check_weights_path(path: Path | None) -> None:
    """A ``--weights`` path that does not exist, answered before torch and timm are imported (seconds);
    what a file or folder that exists holds is checked when the backbone loads it (models/weights.py)."""
    if path is not None and not path.expanduser().exists():
        raise AutoTransferError(
            f"No weights at {path}: the path does not exist.",
            where=f"--weights {path}",
            fix="pass an existing .safetensors/.pth file or a folder holding one, or leave --weights out "
            "for the offline zoo's ImageNet weights.",
        )


def check_checkpoint_path(path: Path) -> None:
    """A checkpoint path that does not exist, answered before torch is imported (seconds); every other
    check of a checkpoint (a run without a pipeline, a damaged file) is Pipeline.load's."""
    if not path.exists():
        raise AutoTransferError(
            f"No pipeline checkpoint at {path}: the path does not exist.",
            where=str(path),
            fix="pass a run directory of `autotransfer fit` or a checkpoint directory.",
        )
