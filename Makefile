# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
RESULTS ?= results
# where pip finds torch's CPU build, if its default index would give a CUDA one
TORCH_INDEX ?=
# test processes (pytest-xdist), one per core; each module's tests stay in one process
# (their module fixtures are built once) and every process computes with one thread
TEST_WORKERS ?= 2

.PHONY: demo test lint browser bench-ravdess default-model ablation-calls

$(BIN)/callmood: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the pinned CPU build; letting pip choose would pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
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

# The RAVDESS speaker-independent benchmark with the committed settings, all five rows (several
# hours on 2 CPU cores: row 1 took 59 min, a row 5 fold 47; finished (fold, row) cells
# are committed and reused, and a stopped run resumes where it was when started again).
bench-ravdess: $(BIN)/callmood
	CALLMOOD_SHARED=$(SHARED) $(BIN)/python benchmarks/bench_ravdess.py

# The bundled model's recipe: all seven corpora, one speaker group per corpus held out for its
# card (RAVDESS fold-1 actors, since sample_calls/ is made of them). Trains into
# runs/default_model, fits the candidate's own call analytics on the call benchmark's dev
# split (into its folder's call_analytics.json), and scores it per held-out corpus, on
# sample_calls/ and on the test split beside the bundled model, with issue 23's adoption
# rule against LOCO (runs/default_model_eval/adoption.md); the calls come from
# `make ablation-calls`. A stopped training continues with
# `.venv/bin/callmood train --resume runs/default_model`. Replacing callmood/default_model
# (and its scores in benchmarks/results) is left to a person who has compared both.
# Another recipe: `make default-model PARAMS=my_params.json CANDIDATE=runs/v5`.
PARAMS ?= benchmarks/default_model_params.json
# v4 trained in bf16; on a CPU without bf16 in hardware (no AVX512-BF16 or AMX) bf16 is
# emulated and 18 times slower (benchmarks/results/train_step.json): `make default-model PRECISION=fp32` there
PRECISION ?= bf16
CANDIDATE ?= runs/default_model
CALLS ?= runs/callbench
# the recipe's leave-one-corpus-out row (benchmarks/bench_transfer.py), table:row
LOCO ?= benchmarks/results/transfer_12_epochs/transfer.json:c
empty :=
space := $(empty) $(empty)
CORPORA_ALL := ravdess emodb ased nemo kored emovo tess
HELD_OUT := ravdess:01,ravdess:11,ravdess:20,ravdess:21,emodb:03,emodb:08,\
  ased:ased_01,ased:ased_02,ased:ased_03,ased:ased_04,ased:ased_05,ased:ased_06,\
  nemo:nemo_EB0,nemo:nemo_KS0,kored:kored_ema,kored:kored_emf,kored:kored_nea,\
  emovo:emovo_f1,emovo:emovo_m1,tess:OAF
default-model: $(BIN)/callmood
	$(BIN)/callmood train $(foreach c,$(CORPORA_ALL),--corpus $(c)=$(SHARED)/data/$(c)) \
	  --test-speakers $(subst $(space),,$(HELD_OUT)) --labels calls --shared $(SHARED) \
	  --init $(SHARED)/weights/deit-tiny-in1k --params $(PARAMS) \
	  --precision $(PRECISION) --out $(CANDIDATE)
	$(BIN)/python benchmarks/eval_calls.py $(CALLS)/dev --model $(CANDIDATE) \
	  --out $(CANDIDATE)_eval/callbench_dev.json --results $(CANDIDATE)_eval/callbench_dev_results
	$(BIN)/python benchmarks/fit_call_analytics.py $(CALLS)/dev --model $(CANDIDATE) \
	  --results $(CANDIDATE)_eval/callbench_dev_results \
	  --out $(CANDIDATE)_eval/call_analytics_fit.json --write-card
	$(BIN)/python benchmarks/eval_default_model.py --model $(CANDIDATE) \
	  --compare bundled=callmood/default_model --shared $(SHARED) --calls $(CALLS)/test \
	  --loco $(LOCO) --out $(CANDIDATE)_eval

# The dev calls every kept ablation cell was scored on (benchmarks/ablate.py,
# CALLS_BEFORE_VERSIONS): the call benchmark as generated before commit 034aff0 moved each
# utterance's start past a click, into runs/callbench (not committed; a few minutes).
ablation-calls: $(BIN)/callmood
	rm -rf runs/callbench_generator && mkdir -p runs/callbench_generator
	cp -r benchmarks/harness.py benchmarks/callbench runs/callbench_generator/
	git show 034aff0^:benchmarks/callbench/generate.py > runs/callbench_generator/callbench/generate.py
	$(BIN)/python runs/callbench_generator/callbench/generate.py --shared $(SHARED) --out runs/callbench

lint: $(BIN)/callmood
	$(BIN)/ruff check .

test: $(BIN)/callmood browser lint
	CALLMOOD_SHARED=$(SHARED) OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope
