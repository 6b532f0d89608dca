# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
RESULTS ?= results

.PHONY: demo test lint browser bench-ravdess

$(BIN)/callmood: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the pinned CPU build; letting pip choose would pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Debian's chromium + chromedriver for the end-to-end dashboard test.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: $(BIN)/callmood
	$(BIN)/callmood score sample_calls --out $(RESULTS)
	$(BIN)/callmood query $(RESULTS) --summary

# The RAVDESS speaker-independent benchmark with the committed settings (about 2 h on 2 CPU
# cores; a stopped run resumes where it was when started again).
bench-ravdess: $(BIN)/callmood
	CALLMOOD_SHARED=$(SHARED) $(BIN)/python benchmarks/bench_ravdess.py

lint: $(BIN)/callmood
	$(BIN)/ruff check .

test: $(BIN)/callmood browser lint
	CALLMOOD_SHARED=$(SHARED) $(BIN)/pytest
