# The two commands of the README:  `make book` (main job) and `make test` (test suite; what CI runs).
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
SCALE   ?= tutorial
SEED    ?= 0
RUN_DIR ?= runs/$(SCALE)
TIMEOUT ?= 3600
# glibc malloc keeps freed memory instead of unmapping it: 1.6x faster teacher training on a VM (ersam_lib.repro.MALLOC_ENV)
export MALLOC_MMAP_THRESHOLD_ ?= 1099511627776
export MALLOC_TRIM_THRESHOLD_ ?= 1099511627776

.PHONY: setup run book render chapter test clean

# Create the virtual environment once; reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Execute every chapter notebook at $(SCALE) into $(RUN_DIR) (summary in $(RUN_DIR)/summary.json).
run: setup
	$(PY) -m ersam_lib run --scale $(SCALE) --seed $(SEED) --run-dir $(RUN_DIR) --timeout $(TIMEOUT)

# Main job: run every chapter, then render the book from the executed notebooks.
book: run render

# Render the book from an existing run without re-executing anything.
render: setup
	$(PY) -m ersam_lib book --run-dir $(RUN_DIR)

# One chapter alone, reusing the earlier chapters' files in $(RUN_DIR): make chapter CH=02
chapter: setup
	$(PY) -m ersam_lib run --scale $(SCALE) --seed $(SEED) --run-dir $(RUN_DIR) --only $(CH)

test: setup
	$(PY) -m pytest

clean:
	rm -rf book/_build
