#!/usr/bin/env bash
# The wheel works on its own: build it, check that the search spaces and bench suites are inside,
# install it in a clean virtual environment (CPU torch pins from constraints.txt), and run
# `autotransfer fit`, `predict` and `export` from that install, outside the source tree, on a few
# generated 40x30 PNGs in three class folders.
#
# Fast on the second run: dependencies come from a local wheelhouse ($AUTOTRANSFER_WHEELHOUSE,
# default ~/.cache/autotransfer/wheelhouse; plus pip's own PIP_FIND_LINKS), filled from PyPI only
# when something is missing. No model hub: the backbone is timm's tiny `test_efficientnet` with
# weights saved as safetensors and given through AUTOTRANSFER_WEIGHTS, as tests/conftest.py's fit_env.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WHEELHOUSE=${AUTOTRANSFER_WHEELHOUSE:-$HOME/.cache/autotransfer/wheelhouse}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/autotransfer-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WHEELHOUSE"
say() { printf '[wheel check] %s\n' "$*"; }

say "building the wheel"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" . >/dev/null
wheel=$(ls "$WORK"/dist/autotransfer-*.whl)

say "checking its contents: $(basename "$wheel")"
"$PY" - "$wheel" <<'EOF'
import sys
import zipfile

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = [f"autotransfer/search/spaces/{n}.yaml" for n in ("fast", "default", "thorough")]
needed += [f"autotransfer/bench/suites/{n}.yaml" for n in ("smoke", "cpu-small")]
missing = [n for n in needed if n not in names]
leaked = sorted(n for n in names if n.split("/")[0] in ("tests", "benchmarks", "scripts"))
if missing or leaked:
    sys.exit(f"wheel: missing {missing}, not ours to ship {leaked[:5]}")
EOF

say "installing it in a clean venv"
"$PY" -m venv "$WORK/venv"
pip_install() {
  "$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$WHEELHOUSE" ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} -c constraints.txt "$wheel"
}
if ! pip_install 2>/dev/null; then
  # The project venv's pip fills it: the one `make setup` upgraded and just installed every dependency
  # with (a fresh venv's bundled pip found no psutil on CI's indexes where that pip did).
  say "filling the wheelhouse from the package indexes (once)"
  "$PY" -m pip download --quiet --disable-pip-version-check -d "$WHEELHOUSE" -c constraints.txt "$wheel"
  pip_install
fi

say "running autotransfer from the install"
cd "$WORK"
export AUTOTRANSFER_CACHE="$WORK/cache" AUTOTRANSFER_WEIGHTS="$WORK/weights" AUTOTRANSFER_OFFLINE=1
"$WORK/venv/bin/python" - <<'EOF'
"""Tiny data, tiny 'pretrained' weights, the profiler's reference statistics and a tiny space."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import autotransfer
from autotransfer.models.features import model_fingerprint
from autotransfer.models.zoo import create_backbone

assert "site-packages" in autotransfer.__file__, autotransfer.__file__  # the wheel, not the source tree
rng = np.random.default_rng(0)
for c, name in enumerate(("red", "green", "blue")):
    folder = Path("data") / name
    folder.mkdir(parents=True)
    for i in range(8):
        image = rng.integers(0, 120, size=(30, 40, 3)).astype(np.uint8)
        image[..., c] += 120
        Image.fromarray(image).save(folder / f"{i}.png")
torch.manual_seed(0)
weights = Path(os.environ["AUTOTRANSFER_WEIGHTS"])
weights.mkdir()
model = create_backbone("test_efficientnet", pretrained=False, keep_classifier=True).model
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights / "test_efficientnet.safetensors"))
net = create_backbone("test_efficientnet", keep_classifier=True)
key = hashlib.blake2b(f"v3-{model_fingerprint(net.model)}-32".encode(), digest_size=12).hexdigest()
references = Path(os.environ["AUTOTRANSFER_CACHE"]) / "profile-references"
references.mkdir(parents=True)
# Stand-ins for the ImageNet/noise statistics (real ones need real weights), as tests/conftest.py.
stand_ins = {"imagenet_photos": 0.5, "clipart": 1.2, "noise": 3.0, "entropy_imagenet_photos": 2.0, "entropy_clipart": 4.0, "entropy_noise": 6.0}
(references / f"{key}.json").write_text(json.dumps(stand_ins))
Path("space.yaml").write_text(
    "backbones: [test_efficientnet]\nresolutions: [32]\nstrategies: [linear_probe, mid_layer_probe, finetune_top]\n"
    "probe: {heads: [softmax], c_grid: [1.0], top_taps: 0}\nfinetune: {candidates: 1, max_trials: 2, epochs: 1, "
    "batch_size: 8}\n"
)
from autotransfer.bench.suite import load_suite
from autotransfer.search.space import load_search_space

for name in ("fast", "default", "thorough"):
    load_search_space(name)  # the built-in spaces load from the installed package
load_suite("smoke")
EOF
bin="$WORK/venv/bin/autotransfer"
"$bin" --version
"$bin" fit data --search-space space.yaml --time-budget 90s --profile-backbone test_efficientnet --out run --quiet
for f in run/report.html run/leaderboard.csv run/predictions-val.csv run/pipeline; do
  [ -e "$f" ] || { say "fit left no $f"; exit 1; }
done
"$bin" predict run data/red --csv predictions.csv >/dev/null
"$bin" export run --format onnx --out model.onnx >/dev/null
say "ok: the wheel installs, finds its search spaces and suites, and fits, predicts and exports"
