# Two entry points (see README): `make demo` and `make test`. Both create .venv from the pinned lock file.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_TOKENIZER := $(abspath ../shared/tokenizers/gpt-neox-20b/tokenizer.json)
ifneq ($(wildcard $(SHARED_TOKENIZER)),)
export NEOX_TOKENIZER ?= $(SHARED_TOKENIZER)
endif

.PHONY: install demo test test-all lock bench-deps

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: install
	$(BIN)/python -m pipelines.build --mixture mpt30b_8k

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

# datatrove for the side-by-side dedupe benchmarks, in its own venv (see requirements-bench.txt);
# then: DATATROVE_PYTHON=.venv-datatrove/bin/python $(BIN)/python benchmarks/dedupe_speed.py
bench-deps: install
	$(PY) -m venv .venv-datatrove
	.venv-datatrove/bin/python -m pip install -q -r requirements-bench.txt

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^mptdata' > requirements.lock
