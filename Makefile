# One-command set-up: a virtual environment with the pinned dependencies, then the job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

# constraints.txt pins the tested versions; pyproject.toml only states compatible ranges.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,serve,ray,robustness]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/tim demo -o demo-out

# One worker per core (pytest-xdist), each test file on one worker so that its fixtures are built once.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/faces.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
