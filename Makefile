# One-word entry points. Everything runs from the project's own virtualenv (.venv).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PY := $(BIN)/python
# make local / demo / invoke PARAMETERS="Name=Value ...": template.yaml parameters, as sam deploy's
# --parameter-overrides sets them.
OVERRIDES = $(if $(PARAMETERS),--parameter-overrides $(PARAMETERS))

# Lambda runs python3.13 and `sam build` needs that interpreter on PATH. Under pyenv,
# select the newest installed 3.13 ahead of the default one.
PYENV_313 := $(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.|$$)' | tail -n1)
ifneq ($(PYENV_313),)
export PYENV_VERSION := $(PYENV_313):$(shell pyenv global 2>/dev/null | head -n1)
endif
PYTHON ?= $(shell python3.13 -c '' >/dev/null 2>&1 && echo python3.13 || echo python3)

export PATH := $(BIN):$(PATH)
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

STAMP := $(VENV)/.installed-dev
# checkov pins an older boto3 and networkx than moto and the SAM CLI need: its own venv.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: help venv check lint typecheck template iac-scan build test test-py311 test-unit test-e2e local demo invoke bench deploy clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'
	@echo
	@echo "Variables:"
	@echo "  PARAMETERS=\"Name=Value ...\"  template.yaml parameters for make local, demo and invoke"
	@echo "                              (e.g. PARAMETERS=\"AllowedReturnOrigins=https://app.example.com\")"
	@echo "  LOCAL_ARGS=\"...\"             flags of make local: --verbose (function logs here too),"
	@echo "                              --port 3000, --aws-port 5055, --capsule-port 8901 (0: any free),"
	@echo "                              --expires-in SECONDS (the emulator's token lifetime)"
	@echo "  FUNCTION=, EVENT=            make invoke's function (logical id) and event file"
	@echo "  BENCH_ARGS=--quick           a tiny make bench"

$(STAMP): pyproject.toml layers/capsule_oauth/requirements.txt
	@echo "Setting up $(VENV): a virtualenv with everything to develop, test and run locally"
	@echo "(the SAM CLI, moto, Powertools, playwright, ...). The first time takes 1-3 minutes;"
	@echo "pip shows its progress below. Later runs skip this until pyproject.toml changes."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=25.1'
	$(PY) -m pip install --progress-bar on --group dev
	@touch $@

venv: $(STAMP) ## create .venv with everything needed to develop, test and run locally

check: lint typecheck template iac-scan build ## ruff, ruff format --check, mypy, sam validate --lint, cfn-lint, no dependency cycle and least privilege after the SAM transform, checkov, sam build

lint: $(STAMP) ## ruff check and ruff format --check
	ruff check .
	ruff format --check .

typecheck: $(STAMP) ## mypy, strict
	mypy

template: $(STAMP) ## sam validate --lint, cfn-lint, no dependency cycle and least privilege after the SAM transform
	sam validate --lint --template template.yaml
	cfn-lint template.yaml
	$(PY) -m local.deployable template.yaml
	$(PY) -m pytest -q -p no:randomly tests/handlers/test_least_privilege.py

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov~=3.3.30'
	@touch $@

iac-scan: $(CHECKOV_STAMP) ## checkov on template.yaml, offline; every skipped check has its reason in the template
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --skip-download --compact --quiet

build: $(STAMP) ## sam build, then bytecode compiled in (needs python3.13, as Lambda runs it)
	sam build --template template.yaml --parallel
	@# /opt and /var/task are read-only in Lambda, so without shipped .pyc every cold start
	@# compiles the layer from source again (make bench: about 140 ms per function).
	python3.13 -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build

test: $(STAMP) ## every test: unit, handlers, end to end, browser
	$(PY) -m pytest

test-py311: ## every test again on Python 3.11, the oldest Python the code supports
	$(MAKE) test VENV=.venv-3.11 PYTHON=python3.11

test-unit: $(STAMP) ## the fast tests only (no local stack, no browser)
	$(PY) -m pytest tests/unit tests/handlers

test-e2e: $(STAMP) ## the local stack over HTTP and in headless Chromium
	$(PY) -m pytest tests/e2e tests/browser

local: $(STAMP) ## run the whole stack on this machine (no AWS or Capsule account needed)
	$(PY) -m local $(LOCAL_ARGS) $(OVERRIDES)

demo: $(STAMP) ## connect, refresh and call Capsule against the local stack, no browser
	$(PY) -m local.demo $(OVERRIDES)

invoke: $(STAMP) ## run one handler on one event, no Docker (FUNCTION=StartFunction EVENT=events/start.json)
	$(PY) -m local.invoke $(FUNCTION) $(EVENT) $(OVERRIDES)

bench: $(STAMP) ## cold start, calls per flow, refresh at scale, deploy size (BENCH_ARGS=--quick: tiny)
	$(PY) -m bench $(BENCH_ARGS)

deploy: build ## sam deploy --guided (needs AWS credentials)
	sam deploy --guided

clean: ## remove build output and caches (keeps .venv)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache tests/artifacts
