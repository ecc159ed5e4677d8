"""Peer `timm-script`: the plain timm fine-tuning script users copy, bounded by the bench's budget.

timm ``create_model`` with the offline ImageNet weights and a new head, timm's default train/eval
transforms at the suite's input size, AdamW at its default LR (1e-3) on all layers, cosine decay per
step, batch 32, cross-entropy; 15% of the train folder held out for validation, the last epoch's
model is the answer. timm has no budget: the epoch count is chosen from a few timed batches
(``_peer.epochs_that_fit``), and an epoch that would not finish in time is not started.

Runs in our own .venv (timm is there) but uses nothing of autotransfer's engine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.contenders import _peer  # noqa: E402

BATCH = 32
LR = 1e-3
VAL_FRACTION = 0.15
TIMED_BATCHES = 3
WARMUP_BATCHES = 2


def main() -> int:
    args = _peer.arguments(__doc__.splitlines()[0])
    _peer.fix_torchvision()
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(args.seed)
    paths, labels = _peer.image_files(args.train)
    classes = sorted(set(labels))
    targets = np.array([classes.index(label) for label in labels])
    rng = np.random.default_rng(args.seed)
    val_mask = np.zeros(len(paths), bool)
    for c in range(len(classes)):  # stratified: a few of every class
        members = rng.permutation(np.flatnonzero(targets == c))
        val_mask[members[: max(1, round(VAL_FRACTION * len(members)))]] = True

    _peer.log("imported")
    model = timm.create_model(
        _peer.BACKBONE, pretrained=True, num_classes=len(classes), pretrained_cfg_overlay={"file": str(args.weights)}
    )
    config = resolve_data_config(model=model)
    config.update(input_size=(3, args.size, args.size), crop_pct=1.0)  # no centre crop: small images lose too much
    train_tf = create_transform(**config, is_training=True)
    eval_tf = create_transform(**config)

    class Images(torch.utils.data.Dataset):
        def __init__(self, files, ys, transform):
            self.files, self.ys, self.transform = files, ys, transform

        def __len__(self):
            return len(self.files)

        def __getitem__(self, i):
            with Image.open(self.files[i]) as image:
                return self.transform(image.convert("RGB")), int(self.ys[i])

    loader = {"num_workers": 0}  # decoding small images in the main process beats worker processes on 2 cores
    train = torch.utils.data.DataLoader(
        Images([p for p, v in zip(paths, val_mask) if not v], targets[~val_mask], train_tf),
        batch_size=BATCH,
        shuffle=True,
        drop_last=False,
        **loader,
    )
    val = torch.utils.data.DataLoader(
        Images([p for p, v in zip(paths, val_mask) if v], targets[val_mask], eval_tf), batch_size=64, **loader
    )
    test_paths, test_labels = _peer.image_files(args.test)
    test_targets = np.array([classes.index(label) for label in test_labels])
    test = torch.utils.data.DataLoader(Images(test_paths, test_targets, eval_tf), batch_size=64, **loader)

    def accuracy(data) -> float:
        model.eval()
        right = total = 0
        with torch.no_grad():
            for x, y in data:
                right += int((model(x).argmax(1) == y).sum())
                total += len(y)
        return right / max(total, 1)

    def predict(data) -> np.ndarray:
        """Predicted class indices, one per image of ``data`` (unshuffled), in its order."""
        model.eval()
        with torch.no_grad():
            return np.concatenate([model(x).argmax(1).numpy() for x, _ in data])

    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y) -> None:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        scheduler.step()

    # Time a few batches (after two warm-up ones) to choose the epoch count.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model.train()
    timed, tic = 0, None
    while timed < TIMED_BATCHES * BATCH:
        for i, (x, y) in enumerate(train):
            step(x, y)
            if tic is None and i == WARMUP_BATCHES - 1:
                tic = time.monotonic()  # the first batches warm up (allocations, kernels): not counted
            elif tic is not None:
                timed += len(y)
                if timed >= TIMED_BATCHES * BATCH:
                    break
    per_image = (time.monotonic() - tic) / max(timed, 1)
    _peer.log(f"{per_image * 1000:.1f} ms per training image; {len(train.dataset)} train, {len(val.dataset)} val")
    epoch_seconds = per_image * (len(train.dataset) + len(val.dataset) / 3)  # eval ~ a third of a train step
    reserve = per_image * len(test.dataset) / 3 + 5
    # the timed batches trained too (at constant LR): with no time for an epoch more, the script stops there
    epochs = _peer.epochs_that_fit(args.budget - _peer.elapsed(), epoch_seconds, reserve, least=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(train)))
    _peer.log(f"{epochs} epochs of about {epoch_seconds:.1f} s, {reserve:.0f} s kept for the test predictions")

    done, val_accuracy = 0, accuracy(val) if epochs == 0 else None
    for _ in range(epochs):
        tic = time.monotonic()
        model.train()
        for x, y in train:
            step(x, y)
        val_accuracy = accuracy(val)
        done += 1
        _peer.log(f"epoch {done}: val accuracy {val_accuracy:.3f}")
        epoch_seconds = time.monotonic() - tic
        if args.budget - _peer.elapsed() < epoch_seconds + reserve:
            break
    predicted = predict(test)
    _peer.answer(
        float((predicted == test_targets).mean()),
        f"plain timm script: {_peer.BACKBONE} (offline ImageNet weights) at {args.size}px, "
        f"AdamW lr {LR:g} on all layers, cosine, batch {BATCH}, timm default augmentation, "
        f"{WARMUP_BATCHES + TIMED_BATCHES} timed batches + {done}/{epochs} epochs",
        val_accuracy,
        {path: classes[i] for path, i in zip(test_paths, predicted)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
