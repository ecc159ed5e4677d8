"""The rows of `autotransfer zoo list`, without importing torch or timm when nothing changed.

Describing a backbone builds it on the meta device: torch and timm imports plus ten model
constructions, seconds before the first line. What it finds (taps, depth groups, native size)
depends only on the code of autotransfer and the installed timm and torch, so it is kept in the
cache under a key of those; only whether the weights are on this machine is looked at each time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path

from autotransfer.files import write_text_atomic
from autotransfer.models.weights import weights_available_offline
from autotransfer.settings import cache_dir

log = logging.getLogger(__name__)


def _key() -> str:
    """Versions of timm and torch and the bytes of the modules that define the descriptions."""
    parts = [metadata.version(name) for name in ("timm", "torch")]
    parts += [(Path(__file__).parent / module).read_bytes().hex() for module in ("zoo.py", "torchvision_specs.py")]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


def _described() -> list[dict]:
    """Every known backbone's description (zoo.describe_known), the weights column left out."""
    path = cache_dir() / "zoo-list" / f"{_key()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    from autotransfer.models.zoo import describe_known, known_backbones

    rows = [{k: v for k, v in describe_known(name).items() if k != "weights_available"} for name in known_backbones()]
    try:
        write_text_atomic(path, json.dumps(rows))
    except OSError as error:  # a read-only cache costs only speed
        log.debug("zoo list: cannot cache the descriptions (%s)", error)
    return rows


def known_rows() -> list[dict]:
    """One dict per known backbone, as zoo.describe_known gives it (``weights_available`` looked up now)."""
    return [{**row, "weights_available": weights_available_offline(row["name"])} for row in _described()]
