# The two commands of the README. Both set up everything they need and are idempotent.
PY := .venv/bin/python
DEMO_DATA := datasets/animal-mnist-50-test20

.PHONY: demo test test-slow setup peers

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(PY) -m autotransfer.cli zoo fetch
	$(PY) -m autotransfer.cli zoo list
	$(PY) -m autotransfer.cli zoo verify
	$(PY) -m autotransfer.data.offline_datasets animal-mnist --per-class 50 --test-per-class 20 --out datasets
	$(PY) -m autotransfer.cli fit $(DEMO_DATA) --time-budget 2m --out runs/demo
	$(PY) -m autotransfer.cli predict runs/demo $(DEMO_DATA)/test/animal-3 --top-k 2
	$(PY) -m autotransfer.cli export runs/demo --format onnx --out runs/demo/model.onnx

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# The peer tools of `autotransfer bench` (fastai, AutoGluon) in their own venvs under .peers/; not part of `test`.
peers: setup
	@PY=$(PY) bash scripts/peers.sh
