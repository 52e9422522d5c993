# reviewpipe: every target depends on setup, so each works on a fresh clone.
# Paths and the Spark master are overridable:  make ingest DATA_DIR=/big/disk MASTER=spark://host:7077

SHELL        := /bin/bash
.SHELLFLAGS  := -eu -o pipefail -c
PYTHON_BOOT  ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
INSTALL_STAMP := $(VENV)/.setup-stamp
STAMP        := $(VENV)/.pypath-stamp
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
MODEL        ?=
SCORES_OUT   ?= $(WORK)/scores
EVAL_OUT     ?= $(WORK)/evaluations
W2V_OUT      ?= $(WORK)/word2vec
LM_OUT       ?= $(WORK)/lm
PSEUDO_OUT   ?= $(WORK)/shards_pseudo
NGRAM_OUT    ?= $(WORK)/ngram
RUN_DATE     ?= $(shell date -u +%F)
INCOMING     ?= $(DATA_DIR)/incoming
CLUSTER_DIR  ?= .cluster
WORKER_CORES ?= 1
WORKER_MEM   ?= 3g
INPUT        ?=
SET          ?=
ZIP          := dist/reviewpipe.zip
PYTEST_ARGS  ?=

# Jobs run through spark-submit with the package shipped as --py-files; executors use the
# venv's interpreter (PYSPARK_PYTHON), so pandas/pyarrow are importable there.  The
# properties file goes to spark-submit itself: settings read when the driver JVM starts
# (spark.driver.memory) cannot be set later from the job's SparkSession builder.
SPARK_DEFAULTS ?= conf/spark-defaults.conf
export PYSPARK_PYTHON        := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
# The driver JVM maps the class-data archive that setup builds (reviewpipe.jvm_cds), if any.
# JAVA_OPTS adds driver JVM options.  The scoring targets add SCORE_JAVA_OPTS: their JVM work
# is short glue around the Python workers, and with C1 alone the JIT costs less CPU than C2
# gives back (a 25,000-row job ~7 s faster on 2 cores, docs/results.md); SCORE_JAVA_OPTS= undoes it.
JAVA_OPTS       ?=
SCORE_JAVA_OPTS ?= -XX:TieredStopAtLevel=1
SUBMIT   = $(VENV)/bin/spark-submit --master '$(MASTER)' --properties-file $(SPARK_DEFAULTS) --py-files $(ZIP) \
           --driver-java-options "-Dlog4j2.configurationFile=$(abspath conf/log4j2.properties) $$($(PY) -m reviewpipe.jvm_cds options) $(JAVA_OPTS)"
JOBARGS  = --conf $(CONF) $(foreach s,$(SET),--set $(s))
DATAARGS = --set data.raw_dir=$(DATA_DIR)/raw --set data.extract_dir=$(DATA_DIR)/extracted

.PHONY: help setup java-check data ingest vocab encode prepare train resume compare score score-pending evaluate neighbors analogy pretrain pretrain-lm train-ngram pseudo-label pipeline cluster-up cluster-down explain run test test-slow bench bench-accuracy package package-env clean tensorboard recipe recipe-status gpu-check

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install pinned dependencies (checks Java 17+)

java-check:
	@command -v java >/dev/null 2>&1 || { echo "error: Java 17+ is required by PySpark 4 and was not found. Install it: 'sudo apt-get install -y openjdk-17-jre-headless' (Debian/Ubuntu), 'brew install openjdk@17' (macOS), then make sure 'java' is on PATH or JAVA_HOME is set." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -nE '1s/.*version "([0-9]+)(\.[0-9]+)?.*/\1/p'); \
	 if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "error: Java $$v found, PySpark 4 needs 17+. Install openjdk-17 ('sudo apt-get install -y openjdk-17-jre-headless') and put it first on PATH." >&2; exit 1; fi

$(INSTALL_STAMP): pyproject.toml | java-check
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,package]"
	$(PY) -c "from reviewpipe import native_logs; native_logs.install(); import pyspark, tensorflow, pyarrow, pandas, numpy; print('setup ok: pyspark', pyspark.__version__, '| tensorflow', tensorflow.__version__, '| pandas', pandas.__version__)"
	touch $@

# The driver JVM's class archive (reviewpipe.jvm_cds), built again when the run that loads its
# classes changes.
CDS_ARCHIVE := $(VENV)/spark-cds.jsa
$(CDS_ARCHIVE): $(INSTALL_STAMP) lib/reviewpipe/cds_workload.py lib/reviewpipe/jvm_cds.py
	$(PY) -m reviewpipe.jvm_cds build

# The venv's Python imports the installed, byte-compiled PySpark instead of the source zips
# that spark-submit and Spark's workers put first on PYTHONPATH (reviewpipe.pypath).
$(STAMP): $(INSTALL_STAMP) $(CDS_ARCHIVE) lib/reviewpipe/pypath.py
	$(PY) -m reviewpipe.pypath install
	$(PY) -m reviewpipe.pypath check
	touch $@

$(ZIP): $(STAMP) $(shell find lib -name '*.py' 2>/dev/null)
	@mkdir -p dist
	@$(PY) -m reviewpipe.pypath zip $@ lib

package: $(ZIP) ## build dist/reviewpipe.zip for spark-submit --py-files

package-env: $(STAMP) ## also pack .venv into dist/reviewpipe-env.tar.gz for spark-submit --archives (YARN, Kubernetes)
	@mkdir -p dist
	$(PY) -c "import venv_pack, venv_pack.core as c; c.check_no_editable_packages = lambda ctx: None; venv_pack.pack(prefix='$(VENV)', output='dist/reviewpipe-env.tar.gz', force=True, filters=[('exclude', '*/site-packages/__editable__*'), ('exclude', '*/__pycache__/*'), ('exclude', '*.jsa')])"
	@echo "built dist/reviewpipe-env.tar.gz (the code itself ships as $(ZIP) through --py-files)"

data: $(STAMP) ## find, verify and extract the aclImdb archive (IMDB_ARCHIVE=... to give one)
	$(PY) jobs/fetch_data.py $(JOBARGS) $(DATAARGS) $(if $(IMDB_ARCHIVE),--archive $(IMDB_ARCHIVE))

ingest: $(STAMP) $(ZIP) ## Spark ingest: INPUT (default: the extracted aclImdb) -> $(INGEST_OUT)
	$(eval IN := $(or $(INPUT),$(shell $(PY) jobs/fetch_data.py $(JOBARGS) $(DATAARGS) --print-root $(if $(IMDB_ARCHIVE),--archive $(IMDB_ARCHIVE)))))
	$(SUBMIT) jobs/ingest.py --input '$(IN)' --output $(INGEST_OUT) $(JOBARGS) $(DATAARGS)

vocab: $(STAMP) $(ZIP) ## Spark vocabulary over vocab.splits of $(INGEST_OUT)/reviews -> $(VOCAB_OUT)
	$(SUBMIT) jobs/build_vocab.py --reviews $(INGEST_OUT)/reviews --output $(VOCAB_OUT) $(JOBARGS)

encode: $(STAMP) $(ZIP) ## Spark encode of every split -> $(SHARDS_OUT) (Parquet shards + _manifest.json)
	$(SUBMIT) jobs/encode.py --reviews $(INGEST_OUT)/reviews --vocab $(VOCAB_OUT) --output $(SHARDS_OUT) $(JOBARGS)

prepare: $(STAMP) $(ZIP) ## vocab + encode from one tokenization of the text (same artifacts as `make vocab encode`, faster)
	$(SUBMIT) jobs/prepare.py --reviews $(INGEST_OUT)/reviews --vocab $(VOCAB_OUT) --shards $(SHARDS_OUT) $(JOBARGS)

pretrain: $(STAMP) $(ZIP) ## Spark Word2Vec over word2vec.splits -> $(W2V_OUT); then SET="model.embedding_init=word2vec:$(W2V_OUT)"
	$(SUBMIT) jobs/pretrain_word2vec.py --reviews $(INGEST_OUT)/reviews --vocab $(VOCAB_OUT) --output $(W2V_OUT) $(JOBARGS)

pretrain-lm: $(STAMP) ## language model over lm.splits of $(SHARDS_OUT) -> $(LM_OUT); then SET="model.encoder_init=lm:$(LM_OUT)"
	$(PY) jobs/pretrain_lm.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --output $(LM_OUT) $(JOBARGS)

train-ngram: $(STAMP) ## n-gram teacher (NB-weighted logistic regression) on $(INGEST_OUT)/reviews -> $(NGRAM_OUT); add it to MODEL for pseudo-label
	$(PY) jobs/train_ngram.py --reviews $(INGEST_OUT)/reviews --output $(NGRAM_OUT) $(JOBARGS)

pseudo-label: $(STAMP) ## label unsup rows of $(SHARDS_OUT) with MODEL (default: newest run; several: their mean) -> $(PSEUDO_OUT) with split pseudo
	$(PY) jobs/pseudo_label.py $(foreach r,$(LATEST_RUN),--run '$(r)') --shards $(SHARDS_OUT) --output $(PSEUDO_OUT) $(JOBARGS)

# WORKERS=N trains with N TensorFlow workers as one Spark barrier stage on MASTER
# (spark-submit); without it the trainer runs in this process, without Spark.
WORKERS ?=
TRAINER  = $(if $(WORKERS),$(SUBMIT) jobs/train.py --workers $(WORKERS),$(PY) jobs/train.py)

train: $(STAMP) $(if $(WORKERS),$(ZIP)) ## train Embedding->LSTM/GRU on $(SHARDS_OUT) into $(RUNS_DIR)/<run_id> (SET="model.cell=gru ..."; WORKERS=N MASTER=spark://... on a cluster)
	$(TRAINER) --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --output $(RUNS_DIR) $(if $(RUN_ID),--run-id $(RUN_ID)) $(JOBARGS)

resume: $(STAMP) $(if $(WORKERS),$(ZIP)) ## continue the latest unfinished run (or RUN_ID=...) from its last checkpoint (WORKERS=N as it trained)
	$(TRAINER) --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --output $(RUNS_DIR) --resume $(if $(RUN_ID),--run-id $(RUN_ID)) $(JOBARGS)

compare: $(STAMP) ## train GRU and LSTM with the same settings; curves side by side + table in $(REPORT_DIR)
	$(PY) jobs/compare.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --output $(RUNS_DIR) --report $(REPORT_DIR) $(JOBARGS)

# The newest complete run unless MODEL=artifacts/runs/<run_id> is given.
LATEST_RUN = $(or $(MODEL),$(shell $(PY) -c "import sys; sys.path.insert(0, 'lib'); from reviewpipe.train import latest_complete; print(latest_complete('$(RUNS_DIR)') or '')" 2>/dev/null))
SCOREARGS  = --model '$(LATEST_RUN)' $(JOBARGS)

SPLITS ?=
score score-pending evaluate: JAVA_OPTS += $(SCORE_JAVA_OPTS)
score: $(STAMP) $(ZIP) ## score INPUT (any ingest format or a reviews table) with MODEL (default: newest run) for RUN_DATE
	@test -n "$(INPUT)" || { echo "error: give INPUT=path (aclImdb dir/tarball, CSV, JSONL, Parquet or a reviews table)" >&2; exit 2; }
	$(SUBMIT) jobs/score.py --input '$(INPUT)' $(if $(SPLITS),--splits $(SPLITS)) --run-date $(RUN_DATE) --output $(SCORES_OUT) $(SCOREARGS)

RESCORE ?=
score-pending: $(STAMP) $(ZIP) ## score every $(INCOMING)/date=YYYY-MM-DD not yet scored into $(SCORES_OUT), oldest first (RESCORE=1: also dates whose files changed)
	$(SUBMIT) jobs/score.py --pending --input $(INCOMING) --output $(SCORES_OUT) $(if $(RESCORE),--rescore-changed) $(SCOREARGS)

COMMA := ,
evaluate: $(STAMP) $(ZIP) ## score labelled INPUT (default: the val split; SPLITS=test for aclImdb's test) into $(EVAL_OUT) and print accuracy, ROC AUC, P/R/F1, confusion matrix
	$(SUBMIT) jobs/score.py --input '$(or $(INPUT),$(INGEST_OUT)/reviews)' --splits $(or $(SPLITS),$(if $(INPUT),train,val)$(if $(INPUT),$(COMMA)val$(COMMA)test)) --run-date $(RUN_DATE) --output $(EVAL_OUT) $(SCOREARGS)
	@$(PY) -c "import json; m = json.load(open('$(EVAL_OUT)/_reports/run_date=$(RUN_DATE)/metrics.json')); c = m['confusion_matrix']['matrix']; print(f\"accuracy {m['accuracy']}  roc_auc {m['roc_auc']}  precision {m['precision']}  recall {m['recall']}  f1 {m['f1']}  rows {m['rows']}\"); print(f'confusion (rows true 0/1, columns predicted 0/1): {c[0]} {c[1]}')"

cluster-up: $(STAMP) ## start a Spark standalone master + 2 workers on 127.0.0.1 (PIDs in $(CLUSTER_DIR)/)
	@mkdir -p $(CLUSTER_DIR)/logs
	@for p in $(CLUSTER_DIR)/*.pid; do [ -f "$$p" ] && kill -0 $$(cat $$p) 2>/dev/null && { echo "error: cluster already running ($$p); make cluster-down first" >&2; exit 1; }; done; true
	SPARK_HOME=$$($(PY) -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))'); \
	nohup $$SPARK_HOME/bin/spark-class org.apache.spark.deploy.master.Master --host 127.0.0.1 --port 7077 --webui-port 8080 \
	  > $(CLUSTER_DIR)/logs/master.log 2>&1 & echo $$! > $(CLUSTER_DIR)/master.pid; \
	for i in 1 2; do \
	  nohup $$SPARK_HOME/bin/spark-class org.apache.spark.deploy.worker.Worker spark://127.0.0.1:7077 --host 127.0.0.1 \
	    --cores $(WORKER_CORES) --memory $(WORKER_MEM) --webui-port $$((8080 + i)) --work-dir $(abspath $(CLUSTER_DIR))/work$$i \
	    > $(CLUSTER_DIR)/logs/worker$$i.log 2>&1 & echo $$! > $(CLUSTER_DIR)/worker$$i.pid; \
	done
	@for i in $$(seq 60); do n=$$(grep -c "Registering worker" $(CLUSTER_DIR)/logs/master.log 2>/dev/null || true); [ "$${n:-0}" -ge 2 ] && break; sleep 1; done; \
	 n=$$(grep -c "Registering worker" $(CLUSTER_DIR)/logs/master.log 2>/dev/null || true); \
	 if [ "$${n:-0}" -lt 2 ]; then echo "error: workers did not register in 60 s; see $(CLUSTER_DIR)/logs" >&2; $(MAKE) --no-print-directory cluster-down; exit 1; fi
	@echo "cluster up: spark://127.0.0.1:7077 (UI http://127.0.0.1:8080), 2 workers x $(WORKER_CORES) core(s); PIDs in $(CLUSTER_DIR)/*.pid"

cluster-down: ## stop only the master and workers that cluster-up started
	@for p in $(CLUSTER_DIR)/worker*.pid $(CLUSTER_DIR)/master.pid; do \
	  [ -f "$$p" ] || continue; pid=$$(cat $$p); \
	  if kill -0 $$pid 2>/dev/null; then kill $$pid; for i in $$(seq 20); do kill -0 $$pid 2>/dev/null || break; sleep 0.5; done; \
	    kill -0 $$pid 2>/dev/null && kill -9 $$pid; echo "stopped $$(basename $$p .pid) ($$pid)"; fi; rm -f $$p; \
	done

pipeline: ## ingest -> prepare (vocab + encode) -> score (val) through spark-submit on MASTER (e.g. spark://127.0.0.1:7077)
	$(MAKE) --no-print-directory ingest prepare
	@test -n "$(LATEST_RUN)" || $(MAKE) --no-print-directory train
	$(MAKE) --no-print-directory evaluate

CPU_RUN ?=
gpu-check: $(STAMP) ## on a GPU machine: cuDNN kernels, mixed precision, train + score speed, val vs CPU_RUN; JSON in bench/results/; fails without a GPU
	$(PY) jobs/gpu_check.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --reviews $(INGEST_OUT)/reviews --runs $(RUNS_DIR) \
	  $(if $(CPU_RUN),--cpu-run $(CPU_RUN)) --output bench/results/gpu_check.json $(JOBARGS)

TB_PORT ?= 6006
tensorboard: $(STAMP) ## serve TensorBoard over $(RUNS_DIR): per-epoch curves, learning rate, embedding projector (TB_PORT=6006)
	$(VENV)/bin/tensorboard --logdir $(RUNS_DIR) --host 127.0.0.1 --port $(TB_PORT)

EMBARGS = $(if $(RUN),--run $(RUN),$(if $(VECTORS),--vectors $(VECTORS),--runs $(RUNS_DIR)))
K ?= 10
neighbors: $(STAMP) ## nearest words by cosine: WORD=great [K=10] [RUN=artifacts/runs/<id> | VECTORS=path]
	@test -n "$(WORD)" || { echo "error: give WORD=..." >&2; exit 2; }
	@$(PY) jobs/embeddings.py $(EMBARGS) neighbors '$(WORD)' -k $(K)

analogy: $(STAMP) ## A is to B as C is to ?  (B - A + C): A=man B=king C=woman [RUN=... | VECTORS=...]
	@test -n "$(A)" -a -n "$(B)" -a -n "$(C)" || { echo "error: give A=... B=... C=..." >&2; exit 2; }
	@$(PY) jobs/embeddings.py $(EMBARGS) analogy '$(A)' '$(B)' '$(C)' -k 5

TEXT ?= Yours and mine ancestors had run after a mastodons or wild boar, like an olympic sprinter, with a spear in hand covering themselves with leaves and tiger skin, for their breakfast
explain: $(STAMP) ## the seed's walk-through for TEXT="..." (uses $(VOCAB_OUT) when it exists)
	$(PY) jobs/explain.py --text "$(TEXT)" --vocab $(VOCAB_OUT) $(JOBARGS)

run: ## the main job on local[*] and the default dataset: the default recipe (conf/recipes/default.toml), raw data -> scored, evaluated run
	$(MAKE) --no-print-directory recipe RECIPE=default

RECIPE    ?= default
FORCE     ?=
RECIPEARGS = --recipe $(RECIPE) --work $(WORK) --runs $(RUNS_DIR) $(if $(INPUT),--input '$(INPUT)') $(JOBARGS) \
             --make MASTER='$(MASTER)' --make DATA_DIR=$(DATA_DIR) --make VENV=$(VENV) $(if $(IMDB_ARCHIVE),--make IMDB_ARCHIVE=$(IMDB_ARCHIVE)) \
             $(foreach f,$(FORCE),--force $(f))
recipe: $(STAMP) $(ZIP) ## run conf/recipes/$(RECIPE).toml from raw data: steps already done with the same inputs and settings are skipped
	$(PY) jobs/recipe.py run $(RECIPEARGS)

recipe-status: $(STAMP) ## which steps of RECIPE are done, stale or missing, with their times
	@$(PY) jobs/recipe.py status $(RECIPEARGS)

test: $(STAMP) ## unit + integration tests (real data from ../shared when present)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## the slow marked tests (full-corpus parity)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# The scoring benchmark's model: the default architecture trained for 30 steps (its speed does
# not depend on the weights); any complete run can stand in: make bench BENCH_MODEL=artifacts/runs/<id>
BENCH_MODEL     ?= $(RUNS_DIR)/bench-default
BENCH_MODEL_SET ?= train.epochs=1 train.steps_per_epoch=30 train.embeddings_export=false
bench: $(STAMP) ## benchmarks (ingest; vocab+encode at 25k/75k/300k; trainer input + memory; 1 vs 2 training workers; scoring against direct predict and the previous code); results in bench/results/*.json
	$(PY) bench/bench_ingest.py --conf $(CONF)
	@test -f $(INGEST_OUT)/ingest_summary.json || $(MAKE) --no-print-directory ingest
	$(PY) bench/bench_vocab_encode.py --reviews $(INGEST_OUT)/reviews
	@test -f $(SHARDS_OUT)/_manifest.json || $(MAKE) --no-print-directory prepare
	$(PY) bench/bench_train.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT)
	$(PY) bench/bench_multiworker.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --conf $(CONF)
	@test -f $(BENCH_MODEL)/run.json || $(MAKE) --no-print-directory train RUN_ID=$(notdir $(BENCH_MODEL)) RUNS_DIR=$(dir $(BENCH_MODEL)) SET="$(BENCH_MODEL_SET)"
	$(PY) bench/bench_score.py --model $(BENCH_MODEL) --evaluate-reviews $(INGEST_OUT)/reviews

bench-accuracy: $(STAMP) ## full CPU trainings: seed preset (anchor), default preset, Word2Vec-initialised best (~45 min)
	@test -f $(W2V_OUT)/word2vec.json || $(MAKE) --no-print-directory pretrain
	$(PY) bench/bench_train.py --shards $(SHARDS_OUT) --vocab $(VOCAB_OUT) --accuracy --best-set model.embedding_init=word2vec:$(W2V_OUT)

print-%: ; @echo '$($*)'

clean: ## remove build outputs and pipeline data (not the venv)
	rm -rf dist build $(WORK) artifacts bench/results spark-warehouse .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
