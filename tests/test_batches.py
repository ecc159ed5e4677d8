"""The streaming data path of fine-tuning: batches read by index, and the bounded frozen-prefix cache."""

import logging

import numpy as np
import pytest
import torch
from conftest import make_imagefolder

import autotransfer.transfer.prefix_cache as prefix_cache
from autotransfer.data.datasets import load_dataset
from autotransfer.models.features import normalisation, to_input
from autotransfer.models.zoo import create_backbone
from autotransfer.transfer.batches import Batches, ImageRows, image_input
from autotransfer.transfer.finetune import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_imagefolder(tmp_path_factory.mktemp("batches") / "d", {"a": 12, "b": 12, "c": 12})
    return load_dataset(root, image_size=32, show_progress=False)


def _net():
    torch.manual_seed(0)
    return create_backbone("test_efficientnet", pretrained=False)


def _quick(**kwargs):
    return FinetuneConfig(**{"epochs": 2, "batch_size": 8, "bf16": False, "warmup_epochs": 0, **kwargs})


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_batches_equal_the_batches_of_the_whole_split_in_memory(data, workers):
    """What training read before: the split copied whole, a seeded permutation, to_input per batch."""
    backbone = _net()
    device = torch.device("cpu")
    mean, std = normalisation(backbone, device)
    rows = data.indices("train")
    whole = np.asarray(data.images[rows])
    order = np.random.default_rng(3).permutation(len(rows))
    batches = Batches(ImageRows(data.images, rows), image_input(mean, std), device, workers=workers)
    streamed = list(batches.iterate(order, 5))
    assert len(streamed) == -(-len(rows) // 5)
    for start, (positions, x) in zip(range(0, len(order), 5), streamed):
        expected = to_input(whole[order[start : start + 5]], mean, std, device)
        assert np.array_equal(positions, order[start : start + 5])
        assert torch.equal(x, expected) and x.is_contiguous(memory_format=torch.channels_last)


def test_a_transform_gets_one_uint8_chw_image_and_may_return_floats(data):
    seen = []

    def transform(image: torch.Tensor) -> torch.Tensor:
        seen.append((image.dtype, tuple(image.shape)))
        return image.float() / 255.0

    device = torch.device("cpu")
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    rows = data.indices("val")
    batches = Batches(ImageRows(data.images, rows, transform), image_input(mean, std), device)
    _, x = next(batches.iterate(np.arange(len(rows)), 4))
    assert seen[0] == (torch.uint8, (3, 32, 32)) and len(seen) == 4
    assert torch.allclose(x, torch.from_numpy(np.asarray(data.images[rows[:4]])).permute(0, 3, 1, 2) / 255.0)


def test_the_prefix_cache_is_skipped_when_it_fits_neither_ram_nor_disk(data, monkeypatch, caplog):
    monkeypatch.setattr(prefix_cache, "available_memory", lambda: 0)
    monkeypatch.setattr(prefix_cache, "DISK_FRACTION", 0.0)
    with caplog.at_level(logging.INFO, logger="autotransfer.transfer.prefix_cache"):
        result = finetune(data, _net(), _quick(freeze_groups=2, epochs=1))
    assert not result.used_cached_prefix and len(result.history) == 1
    assert "skipped: it would not fit" in caplog.text


def test_a_memory_mapped_prefix_cache_trains_like_the_one_in_ram(data, monkeypatch, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="autotransfer.transfer.prefix_cache"):
        in_ram = finetune(data, _net(), _quick(freeze_groups=2))
        assert "in RAM" in caplog.text
        caplog.clear()
        monkeypatch.setattr(prefix_cache, "available_memory", lambda: 0)
        on_disk = finetune(data, _net(), _quick(freeze_groups=2), checkpoint_dir=tmp_path / "trial")
        assert "memory-mapped in" in caplog.text
    assert in_ram.used_cached_prefix and on_disk.used_cached_prefix
    assert [h.train_loss for h in in_ram.history] == [h.train_loss for h in on_disk.history]
    assert [h.val_loss for h in in_ram.history] == [h.val_loss for h in on_disk.history]
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == ["best.json", "best.safetensors"]


def test_the_plan_sizes_the_cache_from_one_forward_pass(data, tmp_path):
    backbone = _net()
    model = backbone.model.eval()
    sample = torch.zeros(1, 3, 32, 32)
    unit = "bn1"

    class Holder:
        backbone = model

    plan = prefix_cache.plan_prefix_cache(Holder(), unit, sample, 1000, tmp_path, use_bf16=False)
    out = model.bn1(model.conv_stem(sample))
    assert plan.shape == tuple(out.shape[1:]) and plan.bytes_needed == 1000 * out[0].numel() * 4


def test_a_disk_that_fills_up_before_the_memory_map_is_reserved_skips_the_cache(data, monkeypatch, tmp_path):
    import errno

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prefix_cache, "available_memory", lambda: 0)
    monkeypatch.setattr(prefix_cache.os, "posix_fallocate", full)
    result = finetune(data, _net(), _quick(freeze_groups=2, epochs=1), checkpoint_dir=tmp_path / "trial")
    assert not result.used_cached_prefix and len(result.history) == 1
