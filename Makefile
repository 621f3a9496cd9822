# Thin wrappers over pinned tools; the two commands a user needs are `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PKG := inferline

.PHONY: demo test check generate bench format services clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
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

bench: $(STAMP)
	$(BIN)/python benchmarks/server.py

services:
	bash scripts/services.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
