# The two commands of the README. Both set up everything they need and are idempotent.
PY := .venv/bin/python
DEMO_DATA := datasets/animal-mnist-50

.PHONY: demo test test-slow setup

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(PY) -m autotransfer.cli zoo fetch
	$(PY) -m autotransfer.cli zoo list
	$(PY) -m autotransfer.cli zoo verify
	$(PY) -m benchmarks.datasets animal-mnist --per-class 50 --out datasets
	$(PY) -m autotransfer.cli inspect $(DEMO_DATA) --size 96
	$(PY) -m autotransfer.cli profile $(DEMO_DATA)
	$(PY) -m autotransfer.cli rank $(DEMO_DATA) --size 64 --backbones mobilenetv2_100,tf_efficientnet_lite0

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow
