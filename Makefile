# The two commands the README opens with: `make demo` and `make test`.
# Each sets up what it needs on a fresh machine (a virtualenv in .venv, system tools).

# The distribution's CPython when there is one: Debian links its interpreter statically,
# while a source build with --enable-shared (pyenv's default) calls libpython through
# position-independent code, which makes Python-heavy work measurably slower (the fleet
# server needs about 5 % more CPU per report; docs/fleet-server.md). Override with
# `make PYTHON=python3`.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test venv system-deps lint clean

demo: system-deps venv
	$(BIN)/tinyward demo

test: system-deps venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The stamp names the interpreter: choosing another one rebuilds .venv on it (--clear).
# system-deps first (order only): Debian's python3.11 needs python3.11-venv for ensurepip.
STAMP := $(VENV)/.installed$(subst /,_,$(PYTHON))

venv: $(STAMP)

# Reproducible: every package at the version in constraints.txt (pip, setuptools too).
$(STAMP): pyproject.toml constraints.txt | system-deps
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
