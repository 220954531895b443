# The two set-up commands: `make demo` and `make test`. Both build .venv from
# the pinned lock files on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := publisher verifier tests bench

.PHONY: demo demo-hsm serve site test lint typecheck pytest bench clean

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --only-binary :all: -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# MkDocs 2.0 is an incompatible rewrite; its 1.6 warning about it is noise here.
export NO_MKDOCS_2_WARNING := 1

# The demo folder; the publication and site of `make site` (default: the demo's).
DEMO ?= build/demo
PUB ?= $(DEMO)/publication
SITE ?= $(DEMO)/site

# Refuses (and deletes nothing) when $(DEMO) holds changes the demo did not make.
demo: $(STAMP)
	$(BIN)/cpl-publisher demo --out $(DEMO)
	@$(MAKE) --no-print-directory site PUB=$(DEMO)/publication SITE=$(DEMO)/site

# The same demo with every key of the publisher (CA keys, log key) inside a fresh SoftHSM2 token
# in $(DEMO_HSM)/token (Debian packages softhsm2 and opensc).
DEMO_HSM ?= build/demo-hsm
demo-hsm: $(STAMP)
	@command -v softhsm2-util >/dev/null || { echo "make demo-hsm needs SoftHSM2: apt-get install softhsm2 opensc"; exit 2; }
	$(BIN)/cpl-publisher demo --hsm --out $(DEMO_HSM)
	@$(MAKE) --no-print-directory site PUB=$(DEMO_HSM)/publication SITE=$(DEMO_HSM)/site

# Rebuild the site of an existing publication (changes nothing in it).
site: $(STAMP)
	@test -f $(PUB)/publisher.toml || { echo "no publication at $(PUB): run 'make demo' or give PUB=folder"; exit 2; }
	CPL_PUBLICATION=$(PUB) $(BIN)/mkdocs build --quiet --dirty -d $(abspath $(SITE))
	@echo "Site built in $(SITE); look at it with: make serve SITE=$(SITE) (http://127.0.0.1:8000/)"

serve:
	@test -d $(SITE) || { echo "no site at $(SITE): run 'make demo' or 'make site' first"; exit 2; }
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 --directory $(SITE)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --quiet .github/workflows

typecheck: $(STAMP)
	$(BIN)/mypy publisher verifier

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/log_append.py

clean:
	rm -rf $(VENV) .venv-old-crypto build .mypy_cache .pytest_cache .ruff_cache .hypothesis
