# The two README commands (quickstart, test). Each sets up .venv first (idempotent), so a fresh
# clone needs nothing else. `make test` runs everything (what CI runs); `make test-fast` is the
# inner loop: the tests not marked e2e (no pipeline runs, Ray Train or Serve deployments), and
# no browser (the report screenshot test skips where chromium is missing).
.PHONY: setup setup-vllm quickstart test test-fast lint bench

setup:
	scripts/setup.sh

setup-vllm:
	scripts/setup-vllm.sh

quickstart: setup
	.venv/bin/prefgen run pipelines/quickstart.yaml

test:
	PREFGEN_SETUP_BROWSER=1 scripts/setup.sh
	scripts/setup-vllm.sh
	.venv/bin/python -m pytest -q --durations=25

test-fast: setup
	PREFGEN_ALLOW_NO_BROWSER=1 .venv/bin/python -m pytest -q -m "not e2e"

lint:
	.venv/bin/ruff check src tests bench && .venv/bin/ruff format --check src tests bench

bench: setup
	.venv/bin/python bench/pipeline_vs_engine.py
