#!/usr/bin/env bash
# The wheel works on its own: build it, check that the search spaces, bench suites and report templates are inside,
# install it in a clean virtual environment (CPU torch pins from constraints.txt), and run
# `autotransfer fit`, `predict` and `export` from that install, outside the source tree, on a few
# generated 40x30 PNGs in three class folders.
#
# No package index: the clean venv installs only the wheel and borrows its dependencies from the
# project venv (`make setup` resolves the same requirements from the indexes); a script then checks
# every requirement the wheel declares is met. (Filling a local wheelhouse with `pip download`
# found no psutil on CI where `make setup` had just installed it.) No model hub: the backbone is timm's tiny `test_efficientnet` with
# weights saved as safetensors and given through AUTOTRANSFER_WEIGHTS, as tests/conftest.py's fit_env.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/autotransfer-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
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
needed += [f"autotransfer/report/templates/{n}" for n in ("report.css", "report.html.j2", "bench.html.j2")]
missing = [n for n in needed if n not in names]
leaked = sorted(n for n in names if n.split("/")[0] in ("tests", "benchmarks", "scripts"))
if missing or leaked:
    sys.exit(f"wheel: missing {missing}, not ours to ship {leaked[:5]}")
EOF

say "installing it in a clean venv that borrows the project venv's dependencies"
"$PY" -m venv "$WORK/venv"
# A path line in a .pth file puts the project venv's site-packages after the clean venv's own; its own
# .pth files (the editable install of this source tree among them) are not run.
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" >"$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/project-deps.pth"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps "$wheel"
(cd "$WORK" && "$WORK/venv/bin/python" -) <<'EOF'
"""Every requirement the wheel declares (extras aside) is met, and autotransfer is the wheel's copy."""
import sys
from importlib.metadata import PackageNotFoundError, requires, version

from packaging.requirements import Requirement

import autotransfer

assert autotransfer.__file__.startswith(sys.prefix), autotransfer.__file__  # the wheel, not the source tree
unmet = []
for line in requires("autotransfer") or []:
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue
    try:
        found = version(requirement.name)
    except PackageNotFoundError:
        found = None
    if found is None or not requirement.specifier.contains(found, prereleases=True):
        unmet.append(f"{requirement} (found {found})")
if unmet:
    sys.exit(f"wheel: requirements not met: {unmet}")
EOF

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
