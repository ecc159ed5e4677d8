#!/usr/bin/env bash
# Create .venv and install autotransfer with pinned dependencies; a no-op when nothing changed.
# torch is pinned to its CPU build through constraints.txt (see docs/design.md).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,ray]"
rm -f .venv/.installed-*
touch "$stamp"
