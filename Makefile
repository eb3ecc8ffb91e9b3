# Quick start: `make run` (set up, then ask the embedded default model about this repository)
# and `make test` (set up, then run the test suite). Both work on a fresh machine without a GPU.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Converted models used by the tests that run the real default model (converted once, reused).
export STARCLI_TEST_CACHE ?= $(CURDIR)/.test-cache

.PHONY: setup run test test-fast clean

setup: $(VENV)/.installed

# requirements.lock pins exact versions (torch 2.13.0 is the CPU build); the editable install adds
# starcli itself and its console script.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# A fixed seed: the model's own sampling, with the same answer every time on one machine. The two
# files are the document: an edit to either changes the sampled answer (one in docs/architecture.md
# made it loop to the repetition stop in float32), so run .ci/run after one, on an empty cache.
run: setup
	$(BIN)/starcli ask README.md docs/architecture.md --seed 1 \
		"What does this repository do, and where is the Star Attention engine implemented? Answer in a few sentences."

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not real_model"

clean:
	rm -rf $(VENV) .test-cache .pytest_cache
