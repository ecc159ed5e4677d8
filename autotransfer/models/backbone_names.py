"""Which backbone names exist, answered without importing torch or timm once the names are cached.

``fit --profile-backbone nosuchnet`` must be refused in well under a second, but timm's list of
architectures needs timm, hence torch (seconds). The names (timm's architectures, the offline zoo and
our torchvision ones) depend only on the installed timm, models/zoo.py and models/torchvision_specs.py,
so they are kept in the cache under a key of those, as `zoo list`'s descriptions are (models/zoo_table.py).
The first check on a machine builds the file (the slow way, once).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from autotransfer.errors import AutoTransferError
from autotransfer.files import write_text_atomic
from autotransfer.settings import cache_dir

log = logging.getLogger(__name__)
TORCHVISION_PREFIX = "tv:"  # as in models/zoo.py


@dataclass(frozen=True)
class BackboneNames:
    """timm's architectures, our torchvision architectures (without ``tv:``) and the zoo's known names."""

    timm: frozenset[str]
    torchvision: tuple[str, ...]
    known: tuple[str, ...]

    def is_known(self, name: str) -> bool:
        """A timm architecture (a pretrained tag such as ``resnet50.a1_in1k`` allowed) or a supported
        torchvision one (``tv:resnet18``), as models/zoo.py's create_backbone accepts."""
        if name.startswith(TORCHVISION_PREFIX):
            return name.removeprefix(TORCHVISION_PREFIX) in self.torchvision
        return ":" not in name and name.split(".")[0] in self.timm

    def similar(self, name: str, n: int = 5) -> list[str]:
        """The nearest known names to ``name``: ``mobilenetv2_10`` -> ``mobilenetv2_100``, ... (names the
        query begins, shortest first, then difflib's nearest look-alikes), not alphabetical neighbours."""
        candidates = set(self.known) | {TORCHVISION_PREFIX + a for a in self.torchvision} | self.timm
        base = name.strip().lower().split(".")[0]  # a pretrained tag (resnet50.a1_in1k) does not take part
        prefixed = sorted((c for c in candidates if c.startswith(base) and c != base), key=lambda c: (len(c), c))
        close = difflib.get_close_matches(base, sorted(candidates), n=n, cutoff=0.6)
        return list(dict.fromkeys([*prefixed[:3], *close]))[:n]

    def unknown_error(self, name: str, where: str | None = None, option: str | None = None) -> AutoTransferError:
        """The message for a backbone name nobody knows: the nearest names, and where the name came from."""
        close = self.similar(name)
        kind = "Unsupported torchvision backbone" if name.startswith(TORCHVISION_PREFIX) else "Unknown backbone"
        return AutoTransferError(
            f"{kind} {name!r}." + (f" Did you mean: {', '.join(close)}?" if close else ""),
            where=where,
            fix="use a timm model name (`timm.list_models()`), a torchvision one as 'tv:resnet18' "
            f"({', '.join(TORCHVISION_PREFIX + a for a in self.torchvision)}), or see `autotransfer zoo list`.",
            option=option,
        )


def _key() -> str:
    here = Path(__file__).parent
    parts = [metadata.version("timm"), *((here / f).read_bytes().hex() for f in ("zoo.py", "torchvision_specs.py"))]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


def live_names() -> BackboneNames:
    """The names from timm and models/zoo.py themselves (imports torch)."""
    from autotransfer.models import zoo
    from autotransfer.models.torchvision_specs import TORCHVISION_SPECS

    return BackboneNames(
        timm=frozenset(zoo._import_timm().list_models()),
        torchvision=tuple(TORCHVISION_SPECS),
        known=tuple(zoo.known_backbones()),
    )


def backbone_names() -> BackboneNames:
    """The cached names, built (and cached) from timm on the first call on this machine."""
    path = cache_dir() / "backbone-names" / f"{_key()}.json"
    try:
        stored = json.loads(path.read_text())
        return BackboneNames(frozenset(stored["timm"]), tuple(stored["torchvision"]), tuple(stored["known"]))
    except (OSError, ValueError, KeyError):
        pass
    names = live_names()
    document = {"timm": sorted(names.timm), "torchvision": list(names.torchvision), "known": list(names.known)}
    try:
        write_text_atomic(path, json.dumps(document))
    except OSError as error:  # a read-only cache costs only speed
        log.debug("cannot cache the backbone names (%s)", error)
    return names


def check_backbone_name(name: str, *, where: str | None = None, option: str | None = None) -> None:
    """Raise the unknown-backbone error for ``name`` unless timm or our torchvision list knows it."""
    names = backbone_names()
    if not names.is_known(name):
        raise names.unknown_error(name, where, option)
