"""Debian packages as data: downloaded with ``apt-get download`` and unpacked into the cache, never installed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from autotransfer.errors import AutoTransferError
from autotransfer.settings import cache_dir


def debian_package(package: str, *, version: str | None = None, sha256: str | None = None) -> Path:
    """Debian ``package`` unpacked in the cache: ``apt-get download`` + ``dpkg-deb -x``, never installed.

    ``version`` pins the download (``package=version``); ``sha256`` is checked against the .deb before
    it is unpacked (apt checks it too, against the archive's signed index; this also pins the content).
    """
    root = cache_dir() / "debian" / package
    if not (root / ".complete").exists() and not (root / "usr").is_dir():  # "usr" alone: unpacked by an older version
        with tempfile.TemporaryDirectory() as tmp:
            download = ["apt-get", "download", f"{package}={version}" if version else package]
            if subprocess.run(download, cwd=tmp, capture_output=True).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
                subprocess.run(download, cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("*.deb"))
            if sha256 and (digest := hashlib.sha256(deb.read_bytes()).hexdigest()) != sha256:
                raise AutoTransferError(
                    f"The Debian package {deb.name} has SHA-256 {digest}, not the pinned {sha256}.",
                    fix="check the machine's apt sources (the pin is in autotransfer/data/); nothing was unpacked.",
                )
            staging = Path(tmp) / "x"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            (staging / ".complete").write_text(deb.name + "\n")
            root.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(root, ignore_errors=True)
            shutil.move(str(staging), root)
    return root
