# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
RESULTS ?= results

.PHONY: demo test lint browser bench-ravdess default-model

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

# The RAVDESS speaker-independent benchmark with the committed settings (about 70 min on 2 CPU
# cores; a stopped run resumes where it was when started again).
bench-ravdess: $(BIN)/callmood
	CALLMOOD_SHARED=$(SHARED) $(BIN)/python benchmarks/bench_ravdess.py

# Retrains the bundled model's recipe into runs/default_model and scores the candidate on the
# fold-1 test actors and on sample_calls/ (runs/default_model_eval; ~60 min on 2 CPU cores;
# a stopped run continues with `.venv/bin/callmood train --resume runs/default_model`).
# Replacing callmood/default_model (and its scores in benchmarks/results) is left to a person
# who has compared both: studio accuracy and the calls can disagree.
default-model: $(BIN)/callmood
	$(BIN)/callmood train --corpus ravdess=$(SHARED)/data/ravdess --corpus emodb=$(SHARED)/data/emodb \
	  --fold 1 --labels calls --shared $(SHARED) --init $(SHARED)/weights/deit-tiny-in1k \
	  --params benchmarks/default_model_params.json --precision bf16 --out runs/default_model
	$(BIN)/callmood evaluate --model runs/default_model --corpus ravdess=$(SHARED)/data/ravdess \
	  --fold 1 --labels calls --shared $(SHARED) --out runs/default_model_eval/fold1
	$(BIN)/python benchmarks/eval_sample_calls.py --model runs/default_model \
	  --out runs/default_model_eval

lint: $(BIN)/callmood
	$(BIN)/ruff check .

test: $(BIN)/callmood browser lint
	CALLMOOD_SHARED=$(SHARED) $(BIN)/pytest
