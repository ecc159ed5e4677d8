"""Peer `fastai`: ``vision_learner`` + ``fine_tune`` with fastai's defaults, bounded by the bench's budget.

What a fastai user writes: ``ImageDataLoaders.from_folder`` (20% random validation split, ``Resize`` to the
suite's input size, ``aug_transforms``, batch 64), ``vision_learner(dls, "mobilenetv2_100")`` with the offline
ImageNet weights (fastai passes ``pretrained_cfg_overlay`` on to timm), then ``fine_tune(epochs)`` at its
default base LR (2e-3; the LR finder is off, as in fastai's own quick-start). fastai has no budget: the
epoch count comes from a few timed training batches (``_peer.epochs_that_fit``), and a callback stops
before an epoch that would not finish in time. Runs in ``.peers/fastai`` (``make peers``).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.contenders import _peer  # noqa: E402

BATCH = 64  # fastai's default
TIMED_BATCHES = 3
OVERHEAD = 1.3  # an epoch's loading, augmentation and validation on top of the timed compute


def main() -> int:
    args = _peer.arguments(__doc__.splitlines()[0])
    _peer.fix_torchvision()
    import torch
    from fastai.callback.core import Callback, CancelFitException
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, aug_transforms, vision_learner

    torch.manual_seed(args.seed)
    dls = ImageDataLoaders.from_folder(
        args.train,
        valid_pct=0.2,
        seed=args.seed,
        item_tfms=Resize(args.size),
        batch_tfms=aug_transforms(size=args.size),
        bs=BATCH,
    )
    learn = vision_learner(
        dls, _peer.BACKBONE, pretrained=True, metrics=accuracy, pretrained_cfg_overlay={"file": str(args.weights)}
    )
    learn.path = args.out  # fastai writes next to its data otherwise

    # Time a few forward/backward passes of the whole model on one batch; the weights are put back after.
    model, state = learn.model, copy.deepcopy(learn.model.state_dict())
    x, y = dls.one_batch()
    model.train()
    for i in range(TIMED_BATCHES + 1):
        if i == 1:
            tic = time.monotonic()
        learn.loss_func(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    per_image = (time.monotonic() - tic) / (TIMED_BATCHES * len(y))
    epoch_seconds = OVERHEAD * per_image * len(dls.train_ds)
    n_test = len(_peer.image_files(args.test)[0])
    reserve = per_image * n_test / 3 + 5
    # fine_tune(n) trains one frozen epoch, then n epochs of the whole model
    epochs = max(1, _peer.epochs_that_fit(args.budget - _peer.elapsed(), epoch_seconds, reserve) - 1)

    class Deadline(Callback):
        """Stops before an epoch that would not finish in the budget (fastai has no budget of its own)."""

        order, fits, run_epochs, stopped = 100, 0, 0, False

        def before_fit(self):
            self.fits += 1  # fine_tune: fit 1 is the frozen epoch, fit 2 the whole model
            if self.stopped:
                raise CancelFitException()

        def before_epoch(self):
            self.tic = time.monotonic()

        def after_epoch(self):
            self.run_epochs += 1
            more = self.fits == 1 or self.epoch + 1 < self.n_epoch
            if more and args.budget - _peer.elapsed() < (time.monotonic() - self.tic) + reserve:
                self.stopped = True
                raise CancelFitException()

    guard = Deadline()
    _peer.log(f"fine_tune({epochs}): epochs of about {epoch_seconds:.1f} s, {reserve:.0f} s kept for the test")
    with learn.no_bar():
        learn.fine_tune(epochs, cbs=[guard])
        val_accuracy = float(learn.validate()[1])
        test_files, _ = _peer.image_files(args.test)
        preds, targets = learn.get_preds(dl=dls.test_dl([Path(p) for p in test_files], with_labels=True))
    test_accuracy = float((preds.argmax(1) == targets).float().mean())
    predicted = [str(dls.vocab[i]) for i in preds.argmax(1).tolist()]  # test_dl keeps test_files' order
    _peer.answer(
        test_accuracy,
        f"fastai vision_learner + fine_tune: {_peer.BACKBONE} (offline ImageNet weights) at "
        f"{args.size}px, Resize + aug_transforms, batch {BATCH}, base LR 2e-3 (no LR finder), "
        f"1 frozen + {epochs} planned epochs, {guard.run_epochs} run"
        + (" (stopped for the budget)" if guard.stopped else ""),
        val_accuracy,
        dict(zip(test_files, predicted)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
