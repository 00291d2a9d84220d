# Runstream: `make up` runs the whole thing, `make test` tests it. Both do their own set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test down status lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,dev]'
	@touch $@

## up: install, start Kafka + PostgreSQL, migrate, then serve on http://127.0.0.1:5000
up: $(STAMP)
	$(BIN)/runstream up
	@echo
	@echo "Runstream is starting at http://$${RUNSTREAM_HOST:-127.0.0.1}:$${RUNSTREAM_PORT:-5000}"
	@echo "Point the mlflow client at it:"
	@echo "    MLFLOW_TRACKING_URI=http://127.0.0.1:$${RUNSTREAM_PORT:-5000} python train.py"
	@echo
	$(BIN)/runstream serve

## test: install, start the stack if needed, run the whole suite (unit + integration)
test: $(STAMP)
	$(BIN)/runstream up
	$(BIN)/pytest $(PYTEST_ARGS)

## down: stop the local Kafka and PostgreSQL (their data stays in .runstream/)
down: $(STAMP)
	$(BIN)/runstream down

status: $(STAMP)
	$(BIN)/runstream status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## clean: stop the stack and delete its data and the virtual environment
clean:
	-test -x $(BIN)/runstream && $(BIN)/runstream down
	rm -rf .runstream $(VENV)
