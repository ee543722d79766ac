# Everything installs into .venv from PyPI; only Python (3.11+) and make are assumed.
# mitmproxy 12 needs Python >= 3.12; with only 3.11 available, mitmproxy 11 is used.
PYTHON ?= $(shell for v in 3.12 3.13; do \
	  for p in "$$(command -v python$$v 2>/dev/null)" $$HOME/.pyenv/versions/$$v*/bin/python$$v; do \
	    [ -n "$$p" ] && [ -x "$$p" ] && "$$p" -c 'import venv' 2>/dev/null && echo "$$p" && exit 0; \
	  done; done; echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-mitmproxy11 lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[record,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sse-recorder demo

test: $(STAMP)
	.ci/system-packages
	$(BIN)/ruff check sse_recorder addons tests bench
	$(BIN)/mypy sse_recorder addons
	$(BIN)/python -m pytest -n 2 --dist worksteal

# The recorder on Python 3.11 with mitmproxy 11.0.2 (and the older httpx/openai/anthropic
# that its pins allow), beside the main suite's Python 3.12+ and mitmproxy 12.
PYTHON311 ?= python3.11
test-mitmproxy11:
	$(PYTHON311) -m venv .venv311
	.venv311/bin/python -m pip install --quiet --upgrade pip
	.venv311/bin/python -m pip install --quiet -e '.[record,dev]'
	.venv311/bin/python -m pytest tests/unit tests/integration/test_record.py \
		tests/integration/test_mitmdump_addon.py tests/integration/test_record_tls.py \
		tests/integration/test_replay.py

lint: $(STAMP)
	$(BIN)/ruff check sse_recorder addons tests bench
	$(BIN)/mypy sse_recorder addons

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[record,dev,bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .venv311 build *.egg-info .pytest_cache .ruff_cache
