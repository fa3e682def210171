# labkit workbook: every target installs what it needs into .venv first.
#   make reproduce   run every notebook headless, write build/report/ (claims table), fail if a claim fails
#   make test        ruff + unit tests + every notebook (nbval as shipped, papermill with seed 1) + browser test
#   make lab         JupyterLab on 127.0.0.1 with a token
#   make bench       side-by-side timings against the peer libraries (benchmarks/results/)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.labkit-installed
JOBS   ?= 2
NBVAL  := --nbval-lax --nbval-current-env --nbval-cell-timeout=900 --nbval-kernel-startup-timeout=180
SEED   ?= 0
SCALE  ?= teach
TOKEN  ?= $(shell $(PYTHON) -c "import secrets; print(secrets.token_hex(16))")
PORT   ?= 8888

.PHONY: install reproduce test unit notebooks browser chromium lab bench lint strip clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (labkit)" >/dev/null
	touch $(STAMP)

reproduce: install
	LABKIT_PROGRESS=0 $(PY) -m labkit reproduce --jobs $(JOBS) --seed $(SEED) --scale $(SCALE)

# Debian's chromium for the real-browser test (installed only when missing).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

lint: install
	$(PY) -m ruff check src tests notebooks benchmarks

unit: install
	$(PY) -m pytest -n $(JOBS) --dist loadfile -m "not notebook and not browser" tests

notebooks: install
	$(PY) -m pytest -n $(JOBS) --dist loadfile $(NBVAL) -m notebook tests notebooks

browser: install chromium
	$(PY) -m pytest -m browser tests

# The test command of the README (and of CI): everything, notebooks in parallel on $(JOBS) workers.
test: install chromium
	$(PY) -m ruff check src tests notebooks benchmarks
	$(PY) -m pytest -n $(JOBS) --dist loadfile $(NBVAL) --durations=15 tests notebooks

lab: install
	@echo "JupyterLab on http://127.0.0.1:$(PORT)/lab?token=$(TOKEN)"
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --IdentityProvider.token=$(TOKEN) \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: install
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r benchmarks/requirements.txt
	$(PY) benchmarks/run.py

strip: install
	$(VENV)/bin/nbstripout --extra-keys "metadata.widgets cell.metadata.execution" notebooks/*/*.ipynb

clean:
	rm -rf build .pytest_cache .ruff_cache
