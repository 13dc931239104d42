# The two commands of the README: `make demo` and `make test`. Each installs what it needs
# into ./.venv first, so both work on a fresh machine with only python3 (>= 3.10).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install demo test
install: $(STAMP)

# The main job on the embedded SQLite default (./identity-graph.db): resolve the sample
# history, then look a person up. Running it again changes nothing (rule 9).
demo: $(STAMP)
	$(BIN)/identity-graph import examples/sample-history.jsonl
	$(BIN)/identity-graph lookup jen@email.com

# The whole suite with branch coverage, then the gate on the core modules (.ci/coverage_gate.py).
test: $(STAMP)
	$(BIN)/python -m pytest --cov=identity_graph --cov-branch --cov-report=
	$(BIN)/python .ci/coverage_gate.py
