#!/usr/bin/env bash
# The main job's benchmark: `make run` (the default recipe) wall time from the extracted archive,
# the main model on 3 seeds, and the movie-grouped val split against the old review-id split on
# the same configurations (the main model, Word2Vec alone, the previous 20k default, the n-gram
# teacher). Nothing here reads a test split; finished steps and runs are reused.
#   bash bench/main_job.sh      (~45 min on 2 cores alone; table in bench/results/main_job.tsv)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results; mkdir -p "$OUT"; TSV=$OUT/main_job.tsv; LOG=$TSV.log
printf 'split\tconfiguration\tseed\tval_accuracy\tval_auc\tval_loss\tbest_epoch\tepochs\ts_per_epoch\twall_s\n' > "$TSV"

row() {  # split configuration seed run_dir wall_s
  python3 - "$@" >> "$TSV" <<'PY'
import json, sys
split, cfg, seed, run, wall = sys.argv[1:]
m = json.load(open(f"{run}/metrics.json"))
print("\t".join(str(x) for x in (split, cfg, seed, m["val_accuracy"], m["val_auc"], m["val_loss"],
                                  m["best_epoch"], m["epochs"], m["seconds_per_epoch"], wall)))
PY
}
newest() { ls -td "$1"/default-student-* | head -1; }
complete() { grep -qs '"status": "complete"' "$1/run.json"; }
timed() { local t0=$SECONDS; "$@" >> "$LOG" 2>&1; echo $((SECONDS - t0)); }

for split in title review_id; do
  W=data/bench_$split/work; R=data/bench_$split/runs; S=$W/recipes/default
  common=(WORK=$W RUNS_DIR=$R)
  seeds=42; [ $split = title ] && seeds="42 7 123"
  for seed in $seeds; do
    t=$(timed make run "${common[@]}" SET="ingest.val_group=$split train.seed=$seed")
    row $split main-distilled $seed "$(newest $R)" $t   # seed 42: the whole recipe; the others: student + evaluation
  done
  for cfg in word2vec-30k default-20k-random; do
    run=$R/$cfg-s42
    if ! complete $run; then
      rm -rf $run
      if [ $cfg = word2vec-30k ]; then
        t=$(timed make train "${common[@]}" VOCAB_OUT=$S/prepare/vocab SHARDS_OUT=$S/prepare/shards RUN_ID=$cfg-s42 \
              SET="model.embedding_init=word2vec:$S/word2vec train.epochs=4 train.early_stopping_patience=1")
      else  # the previous default: 20k train-only vocabulary, random init, the default preset's 6 epochs / patience 2
        timed make prepare "${common[@]}" INGEST_OUT=$S/ingest VOCAB_OUT=$W/vocab20k SHARDS_OUT=$W/shards20k \
              SET="vocab.splits=train vocab.num_words=20000" > /dev/null
        t=$(timed make train "${common[@]}" VOCAB_OUT=$W/vocab20k SHARDS_OUT=$W/shards20k RUN_ID=$cfg-s42)
      fi
    fi
    row $split $cfg 42 $run "${t:-reused}"; unset t
  done
  python3 - $split $S/ngram >> "$TSV" <<'PY'
import json, sys
split, d = sys.argv[1:]
m = json.load(open(f"{d}/ngram.json"))
v = m["metrics"]
print("\t".join(str(x) for x in (split, "ngram-nbsvm", "-", v["val_accuracy"], v["val_auc"], v["val_loss"],
                                  "-", "-", "-", m["seconds"])))
PY
done
cat "$TSV"
