"""The run directory: one lock, an identity check (the same data and settings, or refuse), the log.

A run directory is enough to resume: ``run.json`` says what it holds. Several workers may share one
(they share its study); only the lock holder may clean up after a killed run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from autotransfer.errors import AutoTransferError
from autotransfer.files import write_text_atomic


class RunDirectory:
    """``out`` opened for one run. ``sole_owner``: no other process works in it now."""

    def __init__(self, out: Path, identity: dict) -> None:
        self.out = out
        self.identity = json.loads(json.dumps(identity))
        self.sole_owner = False
        self.created = False

    def check_identity(self) -> None:
        """Refuse a directory that holds a search with other data or settings."""
        run_file = self.out / "run.json"
        if not run_file.exists():
            write_text_atomic(run_file, json.dumps(self.identity, indent=2))
            return
        previous = json.loads(run_file.read_text())
        changed = [k for k in self.identity if previous.get(k) != self.identity[k]]
        if changed:
            raise AutoTransferError(
                f"{self.out} holds a search with another {', '.join(changed)}.",
                where=str(self.out),
                fix="use another {option}, or the same data and settings.",
                option="out",
            )

    def discard_if_empty(self) -> None:
        """A run refused before any trial leaves nothing behind (only a directory this run created)."""
        if self.created and self.sole_owner:
            shutil.rmtree(self.out, ignore_errors=True)

    @contextlib.contextmanager
    def opened(self) -> Iterator[RunDirectory]:
        """Lock (shared use allowed, noted in ``sole_owner``), check identity, log to ``fit.log``."""
        self.created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.out / "run.lock", "w")  # noqa: SIM115  (closed by the with below)
        except OSError as error:  # /proc, a read-only mount, a file in the way: before any work is done
            raise AutoTransferError(
                f"Cannot write the run directory {self.out}: {error.strerror or error}.",
                where=str(self.out),
                fix="choose an {option} in a folder you can write to.",
                option="out",
            ) from error
        with lock_file as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.sole_owner = True
            except BlockingIOError:  # another fit works here: share its study, never clean up for it
                self.sole_owner = False
            handler = logging.FileHandler(self.out / "fit.log")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger = logging.getLogger("autotransfer")
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            try:
                self.check_identity()
                yield self
            finally:
                logger.removeHandler(handler)
                handler.close()
