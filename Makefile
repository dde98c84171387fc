# Every command the README names is a target here.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

include tools/versions.mk

ROOT := $(CURDIR)
TOOLS := $(ROOT)/.tools
VENV := $(ROOT)/.venv
export PATH := $(TOOLS)/bin:$(VENV)/bin:$(PATH)

REGO := rego policy-tests
INPUT_SCHEMA := pyagent/schemas/input.schema.json
COVERAGE_MIN := 95
PYTHON ?= python3

.PHONY: help setup packages tools kube-apiserver image-base image venv run decide bench test lint policy-test coverage pytest docs docs-check bench-policy clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: packages tools venv ## install Debian packages, build pinned OPA and Regal, create .venv

# Debian packages the tests run for real: Alertmanager routes alerts to the agent's webhook;
# Prometheus serves error budgets, and its promtool tests the shipped rules; Chromium and its
# WebDriver drive the console in a real browser; the Docker executor's tests start docker.io's
# dockerd and import an image of busybox-static's busybox
DEB_PACKAGES := prometheus-alertmanager prometheus chromium chromium-driver docker.io busybox-static
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

packages: ## apt-get the Debian packages the tests use, when any is missing
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

tools: $(TOOLS)/stamps/opa-$(OPA_VERSION) $(TOOLS)/stamps/regal-$(REGAL_VERSION)

kube-apiserver: ## build the pinned kube-apiserver into .tools/bin (about 5 min cold), apt-get etcd-server
	tools/build-kube-apiserver.sh

image-base: ## debootstrap the image test's stand-in Python base into .tools/images (about 1 min cold)
	tools/build-image-base.sh

# The container image. The wheels are built here, so `docker build` needs no network; the
# base images are variables, so a registry mirror's copies can stand in for them.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= pyagent:$(VERSION)
PYTHON_IMAGE ?= python:3.11-slim-bookworm
OPA_IMAGE ?= openpolicyagent/opa:$(OPA_VERSION:v%=%)-static

image: venv ## build the container image (pyagent:VERSION): wheels into build/wheels, then docker build
	rm -rf build/wheels
	$(VENV)/bin/pip wheel --quiet --wheel-dir build/wheels .
	docker build --network none --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
		--build-arg OPA_IMAGE=$(OPA_IMAGE) --tag $(IMAGE) .

$(TOOLS)/stamps/opa-$(OPA_VERSION): tools/versions.mk tools/go-install.sh
	tools/go-install.sh opa github.com/open-policy-agent/opa $(OPA_VERSION)

$(TOOLS)/stamps/regal-$(REGAL_VERSION): tools/versions.mk tools/go-install.sh
	tools/go-install.sh regal github.com/open-policy-agent/regal $(REGAL_VERSION) \
		github.com/open-policy-agent/regal/pkg/version.Version

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

run: setup ## set up, then serve the webhook on 127.0.0.1:9095 with its own OPA and the examples
	pyagent history import examples/history.yaml --state-dir var
	pyagent serve --config examples/config.yaml

decide: setup ## decide DESIGN.md's example policy input with an OPA started here
	pyagent decide examples/input.json --explain

test: setup kube-apiserver image-base lint policy-test coverage pytest docs-check ## set up (and build kube-apiserver and the image test's base), then run every gate and test

lint: ## opa fmt, opa check --strict with the input schema, Regal, promtool, ruff, mypy
	opa fmt --list --fail $(REGO)
	opa check --strict --schema $(INPUT_SCHEMA) $(REGO)
	regal lint $(REGO)
	promtool check rules deploy/prometheus/pyagent-rules.yml
	promtool test rules deploy/prometheus/pyagent-rules.test.yml
	ruff check pyagent tests scripts bench
	ruff format --check pyagent tests scripts bench
	mypy

policy-test: ## opa test, every test passing
	opa test --timeout 60s --fail-on-empty -v $(REGO) | tail -n 3

coverage: ## coverage of rego/ by the policy tests, at least COVERAGE_MIN percent
	opa test --timeout 60s --coverage $(REGO) > $(TOOLS)/coverage.json
	python3 scripts/rego_coverage.py $(TOOLS)/coverage.json --root rego --min $(COVERAGE_MIN)

pytest: ## the Python tests, against a real OPA
	pytest

docs: ## regenerate the README's trigger table from the policy's METADATA
	opa inspect -a --format json rego > $(TOOLS)/inspect.json
	python3 scripts/trigger_table.py $(TOOLS)/inspect.json README.md

docs-check: ## fail when the README's trigger table is stale
	opa inspect -a --format json rego > $(TOOLS)/inspect.json
	python3 scripts/trigger_table.py $(TOOLS)/inspect.json README.md --check

bench: setup kube-apiserver ## the benchmarks: the policy alone, the agent end to end under load (and against the least pipeline on its stack) and in process, its deciding stage alone and by batch size, the human loop's timing, a level-4 restart on a real API server
	python3 bench/policy_bench.py
	python -m bench.pipeline_bench
	python -m bench.deciding_bench
	python -m bench.batch_bench
	python -m bench.approval_bench
	python -m bench.executor_bench
	python -m bench.floor_bench
	python -m bench.e2e_bench  # last: it exits 1 while a load target is missed

bench-policy: tools ## opa bench on the decision for DESIGN.md's example input
	python3 bench/policy_bench.py

clean: ## remove built tools, the virtualenv and caches
	rm -rf $(TOOLS) $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
