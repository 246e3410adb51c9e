# The two commands of the README. Both set up a fresh machine first (scripts/setup.sh).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test
setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(VENV)/bin/pointstn demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
