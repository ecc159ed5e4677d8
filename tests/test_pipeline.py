"""The kept pipeline: safe checkpoint, predict on anything, fully-convolutional inference, export."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import colour_image, exported_probabilities, make_imagefolder
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from autotransfer.data.datasets import load_dataset
from autotransfer.data.images import ResizeRecipe
from autotransfer.deploy.export import export
from autotransfer.deploy.pipeline import Pipeline, _clear_dead_saves
from autotransfer.errors import AutoTransferError
from autotransfer.models.features import extract_features, normalisation, to_input
from autotransfer.models.zoo import create_backbone
from autotransfer.transfer.finetune import FinetuneConfig, finetune
from autotransfer.transfer.probes import as_linear
from autotransfer.transfer.transfer_model import TransferModel

SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_imagefolder(tmp_path_factory.mktemp("pl") / "d", {"a": 10, "b": 10, "c": 10})
    dataset = load_dataset(root, image_size=SIZE, show_progress=False)
    torch.manual_seed(0)
    backbone = create_backbone("test_efficientnet", pretrained=False)
    config = FinetuneConfig(strategy="finetune_top", epochs=2, batch_size=8, bf16=False, warmup_epochs=0, head_lr=1e-2)
    result = finetune(dataset, backbone, config)
    pipeline = Pipeline.from_model(
        backbone,
        result.model,
        classes=dataset.classes,
        recipe=dataset.recipe,
        frozen_groups=0,
        head_type="linear",
        strategy="finetune_top",
        hyperparameters=result.config,
        metrics={"val_accuracy": result.best_val_accuracy},
    )
    folder = pipeline.save(tmp_path_factory.mktemp("ck") / "pipeline")
    return pipeline, folder, root, dataset


def _reference_logits(pipeline: Pipeline, pixels: np.ndarray) -> torch.Tensor:
    mean, std = normalisation(pipeline.backbone, torch.device("cpu"))
    with torch.no_grad():
        return pipeline.model(to_input(pixels, mean, std, torch.device("cpu")))


def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path):
    pipeline, folder, root, _ = trained
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "pipeline.json"]
    loaded = Pipeline.load(folder, device="cpu")
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["content_hash"].startswith("sha256:") and spec["preprocess"]["size"] == SIZE
    assert spec["classes"] == ["a", "b", "c"] and spec["backbone"]["name"] == "test_efficientnet"
    np.testing.assert_allclose(loaded.predict_proba(root), pipeline.predict_proba(root), atol=1e-6)
    assert list(loaded.classes_) == ["a", "b", "c"]


def test_a_loaded_pipeline_gives_probabilities_as_a_frame_labelled_by_path(trained, tmp_path):
    """Issue 26's fourth trial: a `Pipeline.load`ed pipeline had no `predict_proba_frame` (the estimator had)."""
    _, folder, root, _ = trained
    loaded = Pipeline.load(folder, device="cpu")
    frame = loaded.predict_proba_frame(root / "c")
    assert frame.index.name == "path" and list(frame.columns) == ["a", "b", "c"]
    assert list(frame.index) == sorted(str(p) for p in (root / "c").glob("*.png"))  # predict_proba's row order
    np.testing.assert_array_equal(frame.to_numpy(), loaded.predict_proba(root / "c"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(AutoTransferError, match="1 input\\(s\\) could not be read: .*bad.png"):
        loaded.predict_proba_frame([root / "c", tmp_path / "bad.png"])


def test_a_save_tidies_what_a_killed_save_left(trained, tmp_path):
    """Killed between its two renames, a save leaves the old checkpoint moved aside and its staging copy."""
    pipeline, folder, _, _ = trained
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    target = tmp_path / "pipeline"
    shutil.copytree(folder, tmp_path / f".pipeline.old-{dead}")
    (tmp_path / f".pipeline.tmp-{dead}").mkdir()
    (tmp_path / f".pipeline.tmp-{os.getppid()}").mkdir()  # a save still running in a live process
    _clear_dead_saves(target)
    assert Pipeline.load(target).spec["content_hash"] == pipeline.spec["content_hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".pipeline.tmp-{os.getppid()}", "pipeline"]
    pipeline.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".pipeline.tmp-{os.getppid()}", "pipeline"]


@pytest.mark.parametrize("damage", ["flip_tensor_byte", "truncate", "edit_json", "drop_tensors", "not_json"])
def test_damaged_checkpoints_are_refused_clearly(trained, tmp_path, damage):
    import shutil

    _, folder, _, _ = trained
    copy = tmp_path / "ck"
    shutil.copytree(folder, copy)
    tensors, spec = copy / "model.safetensors", copy / "pipeline.json"
    if damage == "flip_tensor_byte":
        data = bytearray(tensors.read_bytes())
        data[len(data) // 2] ^= 0x01
        tensors.write_bytes(bytes(data))
    elif damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:1000])
    elif damage == "edit_json":
        spec.write_text(spec.read_text().replace('"a"', '"z"'))
    elif damage == "drop_tensors":
        tensors.unlink()
    else:
        spec.write_text("{not json")
    with pytest.raises(AutoTransferError) as error:
        Pipeline.load(copy)
    assert str(copy) in str(error.value)
    if damage in ("flip_tensor_byte", "truncate", "edit_json"):
        assert "hash mismatch" in str(error.value)


def test_a_re_hashed_checkpoint_with_a_missing_tensor_is_refused(trained, tmp_path):
    """Even with a consistent hash, a checkpoint lacking a tensor never yields a partial model."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from autotransfer.deploy.pipeline import _content_hash

    _, folder, _, _ = trained
    state = load_file(str(folder / "model.safetensors"))
    state.pop("head.bias")
    (tmp_path / "ck").mkdir()
    save_file(state, str(tmp_path / "ck" / "model.safetensors"))
    spec = json.loads((folder / "pipeline.json").read_text())
    spec["tensors_sha256"] = hashlib.sha256((tmp_path / "ck" / "model.safetensors").read_bytes()).hexdigest()
    spec["content_hash"] = _content_hash(spec, spec["tensors_sha256"])
    (tmp_path / "ck" / "pipeline.json").write_text(json.dumps(spec))
    with pytest.raises(AutoTransferError, match="does not match its architecture"):
        Pipeline.load(tmp_path / "ck")


def test_every_input_kind_gives_the_same_prediction(trained):
    pipeline, _, root, dataset = trained
    path = sorted((root / "b").iterdir())[0]
    image = Image.open(path).convert("RGB")
    array = np.array(image)
    expected = pipeline.predict_proba(path)
    for given in (
        str(path),
        [path],
        image,
        array,
        array.astype(np.float32) / 255.0,
        torch.from_numpy(array).permute(2, 0, 1),
        torch.from_numpy(array[None]).permute(0, 3, 1, 2),
    ):
        np.testing.assert_allclose(pipeline.predict_proba(given), expected, atol=1e-5)
    assert len(pipeline.predict(root)) == len(dataset)
    assert pipeline.score(root, [p.parent.name for p in sorted(root.rglob("*.png"))]) >= 0.0
    with pytest.raises(AutoTransferError, match="1 label\\(s\\) are not classes of this pipeline: 'nope'"):
        pipeline.score(root, ["nope"] * len(dataset))
    with pytest.raises(AutoTransferError, match="Class indices must lie in 0"):
        pipeline.score(root, [99] * len(dataset))
    with pytest.raises(AutoTransferError, match="Nothing to score"):
        pipeline.score([], [])
    with pytest.raises(AutoTransferError, match="Cannot predict on a dict"):
        pipeline.predict({"x": 1})


def test_native_size_network_equals_the_trained_model(trained):
    pipeline, _, _, dataset = trained
    pixels = np.asarray(dataset.images[:6])
    reference = _reference_logits(pipeline, pixels)
    with torch.no_grad():
        converted = pipeline.network()(torch.from_numpy(pixels.copy()).permute(0, 3, 1, 2))
    torch.testing.assert_close(converted, reference, atol=1e-5, rtol=1e-5)


def test_a_twice_larger_image_gives_a_score_map_in_one_pass(trained, monkeypatch):
    pipeline, _, _, _ = trained
    net = pipeline.network()
    with torch.no_grad():
        native = net.score_map(torch.zeros(1, 3, SIZE, SIZE))
        large = net.score_map(torch.zeros(1, 3, 2 * SIZE, 2 * SIZE))
    assert large.shape[:2] == (1, 3) and large.shape[2] == 2 * native.shape[2]
    big = colour_image(5, (3 * SIZE, 2 * SIZE))
    from_numpy = torch.from_numpy

    def writable_only(array: np.ndarray) -> torch.Tensor:  # torch warns (once per process) on read-only arrays
        assert array.flags.writeable, "a read-only array reached torch.from_numpy"
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", writable_only)
    for size in ("original", 2 * SIZE):
        probabilities = pipeline.predict_proba(big, size=size)
        assert probabilities.shape == (1, 3) and np.isclose(probabilities.sum(), 1.0)
    assert pipeline.predict_proba(big, size="original", reduce="max").shape == (1, 3)
    with pytest.raises(AutoTransferError, match="size must be"):
        pipeline.predict(big, size="huge")


def _alexnet_pipeline(tap: str, classes: str, size: int) -> Pipeline:
    """A random-init AlexNet cut at ``tap`` with a new head, trained (as far as the test cares) at ``size``."""
    torch.manual_seed(0)
    backbone = create_backbone("tv:alexnet", pretrained=False)
    model = TransferModel(backbone, tap, len(classes)).eval()
    return Pipeline.from_model(
        backbone,
        model,
        classes=list(classes),
        recipe=ResizeRecipe(size),
        frozen_groups=0,
        head_type="linear",
        strategy="linear_probe",
        hyperparameters={},
        metrics={},
    )


def test_alexnet_fully_connected_layers_become_convolutions():
    pipeline = _alexnet_pipeline("head", "wxyz", 224)
    net = pipeline.network()
    fc6 = net.trunk.trunk[1]  # the classifier trunk, listed (one map)
    assert isinstance(fc6, torch.nn.Conv2d) and fc6.kernel_size == (6, 6) and fc6.out_channels == 4096
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    with torch.no_grad():
        converted = net(torch.from_numpy(pixels.copy()).permute(0, 3, 1, 2))
        large = net.score_map(torch.zeros(1, 3, 448, 448))
    torch.testing.assert_close(converted, _reference_logits(pipeline, pixels), atol=1e-5, rtol=1e-5)
    assert large.shape == (1, 4, 8, 8)  # 13x13 pool5 map, 6x6 window


def test_alexnet_trained_below_native_size_folds_its_adaptive_pool():
    pipeline = _alexnet_pipeline("fc6", "abc", 96)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        converted = pipeline.network()(torch.from_numpy(pixels.copy()).permute(0, 3, 1, 2))
    torch.testing.assert_close(converted, _reference_logits(pipeline, pixels), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["softmax", "svm", "binary"])
def test_probe_heads_fold_into_one_linear_layer(kind):
    rng = np.random.default_rng(0)
    n_classes = 2 if kind == "binary" else 4
    x = rng.normal(size=(80, 6)) * 3 + 1
    y = rng.integers(0, n_classes, 80)
    head = make_pipeline(StandardScaler(), LinearSVC() if kind == "svm" else LogisticRegression()).fit(x, y)
    weight, bias = as_linear(head, n_classes)
    logits = torch.as_tensor(x, dtype=torch.float32) @ weight.T + bias
    np.testing.assert_array_equal(logits.argmax(1).numpy(), head.predict(x))
    if kind != "svm":
        np.testing.assert_allclose(torch.softmax(logits.double(), 1).numpy(), head.predict_proba(x), atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("which", ["trained", "combined"])  # one tap; three taps' features side by side
def test_export_matches_pytorch(request, tmp_path, fmt, which):
    _, folder, *_ = request.getfixturevalue(which)
    pipeline = Pipeline.load(folder, device="cpu")
    path = export(pipeline, fmt, tmp_path / f"model.{fmt}")
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        run = lambda images: session.run(None, {"images": images.numpy()})[0]  # noqa: E731
    else:
        run = torch.jit.load(str(path))
    # other sizes than the export's example, wide and tall: the graph's resize follows each one
    for height, width in ((SIZE + 9, SIZE + 21), (3 * SIZE, SIZE + 1), (SIZE, SIZE)):
        images = torch.randint(0, 256, (3, 3, height, width), dtype=torch.uint8)
        with torch.no_grad():
            expected = pipeline.network(with_resize=True)(images).numpy()
            got = np.asarray(run(images))
        # the graph rounds resized pixels to whole levels (as PIL): where ONNX Runtime's float result and
        # torch's straddle a .5, one pixel moves a level, and logits by about 1e-3
        np.testing.assert_allclose(got, expected, atol=5e-3, rtol=1e-3)
    meta = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    assert meta["classes"] == ["a", "b", "c"]
    assert meta["in_graph"].startswith(f"the centred square of the image resized to {SIZE}x{SIZE} px")  # centre crops
    assert meta["before_the_graph"].startswith("images of any size as 3-channel RGB; an image with transparency")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_exported_graph_labels_raw_images_as_predict_does(trained, tmp_path, fmt):
    """The fresh-user trial: fed whole non-square images, the graph squashed them while predict crops
    the centred square (176 of 210 labels agreed). Now the crop is in the graph: its probabilities on
    wide and tall images agree with predict's (PIL's resize) to resampling differences."""
    _, folder, *_ = trained
    pipeline = Pipeline.load(folder, device="cpu")
    path = export(pipeline, fmt, tmp_path / f"model.{fmt}")

    def banded(seed: int, width: int, height: int) -> Image.Image:
        """Red bands around a centred square picture: what the crop removes and a squash keeps."""
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[..., 0] = 255
        side = min(width, height)
        top, left = (height - side) // 2, (width - side) // 2
        pixels[top : top + side, left : left + side] = np.asarray(colour_image(seed, (side, side)))
        return Image.fromarray(pixels)

    images = [banded(seed, *size) for seed, size in enumerate([(90, 40), (40, 90), (133, 61), (48, 48)] * 2)]
    expected = pipeline.predict_proba(images)
    got = exported_probabilities(path, fmt, images)
    # measured: 3e-5 with the crop in the graph, 5e-3 when the graph squashed the whole image
    np.testing.assert_allclose(got, expected, atol=5e-4)


def test_cli_predict_reports_bad_files_and_goes_on(trained, tmp_path, cli):
    _, folder, root, _ = trained
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    colour_image(1, (80, 50)).save(mixed / "wide.jpg")
    colour_image(2, (20, 90)).save(mixed / "tall.png")
    (mixed / "broken.jpg").write_bytes(b"not an image")
    result = cli(
        [
            "predict",
            str(folder),
            str(mixed),
            str(tmp_path / "missing.png"),
            "--json",
            "--top-k",
            "2",
            "--csv",
            str(tmp_path / "p.csv"),
        ]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_name = {line["path"].rsplit("/", 1)[-1]: line for line in lines}
    assert set(by_name) == {"wide.jpg", "tall.png", "broken.jpg", "missing.png"}
    assert by_name["wide.jpg"]["label"] in "abc" and 0 < by_name["wide.jpg"]["probability"] <= 1
    assert len(by_name["tall.png"]["top_k"]) == 2
    assert "not an image" in by_name["broken.jpg"]["error"] and "no such file" in by_name["missing.png"]["error"]
    assert (tmp_path / "p.csv").read_text().count("\n") == 5


def test_cli_export_and_onnx_labels_agree_with_predict(trained, tmp_path, cli):
    import onnxruntime

    _, folder, root, dataset = trained
    result = cli(["export", str(folder), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    pixels = np.asarray(dataset.images).transpose(0, 3, 1, 2).copy()
    onnx_labels = session.run(None, {"images": pixels})[0].argmax(1)
    assert list(Pipeline.load(folder).predict(root)) == [dataset.classes[i] for i in onnx_labels]
    assert cli(["predict", str(tmp_path / "nowhere"), str(root)]).exit_code == 2


COMBINED = "blocks.2+blocks.4+head"  # strides 8, 32, 32 of test_efficientnet: maps of two sizes


@pytest.fixture(scope="module")
def combined(trained, tmp_path_factory):
    """A probe pipeline on three taps' pooled features side by side (ranking.py's combined row)."""
    _, _, root, dataset = trained
    backbone = create_backbone("test_efficientnet", pretrained=False)
    features = extract_features(dataset, backbone, [COMBINED], bf16=False, show_progress=False)[COMBINED]
    head = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500)).fit(features, dataset.labels)
    model = TransferModel(backbone, COMBINED, len(dataset.classes)).set_linear_head(head).eval()
    pipeline = Pipeline.from_model(
        backbone,
        model,
        classes=dataset.classes,
        recipe=dataset.recipe,
        frozen_groups=len(backbone.depth_groups),
        head_type="softmax",
        strategy="mid_layer_probe",
        hyperparameters={},
        metrics={},
    )
    return pipeline, pipeline.save(tmp_path_factory.mktemp("combined") / "pipeline"), features, head


def test_a_combined_tap_pipeline_is_the_probe_on_concatenated_features(combined, trained):
    pipeline, folder, features, head = combined
    assert features.shape[1] == 32 + 64 + 256
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["tap"] == {"name": COMBINED, "module": "blocks.2+blocks.4+bn2"} and spec["head"]["in_features"] == 352
    dataset = trained[3]
    pixels = np.asarray(dataset.images[:6])
    expected = head.predict_proba(features[:6])
    loaded = Pipeline.load(folder, device="cpu")
    with torch.no_grad():
        logits = loaded.network()(torch.from_numpy(pixels.copy()).permute(0, 3, 1, 2))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(loaded.predict_proba(dataset.paths[:6]), expected, atol=1e-4)


def test_a_combined_tap_slides_over_larger_images(combined):
    """Mean reduction: the sum of each part's mean score equals the head on the larger image's pooled
    taps (exact whatever the maps' sizes); the score map is on the finest part's grid."""
    pipeline, _, _, _ = combined
    images = torch.randint(0, 256, (2, 3, 3 * SIZE + 8, 2 * SIZE), dtype=torch.uint8)
    net = pipeline.network()
    mean, std = normalisation(pipeline.backbone, torch.device("cpu"))
    with torch.no_grad():
        reference = pipeline.model((images.float() / 255 - mean) / std)
        torch.testing.assert_close(net(images), reference, atol=1e-4, rtol=1e-4)
        scores = net.score_map(images)
    assert scores.shape == (2, 3, 13, 8)  # blocks.2, stride 8, on 104 x 64 px
    assert pipeline.predict_proba(colour_image(1, (3 * SIZE, 2 * SIZE)), size="original", reduce="max").shape == (1, 3)
