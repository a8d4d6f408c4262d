# Two entry points: `make demo` and `make test`. Both bootstrap .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The editable install builds the compiled twins of the sidecar's codecs and mqdb's core in place
# (setup.py): a change rebuilds them.
CODECS := setup.py sidecar/_accel.py $(wildcard sidecar/codecs/*.py sidecar/policies/*.py sidecar/runtime/*.py sidecar/*/*.pxd) \
	mqdb/_accel.py mqdb/coding.py mqdb/columns.py mqdb/db.py mqdb/directory.py mqdb/hashing.py mqdb/reads.py \
	mqdb/shard.py mqdb/stage.py $(wildcard mqdb/_c_*.pxd)

.PHONY: demo test test-deps lint bench clean

$(STAMP): pyproject.toml $(CODECS)
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

# Twice: the codecs compiled, then as pure Python (the reference the compiled build is held to); the
# second pass leaves out the slow wheel builds, which test the build itself (both ways) once already.
# Each pass ends with its 15 slowest tests, so that the time of a pass has names.
test: lint test-deps
	$(BIN)/python -m pytest -q --durations=15
	DUBBOMESH_PURE_PYTHON=1 $(BIN)/python -m pytest -q -m "not slow" --durations=15

bench: $(STAMP)
	$(BIN)/mqdb bench --size small

clean:
	rm -rf $(VENV) build *.egg-info sidecar/*/_c_*.so mqdb/_c_*.so
