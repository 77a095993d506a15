# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install demo test lint bench

install:
	# torch pinned first: the CPU wheel; an unpinned torch would pull the CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"

demo: install
	$(PYTHON) -m tttlab demo

test: install
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) benchmarks/ttt_speed.py
	$(PYTHON) benchmarks/cnn_accuracy.py
