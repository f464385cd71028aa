# Two commands are the whole set-up: `make run` (the stack with demo data) and `make test`.
# Both create .venv and install the package; servers are private unless DATABASE_URL and
# REDIS_URL are set (see README.md).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lock decoder run test lint typecheck unit mutation browser promtool screenshot bench soak clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Renews constraints.txt: the newest releases pyproject.toml allows, in a fresh venv. Run
# make test after it; commit both only if it passes.
lock:
	rm -rf $(VENV).lock
	$(PYTHON) -m venv $(VENV).lock
	$(VENV).lock/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	{ sed -n '1,2p' constraints.txt; \
	  $(VENV).lock/bin/pip freeze --exclude-editable | grep -v '^mes-orders-cache'; } \
	  > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(VENV).lock

install: $(STAMP) decoder

# The listener's pgoutput decoder compiled by mypyc (devtools/build_decoder.py), rebuilt when its
# source changed; without a C compiler it says so and the listener runs the pure decoder.
decoder: $(STAMP)
	$(BIN)/python -m devtools.build_decoder

run: $(STAMP) decoder
	$(BIN)/python -m devtools.devstack run $(if $(DEMO),--demo,)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

# Mutation testing of the pure modules against the unit suite (mutmut; docs/MUTATION.md),
# one module at a time, each mutant against only the unit tests that reach its function.
# MUTATE=mescache.rules for one module; fails under MUTATION_MIN percent killed overall.
MUTATE ?= cdc_listener.pgoutput cdc_listener.pgoutput_messages cdc_listener.replication \
	mescache.keys mescache.mesh \
	mescache.pricing mescache.rules
MUTATION_JOBS ?= 2
MUTATION_MIN ?= 95
mutation: $(STAMP)
	rm -rf mutants
	for module in $(MUTATE); do \
		$(BIN)/mutmut run --max-children $(MUTATION_JOBS) "$$module.*" || exit 1; \
	done
	$(BIN)/mutmut results --all true | $(BIN)/python -m tests.mutation_score --min $(MUTATION_MIN)

# The compiled decoder's equality tests skip without a build, so where a C compiler is found
# a failed build fails the suite instead of silently testing only the pure decoder.
test: lint typecheck browser promtool decoder
	@if command -v $${CC:-cc} >/dev/null; then $(BIN)/python -m devtools.build_decoder --check; fi
	$(BIN)/pytest

# The dashboard's browser test drives Debian's chromium through chromedriver. Installed here
# when missing and we are root with apt-get; otherwise that one test is skipped and says why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the browser test (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			chromium chromium-driver \
		|| echo "WARNING: could not install chromium: the browser test will be skipped"; \
	else \
		echo "WARNING: chromium/chromedriver missing and not root with apt-get:" \
			"the browser test will be skipped"; \
	fi

# The alert rules' tests (tests/unit/test_deploy.py) run Debian's promtool, from the
# prometheus package: installed here when missing and we are root with apt-get (the tests
# use only promtool, never a Prometheus server); otherwise those tests are skipped and say why.
promtool:
	@if command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing prometheus (for promtool) for the alert rules' tests (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			prometheus \
		|| echo "WARNING: could not install prometheus: the rules' tests will be skipped"; \
	else \
		echo "WARNING: promtool missing and not root with apt-get:" \
			"the alert rules' tests will be skipped"; \
	fi

# Regenerates docs/dashboard.png from the browser test's live page.
screenshot: $(STAMP) browser
	DASHBOARD_SCREENSHOT=docs/dashboard.png CLIENT_SCREENSHOT=docs/client.png $(BIN)/pytest tests/acceptance -q

# Rewrites BENCHMARKS.md; QUICK=1 for a smoke run. Load comes from wrk (Debian's package),
# installed here when missing and we are root.
bench: $(STAMP) decoder
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } \
		|| { echo "bench: needs wrk (apt-get install wrk)"; exit 1; }
	QUICK=$(QUICK) $(BIN)/python -m bench.run

# The long soak: load plus each fault in turn (kill -9 listener, Redis and PostgreSQL
# restarts, the slot dropped); SOAK_DWELL seconds of load around each. Figures: README.md.
# CLUSTER=1: Redis is a local Redis Cluster (3 masters, 3 replicas), failed over and killed.
SOAK_DWELL ?= 40
# Then the evicting-Redis soak (every maxmemory policy, a minute each) and many more random
# interleavings of the store's scripts than `make test` runs.
EVICTION_SOAK_SECONDS ?= 60
STORE_MODEL_EXAMPLES ?= 1000
soak: $(STAMP)
	$(BIN)/python -m bench.soak --dwell $(SOAK_DWELL) $(if $(CLUSTER),--cluster)
	EVICTION_SOAK_SECONDS=$(EVICTION_SOAK_SECONDS) STORE_MODEL_EXAMPLES=$(STORE_MODEL_EXAMPLES) \
		$(BIN)/pytest -q -s tests/integration/test_eviction_soak.py tests/integration/test_store_model.py

clean:
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache .hypothesis mutants
