# The two commands of the README: `make demo` and `make test`. Both work on a fresh Debian machine with
# Python 3.11; `make test` also installs the Debian packages the tests use (as root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_CAPTURE ?= captures/keepalive-idle-timeout.pcap
DEMO_REPORT := reports/$(basename $(notdir $(DEMO_CAPTURE))).html

.PHONY: demo test venv lint typecheck clean bench fuzz

$(BIN)/analyzer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/analyzer

venv: $(BIN)/analyzer

demo: venv
	$(BIN)/analyzer report $(DEMO_CAPTURE) -o $(DEMO_REPORT)
	$(BIN)/analyzer summary $(DEMO_CAPTURE)
	@echo "report written to $(DEMO_REPORT)"

lint: venv
	$(BIN)/ruff check analyzer tests captures bench fuzz
	$(BIN)/mypy analyzer

test: venv
	./tools/install-system-deps.sh
	$(MAKE) lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The analyzer's modules are compiled first: an editable install leaves them uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set every run would compile them again (0.7 s a run), which an installed
# package never does.
bench: venv
	./tools/install-system-deps.sh bench
	$(BIN)/python -m compileall -q analyzer
	$(BIN)/python bench/run.py

# Fuzz every parser layer (fuzz/run.py): FUZZ_SECONDS per target; findings land in tests/fuzz_regressions/.
# make fuzz FUZZ_SECONDS=600 [FUZZ_TARGET=http1,tls] [FUZZ_ENGINE=atheris] [FUZZ_ARGS="--seed 7"]
FUZZ_SECONDS ?= 60
FUZZ_TARGET ?= all
FUZZ_ENGINE ?= builtin
fuzz: venv
	$(BIN)/python -m fuzz.run --target $(FUZZ_TARGET) --seconds $(FUZZ_SECONDS) --engine $(FUZZ_ENGINE) $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
