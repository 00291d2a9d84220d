# Runstream: `make up` runs the whole thing, `make test` tests it. Both do their own set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test down status lint format bench lock clean

# Every dependency at the version in constraints.txt (`make lock` re-resolves them), so a release
# upstream changes nothing here until the lock is renewed on purpose.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,dev]'
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

## lock: re-resolve every dependency (all extras) in a scratch venv and pin what it got
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --disable-pip-version-check --upgrade pip
	.lock-venv/bin/pip install -q --disable-pip-version-check -e '.[test,dev,bench]'
	{ echo "# Pinned by \`make lock\` on $$(date -u +%F) with $$(.lock-venv/bin/python -V); edit pyproject.toml, not this."; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lock-venv

## clean: stop the stack and delete its data and the virtual environment
clean:
	-test -x $(BIN)/runstream && $(BIN)/runstream down
	rm -rf .runstream $(VENV)
