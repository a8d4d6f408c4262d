# Two entry points: `make demo` and `make test`. Both bootstrap .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-deps lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mqdb demo
	$(BIN)/sidecar demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Debian packages and the npm interop peers: installed as root, else listed with the command that installs them.
test-deps:
	scripts/test-deps

test: lint test-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/mqdb bench --size small

clean:
	rm -rf $(VENV) build *.egg-info
