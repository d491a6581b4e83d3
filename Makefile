# Set-up takes the fast path for torch (a CPU wheel); the package itself keeps a range.
# `make test` / `make demo` install from requirements/test.lock (the exact versions the suite last
# passed with); `make test-latest` tries today's newest releases; `make lock` records them once they pass.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
LOCK := requirements/test.lock
LATEST := .venv-latest

.PHONY: install test demo lint bench clean lock test-latest

$(BIN)/lminspect: pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c $(LOCK) -e ".[dev]"
	touch $(BIN)/lminspect

install: $(BIN)/lminspect

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

demo: install
	$(BIN)/lminspect fetch smollm2
	$(BIN)/lminspect stitch smollm2 "Once upon a time" --plan "0-23,27-29" --compare --max-new-tokens 40

# A fresh venv with the newest release of every dependency (no lock; torch stays $(TORCH)), then the
# whole suite: upstream breakage is found on purpose, not by a newcomer.
test-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q "$(TORCH)"
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" "$(TORCH)"  # torch stays put: an eager upgrade pulls a CUDA build
	$(LATEST)/bin/python -m pytest -q -n 2 --dist loadgroup

# Refresh the lock: only a set of versions that just passed the whole suite is written (atomically).
lock: test-latest
	{ sed -n '1,/^# torch is not here/p' $(LOCK); \
	  $(LATEST)/bin/pip freeze --exclude-editable | grep -v -i '^torch=='; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	@echo "$(LOCK): $$(grep -vc '^#' $(LOCK)) pinned packages"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(LATEST) *.egg-info
