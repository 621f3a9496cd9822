# Thin wrappers over pinned tools; the two commands a user needs are `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PKG := inferline

.PHONY: demo test check generate bench bench-quick bench-profile format services clean lock

$(STAMP): pyproject.toml constraints.txt scripts/bootstrap.sh
	bash scripts/bootstrap.sh

demo: $(STAMP)
	$(BIN)/inferline demo

test: $(STAMP) services
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check $(PKG) tests benchmarks
	$(BIN)/ruff check $(PKG) tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory generate
	git diff --exit-code -- $(PKG)/protocols/_generated
	test -z "$$(git status --porcelain -- $(PKG)/protocols/_generated)"

format: $(STAMP)
	$(BIN)/ruff format $(PKG) tests benchmarks
	$(BIN)/ruff check --fix $(PKG) tests benchmarks

generate: $(STAMP)
	bash scripts/generate-proto.sh

# inferline against MLServer, KServe, BentoML and FastAPI (each in its own venv under
# benchmarks/.work): one table, written to benchmarks/results/latest.{md,json}.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# inferline alone, demo ONNX forest at 1, 16 and 64 connections.
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/server.py $(BENCH_ARGS)

# py-spy (or pyinstrument: BENCH_ARGS="--tool pyinstrument") under wrk load.
bench-profile: $(STAMP)
	$(BIN)/python benchmarks/profile.py $(BENCH_ARGS)

# Re-resolve every dependency and rewrite constraints.txt (then run make test and commit).
lock:
	bash scripts/lock.sh

services:
	bash scripts/services.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
