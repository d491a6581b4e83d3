# Set-up takes the fast path for torch (a CPU wheel); the package itself keeps a range.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install test demo lint bench clean

$(BIN)/lminspect: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/lminspect

install: $(BIN)/lminspect

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

demo: install
	$(BIN)/lminspect fetch smollm2
	$(BIN)/lminspect stitch smollm2 --plan "0-23,27-29" --prompt "Once upon a time" --compare --max-new-tokens 40

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info
