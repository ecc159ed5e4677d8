"""The fine-tuning engine on tiny models and generated images: freezing, LRs, LP-FT, cached prefix."""

import numpy as np
import pytest
import torch
from conftest import make_imagefolder

from autotransfer.data.datasets import load_dataset
from autotransfer.errors import AutoTransferError
from autotransfer.models.zoo import create_backbone
from autotransfer.transfer.checkpoint import Progress, best_words
from autotransfer.transfer.finetune import FinetuneConfig, TrialPruned, finetune
from autotransfer.transfer.prefix_cache import prefix_units
from autotransfer.transfer.transfer_model import TransferModel, param_groups


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_imagefolder(tmp_path_factory.mktemp("ft") / "d", {"a": 12, "b": 12, "c": 12})
    return load_dataset(root, image_size=32, show_progress=False)


def _net(name="test_efficientnet"):
    torch.manual_seed(0)
    return create_backbone(name, pretrained=False)


def _quick(**kwargs):
    return FinetuneConfig(**{"epochs": 2, "batch_size": 8, "bf16": False, "warmup_epochs": 0, **kwargs})


def test_frozen_groups_and_their_bn_statistics_do_not_change(data):
    backbone = _net()
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    frozen = {p for g in backbone.depth_groups[:3] for p in g.params}
    result = finetune(data, backbone, _quick(freeze_groups=3, head_lr=1e-2, backbone_lr_ratio=1.0))
    after = result.model.backbone.state_dict()
    frozen_modules = {p.rsplit(".", 1)[0] for p in frozen}
    for key, value in after.items():
        owner = key.rsplit(".", 1)[0]
        if owner in frozen_modules:
            assert torch.equal(value, before[key]), key  # weights and running stats alike
    changed = [k for k in after if k.rsplit(".", 1)[0] not in frozen_modules and not torch.equal(after[k], before[k])]
    assert changed  # the trainable top did move


def test_bn_statistics_adapt_when_asked(data):
    backbone = _net()
    before = backbone.model.bn1.running_mean.clone()
    finetune(data, backbone, _quick(freeze_groups=3, train_bn_stats=True, cache_prefix=False))
    assert not torch.equal(backbone.model.bn1.running_mean, before)


def test_learning_rates_per_group(data):
    backbone = _net()
    config = FinetuneConfig(freeze_groups=2, head_lr=1e-3, backbone_lr_ratio=0.1, layer_decay=0.5)
    model = TransferModel(backbone, "head", 3)
    _, lrs = param_groups(model, backbone, config)
    n = len(backbone.depth_groups)
    assert lrs["head"] == 1e-3
    top = [k for k in lrs if k.startswith(f"{n - 1}:")][0]
    below = [k for k in lrs if k.startswith(f"{n - 2}:")][0]
    assert lrs[top] == pytest.approx(1e-4) and lrs[below] == pytest.approx(5e-5)
    assert not any(k.startswith(("0:", "1:")) for k in lrs)  # frozen groups get no optimizer group


def test_cached_prefix_equals_the_full_forward(data):
    runs = {}
    for cache in (True, False):
        backbone = _net()
        runs[cache] = finetune(data, backbone, _quick(freeze_groups=4, cache_prefix=cache, epochs=3))
    assert runs[True].used_cached_prefix and not runs[False].used_cached_prefix
    np.testing.assert_allclose(
        [h.train_loss for h in runs[True].history], [h.train_loss for h in runs[False].history], rtol=1e-4
    )
    assert runs[True].best_val_accuracy == runs[False].best_val_accuracy


@pytest.mark.parametrize(
    "name,tap", [("test_resnet", "layer2"), ("tv:alexnet", "fc6"), ("test_efficientnet", "blocks.2")]
)
def test_intermediate_taps_and_prefix_units(data, name, tap):
    backbone = _net(name)
    units = prefix_units(backbone, 2, tap)
    assert units and backbone.tap(tap).module not in units
    size = 64 if name == "tv:alexnet" else 32
    dataset = data if size == 32 else load_dataset(data.root, image_size=size, show_progress=False)
    result = finetune(dataset, backbone, _quick(tap=tap, freeze_groups=2, epochs=1))
    assert result.model.head.in_features == backbone.tap(tap).channels


def test_lp_ft_starts_from_the_probe(data):
    backbone = _net()
    result = finetune(data, backbone, _quick(strategy="lp_ft", freeze_groups=3, epochs=1, head_lr=1e-9))
    # with a vanishing LR the head stays (almost) where the linear probe put it: far from its init
    fresh = TransferModel(_net(), "head", 3).head
    assert not torch.allclose(result.model.head.weight, fresh.weight, atol=1e-3)


def test_report_hook_prunes_and_early_stopping_fires(data):
    seen = []

    def report(epoch, accuracy):
        seen.append(epoch)
        if epoch == 1:
            raise TrialPruned

    with pytest.raises(TrialPruned):
        finetune(data, _net(), _quick(epochs=5), report=report)
    assert seen == [0, 1]
    stopped = finetune(data, _net(), _quick(epochs=10, head_lr=1e-12, patience=2))
    assert len(stopped.history) == 3  # no improvement after epoch 0: stops at epoch 0 + patience


def test_the_early_stop_line_names_the_metric_it_stopped_on(data, caplog):
    """Issue 26's fourth trial: "early stop ... best 0.7059" was the accuracy, beside a balanced-accuracy score."""
    with caplog.at_level("INFO", logger="autotransfer.transfer.finetune"):
        stopped = finetune(data, _net(), _quick(epochs=4, head_lr=1e-12, patience=2, metric="balanced_accuracy"))
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("early stop")]
    # epochs counted from 1, as the leaderboard's epochs_run=3 (the fifth fresh user read "after epoch 2 ... epoch 0")
    assert len(stopped.history) == 3 and stopped.best_epoch == 0
    assert line == f"early stop after 3 epoch(s) (best val balanced_accuracy {stopped.best_val_score:.4f} at epoch 1)"
    loss = Progress(best_score=-0.6931, best_accuracy=0.9, best_epoch=1)  # log_loss is scored as its negative
    assert best_words("log_loss", loss) == "best val log_loss 0.6931 at epoch 2"


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes"),
        MemoryError(),
    ],
)
def test_out_of_memory_halves_the_batch_and_goes_on(data, monkeypatch, error):
    from autotransfer.transfer.train_loop import Trainer

    real = Trainer.train_epoch
    calls = []

    def flaky(self, model, batches, labels, batch_size, updates):
        calls.append(batch_size)
        if len(calls) == 1:
            raise error
        return real(self, model, batches, labels, batch_size, updates)

    monkeypatch.setattr(Trainer, "train_epoch", flaky)
    result = finetune(data, _net(), _quick(epochs=1, batch_size=16))
    assert calls == [16, 8] and result.history[0].batch_size == 8


def test_same_seed_same_run(data):
    a = finetune(data, _net(), _quick(freeze_groups=2))
    b = finetune(data, _net(), _quick(freeze_groups=2))
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


def test_bad_configs_are_clear_errors(data):
    with pytest.raises(AutoTransferError, match="Unknown strategy"):
        finetune(data, _net(), FinetuneConfig(strategy="magic"))
    with pytest.raises(AutoTransferError, match="freeze_groups=99"):
        finetune(data, _net(), FinetuneConfig(freeze_groups=99))
    with pytest.raises(AutoTransferError, match="no tap point"):
        finetune(data, _net(), FinetuneConfig(tap="nowhere"))


def test_best_epoch_is_checkpointed_and_a_run_resumes_from_it(data, tmp_path, caplog):
    folder = tmp_path / "ckpt"
    first = finetune(data, _net(), _quick(epochs=2, patience=5, metric="f1_macro"), checkpoint_dir=folder)
    assert (folder / "best.safetensors").exists() and (folder / "best.json").exists()
    with caplog.at_level("INFO", logger="autotransfer.transfer.checkpoint"):
        resumed = finetune(data, _net(), _quick(epochs=4, patience=5), checkpoint_dir=folder, resume=True)
    said = f"after 2 epoch(s) (best val f1_macro {first.best_val_score:.4f} at epoch {first.best_epoch + 1})"
    assert said in caplog.text  # the checkpoint's metric, not its accuracy
    assert [h.epoch for h in resumed.history][: len(first.history)] == [h.epoch for h in first.history]
    assert resumed.history[-1].epoch == 3 and resumed.best_val_accuracy >= first.best_val_accuracy
    done = finetune(data, _net(), _quick(epochs=1), checkpoint_dir=folder, resume=True)  # already finished
    assert done.best_epoch == resumed.best_epoch and len(done.history) == len(resumed.history)


def test_randaugment_and_flips_train_without_the_prefix_cache(data):
    result = finetune(data, _net(), _quick(freeze_groups=3, randaugment="rand-m9-mstd0.5", flip=True, epochs=1))
    assert not result.used_cached_prefix and len(result.history) == 1
    with pytest.raises(AutoTransferError, match="Bad RandAugment spec"):
        finetune(data, _net(), _quick(randaugment="foo", epochs=1))


def test_train_all_trains_every_group(data):
    backbone = _net()
    _, lrs = param_groups(
        TransferModel(backbone, "head", 3), backbone, FinetuneConfig(strategy="train_all", freeze_groups=5)
    )
    assert len(lrs) == len(backbone.depth_groups) + 1


def test_augmented_runs_do_not_depend_on_the_global_random_state(data):
    """timm's RandAugment and Mixup draw from `random` / `np.random`: a trial must not see what ran before it."""
    import random

    config = _quick(randaugment="rand-m9-mstd0.5", flip=True, mixup=0.2, epochs=1)
    runs = []
    for noise in (1, 2):
        random.seed(noise)
        np.random.seed(noise)
        runs.append(finetune(data, _net(), config))
        # the caller's streams continue where they were
        assert random.random() == random.Random(noise).random()
        assert np.random.random() == np.random.RandomState(noise).random_sample()
    assert runs[0].history[0].train_loss == runs[1].history[0].train_loss
