#!/usr/bin/env bash
# Install the peer tools of `autotransfer bench` (docs/bench.md, "Peers"), each in its own venv under .peers/,
# so that their pins never touch ours. Idempotent: a peer whose stamp matches this script and the pins is skipped.
#
#   .peers/fastai/      fastai + timm         (benchmarks/contenders/fastai_learner.py)
#   .peers/autogluon/   autogluon.multimodal  (benchmarks/contenders/autogluon_mm.py)
#
# The timm-script peer runs in our own .venv (timm is already there). A peer whose install fails leaves
# .peers/<name>.not-installed with the reason; `bench` then reports its cells as "not installed".
# Usage: scripts/peers.sh [fastai] [autogluon]   (default: both)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
peers_dir="${AUTOTRANSFER_PEERS:-$root/.peers}"
mkdir -p "$peers_dir"

# torch/torchvision as in constraints.txt (CPU torch); the peer's own package pinned to what was measured here.
declare -A PACKAGES=(
  [fastai]="fastai==2.8.12 timm==1.0.31"
  [autogluon]="autogluon.multimodal==1.6.3"
)
# What must import in the venv once installed (through the torchvision fix, as the contenders do).
declare -A CHECKS=(
  [fastai]="import fastai.vision.all, timm; print('fastai', fastai.__version__, 'timm', timm.__version__)"
  [autogluon]="from autogluon.multimodal import MultiModalPredictor; import autogluon.multimodal as m, timm; print('autogluon.multimodal', m.__version__, 'timm', timm.__version__)"
)

# The offline ImageNet weights every peer starts from (timm-format safetensors in $AUTOTRANSFER_CACHE/weights).
PY="${PY:-.venv/bin/python}"  # our own venv (make setup)
if [ -x "$PY" ]; then
  "$PY" -m autotransfer.cli zoo fetch mobilenetv2_100 || echo "peers: could not fetch the offline weights" >&2
else
  echo "peers: no $PY, so the offline weights were not fetched: run make setup" >&2
fi

install_peer() {
  local name=$1 venv="$peers_dir/$1" log="$peers_dir/$1.log"
  local stamp="$venv/.installed-$(printf '%s\n' "${PACKAGES[$name]}" | cat - constraints.txt | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then
    echo "peers: $name already installed ($venv)"
    return 0
  fi
  echo "peers: installing $name into $venv (log: $log) ..."
  rm -f "$venv"/.installed-* "$peers_dir/$name.not-installed"
  local check="import importlib.util, sys, pathlib; sys.path.insert(0, '$root'); from benchmarks.contenders._peer import fix_torchvision; fix_torchvision(); ${CHECKS[$name]}"
  if { python3 -m venv "$venv" &&
       "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
       "$venv/bin/python" -m pip install --disable-pip-version-check -c constraints.txt \
         torch==2.13.0 torchvision==0.28.0 ${PACKAGES[$name]} &&
       "$venv/bin/python" -c "$check"; } >"$log" 2>&1; then
    touch "$stamp"
    echo "peers: $name ok: $(tail -n 1 "$log")"
  else
    # the reason bench shows: the last line pip (or the import check) printed that says what went wrong
    { echo "install failed on $(date -u +%F): $(grep -E 'ERROR|Error|error' "$log" | tail -n 1 || tail -n 1 "$log")"
      echo "full log: $log"; } >"$peers_dir/$name.not-installed"
    echo "peers: $name NOT installed: $(head -n 1 "$peers_dir/$name.not-installed")" >&2
    return 1
  fi
}

status=0
for name in "${@:-fastai autogluon}"; do
  for n in $name; do
    if [ -z "${PACKAGES[$n]:-}" ]; then
      echo "peers: unknown peer '$n' (known: ${!PACKAGES[*]})" >&2
      status=2
      continue
    fi
    install_peer "$n" || status=1
  done
done
exit $status
