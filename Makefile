# Two entry points (README): `make demo` runs the main job, `make test` runs the tests.
# Each creates/updates .venv from pyproject.toml; nothing needs installing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m lstmc demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	rm -f benchmarks/extra.json
	$(PY) -m pytest benchmarks -p no:cacheprovider --benchmark-json=benchmarks/results.json -q
	$(PY) benchmarks/report.py benchmarks/results.json > benchmarks/RESULTS.md.new
	cat benchmarks/RESULTS.md.new

clean:
	rm -rf $(VENV) build *.egg-info
