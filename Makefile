# The two commands of the README. Both set up a fresh machine first (scripts/setup.sh).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test lint
setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(VENV)/bin/pointstn demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# style check (pyproject.toml's [tool.ruff]); ruff is a developer tool, so set-up does not install it
lint: setup
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints/cpu.txt ruff
	$(VENV)/bin/ruff check pointstn tests tools
