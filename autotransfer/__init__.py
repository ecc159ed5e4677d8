"""autotransfer: find the best way to transfer an ImageNet-pretrained network to your images."""

from autotransfer._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before anything can import timm or torchvision

from autotransfer.api import AutoTransfer  # noqa: E402
from autotransfer.data.datasets import Dataset, load_dataset  # noqa: E402
from autotransfer.deploy.pipeline import Pipeline  # noqa: E402
from autotransfer.errors import AutoTransferError  # noqa: E402
from autotransfer.models.features import extract_features  # noqa: E402
from autotransfer.models.zoo import Backbone, create_backbone, known_backbones  # noqa: E402
from autotransfer.search.space import SearchSpace, load_search_space  # noqa: E402
from autotransfer.transfer.finetune import FinetuneConfig, FinetuneResult, TrialPruned  # noqa: E402  (the function: autotransfer.transfer.finetune.finetune)
from autotransfer.transfer.profile import DatasetProfile, Thresholds, profile_dataset  # noqa: E402
from autotransfer.transfer.ranking import RankingConfig, proxy_agreement, rank_candidates  # noqa: E402

__all__ = [
    "AutoTransfer",
    "AutoTransferError",
    "Pipeline",
    "SearchSpace",
    "load_search_space",
    "Backbone",
    "Dataset",
    "DatasetProfile",
    "FinetuneConfig",
    "FinetuneResult",
    "RankingConfig",
    "Thresholds",
    "TrialPruned",
    "create_backbone",
    "extract_features",
    "known_backbones",
    "load_dataset",
    "profile_dataset",
    "proxy_agreement",
    "rank_candidates",
]
__version__ = "0.1.0"
