# The two things a newcomer runs: the offline demo and the tests (`make test`, what CI runs; `make test-fast`, all
# but the end-to-end runs).
.PHONY: install demo test test-fast
VENV ?= .venv
PY = $(VENV)/bin/python

install:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"

demo: install
	$(VENV)/bin/mim-hub demo --output-dir outputs/demo

test: install
	$(PY) -m pytest tests -q -p no:cacheprovider

# everything but the end-to-end runs (tests marked `slow`): the quick check while working
test-fast: install
	$(PY) -m pytest tests -q -p no:cacheprovider -m "not slow"
