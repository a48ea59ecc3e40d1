# The front door: `make up` runs the gateway, `make test` runs every test but the slow ones.
SHELL := /bin/bash
PY := .venv/bin/python
# Bytecode is cached in .pycache/ (ignored), not beside the sources: the tree stays clean,
# and the dozens of service processes a test run starts reuse it instead of compiling every
# module again (with PYTHONDONTWRITEBYTECODE, which many CI images set, an edge took 10 s to
# import instead of 3 s here). Not under .venv: bootstrap's first Python would create .venv
# before uv does, and uv refuses a .venv that is not an environment.
export PYTHONPYCACHEPREFIX := $(CURDIR)/.pycache
unexport PYTHONDONTWRITEBYTECODE

.PHONY: up test test-slow test-containers lint typecheck proto proto-check unit fmt fuzz bench clean k8s

.venv/.synced: pyproject.toml uv.lock scripts/bootstrap.sh
	@scripts/bootstrap.sh

tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	@npm ci --prefix tests/js --no-audit --no-fund --silent

# kustomize, built from the Go module proxy at the version the script pins (tests/k8s).
.tools/kustomize.version: scripts/install_kustomize.sh
	@scripts/install_kustomize.sh >/dev/null

up: .venv/.synced
	@$(PY) -m devstack

# SeaweedFS's weed, an S3-compatible server for the S3 result store's tests (tests/jobs).
.tools/weed.version: scripts/install_seaweedfs.sh
	@scripts/install_seaweedfs.sh >/dev/null

test: .venv/.synced tests/js/node_modules/.package-lock.json .tools/kustomize.version .tools/weed.version lint typecheck proto-check
	@$(PY) -m pytest -q -p no:cacheprovider --durations=15 -m "not slow"

# The slow tests make test leaves out (the chaos and scale-out runs, tests/e2e/test_chaos.py
# and test_scaleout.py); -s shows the figures they print.
test-slow: .venv/.synced
	@$(PY) -m pytest -q -s -p no:cacheprovider -m slow

# The ledger, money and end-to-end tests against Kafka, a ClickHouse server and PostgreSQL
# in Docker containers (testcontainers; tests/backends.py). Fails at once without Docker.
test-containers: .venv/.synced tests/js/node_modules/.package-lock.json
	@AIG_TEST_BACKENDS=containers $(PY) -m pytest -q -p no:cacheprovider -m "not slow and not broker_process" tests/ledger tests/controldb tests/e2e

lint: .venv/.synced
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

typecheck: .venv/.synced
	@.venv/bin/mypy services tests bench

proto: .venv/.synced
	@scripts/gen_proto.sh gen

# The generated code is committed; this fails when it no longer matches proto/.
proto-check: .venv/.synced
	@tmp=$$(mktemp -d) && scripts/gen_proto.sh "$$tmp" >/dev/null && \
	  diff -r -q -x __pycache__ gen/aig "$$tmp/aig" && rm -rf "$$tmp" && echo "proto: generated code is current"

# Schema fuzzing of the edge with many more examples per operation than make test runs.
fuzz: .venv/.synced
	@AIG_FUZZ_EXAMPLES=500 $(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_schema_fuzz.py

fmt: .venv/.synced
	@.venv/bin/ruff check --fix .
	@.venv/bin/ruff format .

# The load generator (oha) and LiteLLM live in bench-only environments (bench/install.sh).
bench: .venv/.synced
	@bench/install.sh
	@$(PY) -m bench
	@$(PY) -m bench.extras

# Renders the Kubernetes manifests of one overlay: make k8s OVERLAY=prod | kubectl apply -f -
OVERLAY ?= dev
k8s: .tools/kustomize.version
	@.tools/bin/kustomize build k8s/overlays/$(OVERLAY)

clean:
	rm -rf .venv .tools .pycache var tests/js/node_modules
