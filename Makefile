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

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
