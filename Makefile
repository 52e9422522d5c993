# reviewpipe: every target depends on setup, so each works on a fresh clone.
# Paths and the Spark master are overridable:  make ingest DATA_DIR=/big/disk MASTER=spark://host:7077

SHELL        := /bin/bash
.SHELLFLAGS  := -eu -o pipefail -c
PYTHON_BOOT  ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
STAMP        := $(VENV)/.setup-stamp
CONF         ?= conf/pipeline.toml
MASTER       ?= local[*]
DATA_DIR     ?= data
WORK         ?= $(DATA_DIR)/work
INGEST_OUT   ?= $(WORK)/ingest
VOCAB_OUT    ?= $(WORK)/vocab
SHARDS_OUT   ?= $(WORK)/shards
RUNS_DIR     ?= artifacts/runs
REPORT_DIR   ?= artifacts/compare
RUN_ID       ?=
INPUT        ?=
SET          ?=
ZIP          := dist/reviewpipe.zip
PYTEST_ARGS  ?=

# Jobs run through spark-submit with the package shipped as --py-files; executors use the
# venv's interpreter (PYSPARK_PYTHON), so pandas/pyarrow are importable there.
export PYSPARK_PYTHON        := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
SUBMIT   = $(VENV)/bin/spark-submit --master '$(MASTER)' --py-files $(ZIP) \
           --driver-java-options "-Dlog4j2.configurationFile=$(abspath conf/log4j2.properties)"
JOBARGS  = --conf $(CONF) $(foreach s,$(SET),--set $(s))
DATAARGS = --set data.raw_dir=$(DATA_DIR)/raw --set data.extract_dir=$(DATA_DIR)/extracted

.PHONY: help setup java-check data ingest vocab encode train resume compare explain run test test-slow bench package clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install pinned dependencies (checks Java 17+)

java-check:
	@command -v java >/dev/null 2>&1 || { echo "error: Java 17+ is required by PySpark 4 and was not found. Install it: 'sudo apt-get install -y openjdk-17-jre-headless' (Debian/Ubuntu), 'brew install openjdk@17' (macOS), then make sure 'java' is on PATH or JAVA_HOME is set." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -nE '1s/.*version "([0-9]+)(\.[0-9]+)?.*/\1/p'); \
	 if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "error: Java $$v found, PySpark 4 needs 17+. Install openjdk-17 ('sudo apt-get install -y openjdk-17-jre-headless') and put it first on PATH." >&2; exit 1; fi

$(STAMP): pyproject.toml | java-check
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,package]"
	$(PY) -c "import pyspark, tensorflow, pyarrow, pandas, numpy; print('setup ok: pyspark', pyspark.__version__, '| tensorflow', tensorflow.__version__, '| pandas', pandas.__version__)"
	touch $@

$(ZIP): $(STAMP) $(shell find lib -name '*.py' 2>/dev/null)
	@mkdir -p dist
	@$(PY) -c "import pathlib, zipfile; z = zipfile.ZipFile('$@', 'w', zipfile.ZIP_DEFLATED); [z.write(p, p.relative_to('lib')) for p in sorted(pathlib.Path('lib/reviewpipe').rglob('*.py'))]; z.close()"
	@echo "built $@"

package: $(ZIP) ## build dist/reviewpipe.zip for spark-submit --py-files

data: $(STAMP) ## find, verify and extract the aclImdb archive (IMDB_ARCHIVE=... to give one)
	$(PY) jobs/fetch_data.py $(JOBARGS) $(DATAARGS) $(if $(IMDB_ARCHIVE),--archive $(IMDB_ARCHIVE))

ingest: $(STAMP) $(ZIP) ## Spark ingest: INPUT (default: the extracted aclImdb) -> $(INGEST_OUT)
	$(eval IN := $(or $(INPUT),$(shell $(PY) jobs/fetch_data.py $(JOBARGS) $(DATAARGS) --print-root $(if $(IMDB_ARCHIVE),--archive $(IMDB_ARCHIVE)))))
	$(SUBMIT) jobs/ingest.py --input '$(IN)' --output $(INGEST_OUT) $(JOBARGS) $(DATAARGS)

vocab: $(STAMP) $(ZIP) ## Spark vocabulary over vocab.splits of $(INGEST_OUT)/reviews -> $(VOCAB_OUT)
	$(SUBMIT) jobs/build_vocab.py --reviews $(INGEST_OUT)/reviews --output $(VOCAB_OUT) $(JOBARGS)

encode: $(STAMP) $(ZIP) ## Spark encode of every split -> $(SHARDS_OUT) (Parquet shards + _manifest.json)
	$(SUBMIT) jobs/encode.py --reviews $(INGEST_OUT)/reviews --vocab $(VOCAB_OUT) --output $(SHARDS_OUT) $(JOBARGS)

train: $(STAMP) ## train Embedding->LSTM/GRU on $(SHARDS_OUT) into $(RUNS_DIR)/<run_id> (SET="model.cell=gru ...")
	$(PY) jobs/train.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --output $(RUNS_DIR) $(if $(RUN_ID),--run-id $(RUN_ID)) $(JOBARGS)

resume: $(STAMP) ## continue the latest unfinished run (or RUN_ID=...) from its last checkpoint
	$(PY) jobs/train.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --output $(RUNS_DIR) --resume $(if $(RUN_ID),--run-id $(RUN_ID)) $(JOBARGS)

compare: $(STAMP) ## train GRU and LSTM with the same settings; curves side by side + table in $(REPORT_DIR)
	$(PY) jobs/compare.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --output $(RUNS_DIR) --report $(REPORT_DIR) $(JOBARGS)

TEXT ?= Yours and mine ancestors had run after a mastodons or wild boar, like an olympic sprinter, with a spear in hand covering themselves with leaves and tiger skin, for their breakfast
explain: $(STAMP) ## the seed's walk-through for TEXT="..." (uses $(VOCAB_OUT) when it exists)
	$(PY) jobs/explain.py --text "$(TEXT)" --vocab $(VOCAB_OUT) $(JOBARGS)

run: ## the main job, end to end on local[*] and the default dataset: data -> ingest -> vocab -> encode
	$(MAKE) --no-print-directory ingest
	$(MAKE) --no-print-directory vocab
	$(MAKE) --no-print-directory encode
	@$(PY) -c "import json; m = json.load(open('$(SHARDS_OUT)/_manifest.json')); i = json.load(open('$(INGEST_OUT)/ingest_summary.json')); v = json.load(open('$(VOCAB_OUT)/vocab_summary.json')); print('main job done'); print('  reviews   $(INGEST_OUT)/reviews', i['written_by_split'], 'quarantined', i['rows_quarantined']); print('  vocab     $(VOCAB_OUT)', v['vocabulary_after_cut'], 'words of', v['vocabulary_before_cut'], 'coverage', v['token_coverage'], 'val OOV', v['val_oov_rate']); print('  shards    $(SHARDS_OUT)', {s: d['rows'] for s, d in m['splits'].items()}, 'maxlen', m['maxlen'], 'fingerprint', m['vocab_fingerprint'][:12])"

test: $(STAMP) ## unit + integration tests (real data from ../shared when present)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## the slow marked tests (full-corpus parity)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: $(STAMP) ## benchmarks (ingest; vocab+encode at 25k/75k/300k); results in bench/results/*.json
	$(PY) bench/bench_ingest.py --conf $(CONF)
	@test -f $(INGEST_OUT)/ingest_summary.json || $(MAKE) --no-print-directory ingest
	$(PY) bench/bench_vocab_encode.py --reviews $(INGEST_OUT)/reviews

clean: ## remove build outputs and pipeline data (not the venv)
	rm -rf dist build $(WORK) artifacts bench/results spark-warehouse .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
