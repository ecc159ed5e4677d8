"""Where autotransfer keeps things on disk, and the environment variables that move them."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "AUTOTRANSFER_CACHE"
CACHE_LIMIT_ENV = "AUTOTRANSFER_CACHE_LIMIT"  # e.g. 50GB: decoded images and features beyond it are evicted (LRU)
WEIGHTS_ENV = "AUTOTRANSFER_WEIGHTS"
OFFLINE_ENV = "AUTOTRANSFER_OFFLINE"
MAX_PIXELS_ENV = "AUTOTRANSFER_MAX_IMAGE_PIXELS"


def cache_dir() -> Path:
    """Root of every cache (offline weights, decoded images, features): safe to delete."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "autotransfer"
    )
    return Path(root)


def user_weights_dir() -> Path | None:
    """A directory of ``<model name>.safetensors`` (or ``.pth``) files the user points us to."""
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def offline_mode() -> bool:
    """True when the user asked us never to touch the network (``AUTOTRANSFER_OFFLINE=1``)."""
    return os.environ.get(OFFLINE_ENV, "").lower() in {"1", "true", "yes"}
