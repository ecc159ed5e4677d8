"""What competes in a benchmark cell: `fit`, the recipe's fixed strategies, the grid, command lines.

Every contender gets the cell's train folder (it makes its own validation split from it), the
budget and the seed; none sees the test folder except to score its final answer once. A contender
returns an ``Outcome``: its test scores under each of ``BENCH_METRICS`` (the label-only metrics, so
computable from any tool's predicted class names); the runner times it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from autotransfer.bench.suite import Suite
from autotransfer.budget import Deadline
from autotransfer.data.datasets import Dataset, load_dataset
from autotransfer.data.sources import index_dataset
from autotransfer.deploy.pipeline import Pipeline
from autotransfer.errors import AutoTransferError
from autotransfer.models.features import extract_features
from autotransfer.models.zoo import Backbone, create_backbone
from autotransfer.transfer.finetune import FinetuneConfig, finetune
from autotransfer.transfer.metrics import LABEL_METRICS, score_predictions
from autotransfer.transfer.probes import ProbeOptions, fit_probe
from autotransfer.transfer.strategies import probe_strategy
from autotransfer.transfer.transfer_model import TransferModel


@dataclass
class Cell:
    """One (dataset, regime, seed) as a contender sees it."""

    suite: Suite
    dataset: str
    per_class: int
    seed: int
    train_dir: Path
    test_dir: Path
    work: Path  # the contender's own scratch folder, emptied before it starts
    deadline: Deadline


# The metrics every cell records (AutoGluon's names): label-only, since a peer gives class names, not probabilities.
BENCH_METRICS = LABEL_METRICS


@dataclass
class Outcome:
    """A contender's answer on the held-out files of a cell.

    ``test_scores`` maps each of ``BENCH_METRICS`` to its value in 0..1; a command-line tool that
    printed no ``test_predictions`` gives only ``accuracy``. ``configs`` is the grid's: every
    configuration with its ``test_accuracy`` and ``test_scores``.
    """

    test_scores: dict[str, float]
    what: str
    val_accuracy: float | None = None
    configs: list[dict] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float:
        return self.test_scores["accuracy"]


def label_scores(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """``{metric: score}`` of hard predictions ``y_pred`` against ``y_true`` (same length) for ``BENCH_METRICS``."""
    return {name: score_predictions(name, y_true, y_pred) for name in BENCH_METRICS}


def held_out_files(cell: Cell) -> tuple[list[str], list[str]]:
    """(paths, class names) of the cell's test folder, in ``index_dataset``'s order."""
    index = index_dataset(cell.test_dir)
    return [str(p) for p in index.paths], list(index.labels)


def _scored(cell: Cell, pipeline: Pipeline, what: str) -> Outcome:
    paths, labels = held_out_files(cell)
    scores = label_scores(labels, pipeline.predict(paths))
    return Outcome(scores, what, pipeline.spec["metrics"].get("val_accuracy"))


def run_fit(cell: Cell) -> Outcome:
    """`autotransfer fit` on the train folder with the suite's budget and search space, timed from the cell's start."""
    from autotransfer.options import RunOptions
    from autotransfer.search.run import run
    from autotransfer.search.settings import resolve_settings

    options = RunOptions(
        time_budget=cell.suite.budget,
        search_space=cell.suite.search_space,
        out=cell.work / "run",
        seed=cell.seed,
        profile_backbone=cell.suite.profile_backbone,
    )
    pipeline = run(cell.train_dir, resolve_settings(options, start=cell.deadline.start)).pipeline
    return _scored(cell, pipeline, pipeline.describe())


def _fixed_data(cell: Cell) -> tuple[Dataset, Backbone]:
    dataset = load_dataset(cell.train_dir, image_size=cell.suite.fixed_resolution, seed=cell.seed, show_progress=False)
    return dataset, create_backbone(cell.suite.fixed_backbone)


def _wrap(
    backbone: Backbone,
    model: TransferModel,
    dataset: Dataset,
    strategy: str,
    val_accuracy: float,
    frozen_groups: int = 0,
) -> Pipeline:
    return Pipeline.from_model(
        backbone,
        model.eval(),
        classes=dataset.classes,
        recipe=dataset.recipe,
        frozen_groups=frozen_groups,
        head_type="linear",
        strategy=strategy,
        hyperparameters={},
        metrics={"val_accuracy": val_accuracy},
    )


def _probe(cell: Cell, mid_layer: bool, heads: tuple[str, ...]) -> Outcome:
    """CNN codes (the pooled last features) or a middle tap, and a linear head with C chosen on val."""
    dataset, backbone = _fixed_data(cell)
    tap = backbone.taps[len(backbone.taps) // 2 if mid_layer else -1].name
    features = extract_features(dataset, backbone, [tap], show_progress=False)[tap]
    train, val = dataset.indices("train"), dataset.indices("val")
    probe = fit_probe(
        features[train],
        dataset.labels[train],
        features[val],
        dataset.labels[val],
        ProbeOptions(heads=tuple(heads), seed=cell.seed),
    )
    model = TransferModel(backbone, tap, len(dataset.classes)).set_linear_head(probe.model)
    pipeline = _wrap(
        backbone,
        model,
        dataset,
        probe_strategy(tap),
        probe.val_accuracy,
        frozen_groups=len(backbone.depth_groups),
    )
    return _scored(
        cell, pipeline, f"{probe.head} (C={probe.C:g}) on `{tap}` of {backbone.name} at {cell.suite.fixed_resolution}px"
    )


CODES_RESOLUTION = 128  # px: the plain baseline of issue 16, penultimate features at a CPU-friendly size
CODES_BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")


def run_codes_logreg(cell: Cell) -> Outcome:
    """The plain baseline a practitioner writes first: logistic regression (scikit-learn, C on val) on
    the 128-px penultimate features of each offline-zoo backbone, the best backbone by val kept."""
    dataset = load_dataset(cell.train_dir, image_size=CODES_RESOLUTION, seed=cell.seed, show_progress=False)
    train, val = dataset.indices("train"), dataset.indices("val")
    best: tuple | None = None
    for name in CODES_BACKBONES:
        backbone = create_backbone(name)
        features = extract_features(dataset, backbone, ["head"], show_progress=False)["head"]
        probe = fit_probe(
            features[train],
            dataset.labels[train],
            features[val],
            dataset.labels[val],
            ProbeOptions(heads=("softmax",), seed=cell.seed),
        )
        if best is None or probe.val_accuracy > best[0].val_accuracy:
            best = (probe, backbone)
    probe, backbone = best
    model = TransferModel(backbone, "head", len(dataset.classes)).set_linear_head(probe.model)
    pipeline = _wrap(backbone, model, dataset, "linear_probe", probe.val_accuracy, len(backbone.depth_groups))
    return _scored(cell, pipeline, f"logistic regression (C={probe.C:g}) on {backbone.name} codes at 128px")


def _finetuned(cell: Cell, config: FinetuneConfig, label: str) -> Outcome:
    """Default-settings fine-tuning, stopped before an epoch that would overrun the budget."""
    dataset, backbone = _fixed_data(cell)
    result = finetune(dataset, backbone, replace(config, seed=cell.seed), deadline=cell.deadline)
    pipeline = _wrap(backbone, result.model, dataset, config.strategy, result.best_val_accuracy)
    return _scored(
        cell, pipeline, f"{label}: {backbone.name} at {cell.suite.fixed_resolution}px, {len(result.history)} epochs"
    )


def run_grid(cell: Cell) -> Outcome:
    """Every backbone x resolution x tap of the grid with the best (head, C) on val: no budget.

    Its answer is the configuration with the best validation accuracy; every configuration's test
    scores are kept, so the leaderboard's oracle is the best any of them reaches, per metric.
    """
    suite, test_dir = cell.suite, cell.test_dir
    configs = []
    for resolution in suite.grid_resolutions:
        train = load_dataset(cell.train_dir, image_size=resolution, seed=cell.seed, show_progress=False)
        test = load_dataset(test_dir, image_size=resolution, seed=cell.seed, show_progress=False)
        test_labels = np.array([train.classes.index(test.classes[i]) for i in test.labels])
        rows, val = train.indices("train"), train.indices("val")
        for name in suite.grid_backbones:
            backbone = create_backbone(name)
            taps = [t.name for t in backbone.taps]
            features = extract_features(train, backbone, taps, show_progress=False)
            test_features = extract_features(test, backbone, taps, show_progress=False)
            for tap in taps:
                probe = fit_probe(
                    features[tap][rows],
                    train.labels[rows],
                    features[tap][val],
                    train.labels[val],
                    ProbeOptions(heads=tuple(suite.grid_heads), c_grid=tuple(suite.grid_c), seed=cell.seed),
                )
                scores = label_scores(test_labels, probe.model.predict(test_features[tap]))
                configs.append(
                    {
                        "backbone": name,
                        "resolution": resolution,
                        "tap": tap,
                        "head": probe.head,
                        "C": probe.C,
                        "val_accuracy": probe.val_accuracy,
                        "test_accuracy": scores["accuracy"],
                        "test_scores": scores,
                    }
                )
    best = max(configs, key=lambda c: c["val_accuracy"])
    return Outcome(
        best["test_scores"],
        f"{best['head']} (C={best['C']:g}) on `{best['tap']}` of {best['backbone']} "
        f"at {best['resolution']}px, best of {len(configs)} by val",
        best["val_accuracy"],
        configs,
    )


PEERS_ENV = "AUTOTRANSFER_PEERS"  # where `make peers` put the peers' virtual environments (default: <repo>/.peers)
# The source checkout this package runs from (an editable install), found by its benchmarks/ folder;
# None for an installed wheel, which carries no benchmarks/ and no `make peers`.
_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = _ROOT if (_ROOT / "benchmarks" / "contenders").is_dir() else None


class NotInstalled(AutoTransferError):
    """A peer contender whose virtual environment `make peers` has not (or could not) set up."""


def peers_dir() -> Path:
    """The peers' virtual environments: ``$AUTOTRANSFER_PEERS``, else ``.peers`` in the repository
    (where `make peers` puts them), whatever the current directory; without a checkout, ``./.peers``."""
    default = (REPOSITORY or Path.cwd()) / ".peers"
    return Path(os.environ.get(PEERS_ENV) or default).absolute()


def _command_env(args: list[str]) -> dict[str, str]:
    """The environment of a command contender: the allocator settings `fit` uses, the hubs off, and the
    repository on PYTHONPATH, so ``python -m benchmarks.contenders.X`` runs from any directory."""
    uses_benchmarks = any(arg.startswith("benchmarks.") for arg in args)
    if uses_benchmarks and REPOSITORY is None:
        raise AutoTransferError(
            f"{' '.join(args[:3])} ... needs the repository's benchmarks/ folder, which this installation of "
            "autotransfer does not have (it is not a source checkout).",
            fix="run the bench from a clone of the repository (`make setup`), or leave this contender out "
            "with --contenders.",
        )
    env = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30), "HF_HUB_OFFLINE": "1", **os.environ}
    if uses_benchmarks:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH")) if p)
    return env


def _check_peer(program: str) -> None:
    """A program inside ``{peers}/<name>/`` runs only once scripts/peers.sh stamped that venv as installed."""
    try:
        name = Path(program).absolute().relative_to(peers_dir()).parts[0]
    except (ValueError, IndexError):
        return
    if any((peers_dir() / name).glob(".installed-*")):
        return
    marker = peers_dir() / f"{name}.not-installed"
    reason = marker.read_text().strip().splitlines()[0] if marker.is_file() else f"no venv {peers_dir() / name}"
    raise NotInstalled(f"not installed: peer {name!r}: {reason}", fix="run `make peers` (scripts/peers.sh)")


def _command_scores(cell: Cell, command: str, accuracy: float, predictions: object) -> dict[str, float]:
    """A tool's test scores: ``BENCH_METRICS`` of its ``test_predictions`` when it printed them, else only accuracy.

    ``predictions`` maps each held-out file's path to the class name the tool predicts for it (None:
    not printed). Paths are compared as absolute paths (``os.path.abspath``: relative ones are taken
    from the runner's directory, where the tool ran; symbolic links are not followed, the test
    images being links). AutoTransferError, naming a path, if a held-out file has no prediction or
    a path is not a held-out file, and if the tool's ``test_accuracy`` disagrees with its predictions.
    """
    if predictions is None:
        return {"accuracy": accuracy}
    if not isinstance(predictions, dict) or not all(isinstance(name, str) for name in predictions.values()):
        raise AutoTransferError(
            f"{command}: test_predictions is not an object of test file path -> predicted class name.",
            fix='print e.g. {"test_accuracy": 0.5, "test_predictions": {"test/cat/1.png": "cat", ...}}.',
        )
    paths, labels = held_out_files(cell)
    held_out = [os.path.abspath(path) for path in paths]
    predicted = {os.path.abspath(path): name for path, name in predictions.items()}
    known = set(held_out)
    unknown = sorted(path for path in predictions if os.path.abspath(path) not in known)
    missing = [path for path, absolute in zip(paths, held_out) if absolute not in predicted]
    if unknown or missing:
        first = f"{unknown[0]!r} is not a held-out file" if unknown else f"no prediction for {missing[0]!r}"
        raise AutoTransferError(
            f"{command}: test_predictions do not match the test folder: {first} "
            f"({len(unknown)} unknown path(s), {len(missing)} held-out file(s) without a prediction).",
            where=str(cell.test_dir),
            fix="predict every image of --test once, keyed by its path under --test.",
        )
    scores = label_scores(labels, [predicted[path] for path in held_out])
    if abs(scores["accuracy"] - accuracy) > 1e-6:
        raise AutoTransferError(
            f"{command}: its test_accuracy {accuracy:.4f} disagrees with the accuracy of its "
            f"test_predictions ({scores['accuracy']:.4f}).",
            fix="compute test_accuracy from the same predictions it prints.",
        )
    return scores


def run_command(cell: Cell, argv: tuple[str, ...]) -> Outcome:
    """An external tool: it gets the folders, the budget and the seed; its last JSON line is its answer.

    The answer has ``test_accuracy`` (0..1) and optionally ``what``, ``val_accuracy`` and
    ``test_predictions`` ({test file path: predicted class name}), from which every one of
    ``BENCH_METRICS`` is computed (``_command_scores``); without them the cell records accuracy only.

    The arguments are filled in and run without a shell, so a path with spaces or quotes is one
    argument and nothing in it is interpreted. Every tool runs with the same allocator settings as
    `fit` (glibc malloc without mmap churn) and with the model hubs off, so none waits on a network;
    the repository's ``benchmarks`` package is importable whatever the current directory.
    """
    values = {
        "{python}": sys.executable,
        "{train}": str(cell.train_dir),
        "{test}": str(cell.test_dir),
        "{budget}": f"{cell.suite.budget:.0f}",
        "{seed}": str(cell.seed),
        "{out}": str(cell.work),
        "{peers}": str(peers_dir()),
        "{resolution}": str(cell.suite.fixed_resolution),
    }
    args = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace(key, value)
        args.append(arg)
    _check_peer(args[0])
    env = _command_env(args)
    cell.work.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=cell.deadline.left() + 30, env=env)
    except FileNotFoundError as error:
        raise AutoTransferError(f"Cannot run {args[0]!r}: no such program.") from error
    except subprocess.TimeoutExpired as error:
        for name, text in (("stdout.txt", error.stdout), ("stderr.txt", error.stderr)):  # what it said until then
            (cell.work / name).write_text(text.decode(errors="replace") if isinstance(text, bytes) else text or "")
        raise AutoTransferError(
            f"{args[0]} ran past the budget ({cell.suite.budget:.0f} s) and was stopped."
        ) from error
    (cell.work / "stdout.txt").write_text(done.stdout)
    (cell.work / "stderr.txt").write_text(done.stderr)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AutoTransferError(f"{' '.join(args[:3])} ... exited with {done.returncode}: {tail}")
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        accuracy = answer.get("test_accuracy") if isinstance(answer, dict) else None
        if isinstance(accuracy, (int, float)) and 0.0 <= accuracy <= 1.0:
            command = f"{' '.join(args[:3])} ..."
            scores = _command_scores(cell, command, float(accuracy), answer.get("test_predictions"))
            return Outcome(scores, str(answer.get("what", " ".join(argv))), answer.get("val_accuracy"))
    raise AutoTransferError(
        f"{' '.join(args[:3])} ... printed no JSON line with a test_accuracy in 0..1.",
        fix='print e.g. {"test_accuracy": 0.91} as its last line.',
    )


FIXED: dict[str, tuple[str, Callable[[Cell], Outcome]]] = {
    "codes_svm": ("CNN codes + linear SVM", lambda cell: _probe(cell, False, ("svm",))),
    "codes_softmax": ("CNN codes + softmax", lambda cell: _probe(cell, False, ("softmax",))),
    "codes128_logreg": ("logistic regression on 128-px codes, best zoo backbone", run_codes_logreg),
    "mid_layer": ("mid-layer features + linear", lambda cell: _probe(cell, True, ("softmax",))),
    "finetune_all": (
        "fine-tune all, pretrained LR x0.01",
        lambda cell: _finetuned(cell, FinetuneConfig(strategy="finetune_all", backbone_lr_ratio=0.01), "fine-tune all"),
    ),
    "train_all": (
        "pretrained init + train all",
        lambda cell: _finetuned(
            cell, FinetuneConfig(strategy="train_all", head_lr=3e-3, backbone_lr_ratio=1.0), "train all"
        ),
    ),
    "one_lr": (
        "fine-tune all, one LR (typical script)",
        lambda cell: _finetuned(
            cell,
            FinetuneConfig(
                strategy="finetune_all", backbone_lr_ratio=1.0, head_lr=1e-3, label_smoothing=0.0, warmup_epochs=0
            ),
            "one LR",
        ),
    ),
}
TITLES = {"fit": "autotransfer fit", "grid": "grid (probes, no budget)", **{k: v[0] for k, v in FIXED.items()}}


def contender(name: str, suite: Suite) -> Callable[[Cell], Outcome]:
    if name == "fit":
        return run_fit
    if name == "grid":
        return run_grid
    if name in FIXED:
        return FIXED[name][1]
    argv = suite.commands[name]
    return lambda cell: run_command(cell, argv)


def title(name: str) -> str:
    return TITLES.get(name, f"{name} (command)")
