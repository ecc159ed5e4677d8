"""Safety: nothing a user hands over as data (checkpoints, weights, YAML, CSV labels) can make the
program run code, import modules or write outside its folders. docs/security.md is the threat model."""

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from autotransfer.errors import AutoTransferError

PACKAGE = Path(__file__).resolve().parents[1] / "autotransfer"


class Payload:
    """Unpickling this runs a command: the classic poisoned-checkpoint attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_code_loading_calls_on_user_files_in_the_package():
    """A static scan: the one restricted unpickler (hash-pinned Animal-MNIST wheel) is the only pickle."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node, name in _calls(tree):
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{path.relative_to(PACKAGE)}:{node.lineno} {name}"
            if name == "torch.load" and keywords.get("weights_only") != "True":
                found.append(where)
            if name in (
                "pickle.load",
                "pickle.loads",
                "yaml.load",
                "yaml.unsafe_load",
                "yaml.full_load",
                "eval",
                "exec",
                "os.system",
                "marshal.loads",
                "dill.load",
                "joblib.load",
            ):
                found.append(where)
            if name in ("np.load", "numpy.load") and keywords.get("allow_pickle") == "True":
                found.append(where)
            if name.startswith("subprocess.") and keywords.get("shell") == "True":
                found.append(where)
        for node in ast.walk(tree):
            unpickler = isinstance(node, ast.ClassDef) and any("Unpickler" in ast.unparse(b) for b in node.bases)
            if unpickler and (path.name != "offline_datasets.py" or node.name != "_NumpyOnlyUnpickler"):
                found.append(f"{path.name}: unpickler {node.name}")
    assert not found, found


def test_the_restricted_unpickler_refuses_anything_but_numpy(tmp_path):
    import io

    from autotransfer.data.offline_datasets import _NumpyOnlyUnpickler

    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Payload(marker)))).load()
    assert not marker.exists()


def test_a_poisoned_weights_file_is_refused_without_running_it(tmp_path):
    from autotransfer.models.weights import read_state_dict

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": Payload(marker)}, path)
    with pytest.raises(AutoTransferError, match="refused for safety"):
        read_state_dict(path)
    assert not marker.exists()


def _saved_pipeline(tmp_path):
    from autotransfer.data.images import ResizeRecipe
    from autotransfer.deploy.pipeline import Pipeline
    from autotransfer.models.zoo import create_backbone
    from autotransfer.transfer.transfer_model import TransferModel

    backbone = create_backbone("test_efficientnet", pretrained=False)
    model = TransferModel(backbone, "head", 2)
    pipeline = Pipeline.from_model(
        backbone,
        model,
        classes=["a", "b"],
        recipe=ResizeRecipe(32),
        frozen_groups=0,
        head_type="linear",
        strategy="fixed",
        hyperparameters={},
        metrics={},
    )
    return pipeline.save(tmp_path / "ckpt")


def _rehash(folder: Path, edit) -> None:
    """Edit pipeline.json and recompute its hashes: what an attacker who rewrites the files can do."""
    from autotransfer.deploy.pipeline import _content_hash
    from autotransfer.models.wheel_assets import sha256_file

    spec = json.loads((folder / "pipeline.json").read_text())
    edit(spec)
    spec["tensors_sha256"] = sha256_file(folder / "model.safetensors")
    spec["content_hash"] = _content_hash(spec, spec["tensors_sha256"])
    (folder / "pipeline.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(
    "name, message",
    [
        ("hf-hub:attacker/model", "only registered architecture names"),
        ("local-dir:/tmp/attacker", "only registered architecture names"),
        ("__import__('os').system('touch pwned')", "Unknown backbone"),
    ],
)
def test_a_checkpoint_cannot_name_code_or_remote_files_as_its_architecture(tmp_path, name, message):
    from autotransfer.deploy.pipeline import Pipeline

    folder = _saved_pipeline(tmp_path)
    _rehash(folder, lambda spec: spec["backbone"].update(name=name))
    with pytest.raises(AutoTransferError, match=message):
        Pipeline.load(folder)
    assert not Path("pwned").exists()


def test_a_pickle_in_place_of_the_tensors_is_refused_without_running_it(tmp_path):
    from autotransfer.deploy.pipeline import Pipeline

    marker = tmp_path / "pwned"
    folder = _saved_pipeline(tmp_path)
    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(AutoTransferError, match="hash mismatch"):
        Pipeline.load(folder)
    _rehash(folder, lambda spec: None)
    with pytest.raises(AutoTransferError, match="does not match its architecture"):
        Pipeline.load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("loader", ["search_space", "suite"])
def test_yaml_files_cannot_construct_objects(tmp_path, loader):
    from autotransfer.bench.suite import load_suite
    from autotransfer.search.space import load_search_space

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"backbones: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(AutoTransferError, match="not valid YAML"):
        (load_search_space if loader == "search_space" else load_suite)(path)
    assert not marker.exists()


def test_csv_labels_cannot_climb_out_of_the_benchmark_folder(tmp_path):
    from conftest import make_imagefolder

    from autotransfer.bench.data import split_folders
    from autotransfer.bench.suite import DatasetSpec

    root = make_imagefolder(tmp_path / "imgs", {"a": 4, "b": 4})
    rows = ["path,label"] + [f"a/img_{i}.png,../../escaped" for i in range(4)] + [f"b/img_{i}.png,.." for i in range(4)]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    spec = DatasetSpec("evil", root / "labels.csv", (2,), 1)
    train, test = split_folders(spec, 2, 0, tmp_path / "bench" / "data")
    assert sorted(p.name for p in train.iterdir()) == ["%2E.", "%2E.%2F..%2Fescaped"]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "bench" / "escaped").exists()
    for split in (train, test):
        assert all(folder.resolve().parent == split.resolve() for folder in split.iterdir())
