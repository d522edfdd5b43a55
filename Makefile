# The two commands: `make demo` and `make test`. Both set up .venv (and the apt toolchains)
# on first use; later runs skip the install (scripts/setup.sh keeps a stamp).
PY := .venv/bin/python

.PHONY: setup demo test clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m dft_mm demo --out demo_out

test: setup
	$(PY) -m pytest
	bash scripts/floor_test.sh  # the core tests again at the oldest transformers the ranges admit

clean:
	rm -rf demo_out .pytest_cache
