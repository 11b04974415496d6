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

# The suite runs as on a machine that never ran the project (issue 30): a new empty HOME and MPTDATA_CACHE, and no
# cache variable pointing elsewhere, so the first-run paths (SemDedup table, matplotlib's font cache, Beam's
# and Hugging Face's folders under ~) are what every run exercises. CI (.ci/run) calls this same target.
FRESH_CACHES = env -u XDG_CACHE_HOME -u XDG_CONFIG_HOME -u HF_HOME -u HF_HUB_CACHE -u MPLCONFIGDIR \
	-u TORCHINDUCTOR_CACHE_DIR -u TRITON_CACHE_DIR HOME=$$fresh/home MPTDATA_CACHE=$$fresh/mptdata-cache
# pytest with arguments $(1), in a new empty HOME and MPTDATA_CACHE, removed afterwards (the exit code is pytest's)
fresh_pytest = fresh=$$(mktemp -d -t mptdata-fresh.XXXXXX) && mkdir $$fresh/home && \
	echo "tests with empty per-machine caches: HOME=$$fresh/home MPTDATA_CACHE=$$fresh/mptdata-cache" && \
	$(FRESH_CACHES) $(BIN)/python -m pytest -q $(1); rc=$$?; rm -rf $$fresh; exit $$rc

test: install
	@$(call fresh_pytest,)

test-all: install
	@$(call fresh_pytest,-m "slow or not slow")

# datatrove for the side-by-side dedupe benchmarks, in its own venv (see requirements-bench.txt);
# then: DATATROVE_PYTHON=.venv-datatrove/bin/python $(BIN)/python benchmarks/dedupe_speed.py
bench-deps: install
	$(PY) -m venv .venv-datatrove
	.venv-datatrove/bin/python -m pip install -q -r requirements-bench.txt

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^mptdata' > requirements.lock
