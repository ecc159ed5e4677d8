"""autotransfer: find the best way to transfer an ImageNet-pretrained network to your images.

The public names below are imported on first use (PEP 562), so ``import autotransfer`` and
``autotransfer --help`` do not pay for torch and timm; ``from autotransfer import AutoTransfer``
works as before.
"""

from __future__ import annotations

import importlib

from autotransfer._torchvision_compat import install_import_hook

install_import_hook()  # the torchvision fix runs before anything can import timm or torchvision

__version__ = "0.1.0"

_PUBLIC = {
    "AutoTransfer": "autotransfer.api",
    "AutoTransferError": "autotransfer.errors",
    "Pipeline": "autotransfer.deploy.pipeline",
    "SearchSpace": "autotransfer.search.space",
    "load_search_space": "autotransfer.search.space",
    "Backbone": "autotransfer.models.zoo",
    "Dataset": "autotransfer.data.datasets",
    "DatasetProfile": "autotransfer.transfer.profile",
    "FinetuneConfig": "autotransfer.transfer.finetune",
    "FinetuneResult": "autotransfer.transfer.finetune",  # the function: autotransfer.transfer.finetune.finetune
    "RankingConfig": "autotransfer.transfer.ranking",
    "Thresholds": "autotransfer.transfer.profile",
    "TrialPruned": "autotransfer.transfer.finetune",
    "create_backbone": "autotransfer.models.zoo",
    "extract_features": "autotransfer.models.features",
    "known_backbones": "autotransfer.models.zoo",
    "load_dataset": "autotransfer.data.datasets",
    "profile_dataset": "autotransfer.transfer.profile",
    "proxy_agreement": "autotransfer.transfer.ranking",
    "rank_candidates": "autotransfer.transfer.ranking",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    try:  # subpackages, as the eager imports used to make them available (autotransfer.search...)
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
