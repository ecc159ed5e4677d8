"""Slow tier: the real ImageNet weights of the offline zoo, checked on real ImageNet images."""

import json
import subprocess
import sys

import pytest

from autotransfer.models.imagenet_check import imagenet_top1
from autotransfer.models.weights import OFFLINE_ZOO

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def real_cache(monkeypatch):
    """Use the user's real cache, so that weights fetched once (by `make demo`) are reused."""
    monkeypatch.delenv("AUTOTRANSFER_CACHE")


@pytest.mark.parametrize("name", list(OFFLINE_ZOO))
def test_offline_weights_classify_real_imagenet_images(name):
    result = imagenet_top1(name)
    assert result.weights.startswith("offline_zoo")
    assert result.correct >= 15, result


def test_random_weights_do_not_pass_the_check(tmp_path):
    from safetensors.torch import save_file

    from autotransfer.models.zoo import create_backbone

    model = create_backbone("mobilenetv2_100", pretrained=False, keep_classifier=True).model
    save_file(model.state_dict(), str(tmp_path / "random.safetensors"))
    assert imagenet_top1("mobilenetv2_100", weights=tmp_path / "random.safetensors").correct <= 3


def test_zoo_list_reports_the_offline_backbones_available():
    import os

    from autotransfer.models.zoo import create_backbone

    for name in OFFLINE_ZOO:
        create_backbone(name)  # fetches the weights the first time
    env = {k: v for k, v in os.environ.items() if k != "AUTOTRANSFER_CACHE"}
    result = subprocess.run(
        [sys.executable, "-c", "from autotransfer.cli import main; main()", "zoo", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in ("mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        assert rows[name]["weights_available"] is True
