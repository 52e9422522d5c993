"""The shipped best recipe over a few hundred real aclImdb reviews, through the real Makefile
targets: ingest -> prepare -> Word2Vec -> n-gram teacher -> soft pseudo-labels -> LSTM teacher ->
soft pseudo-labels of both -> adversarial student -> evaluation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reviewpipe import constants as C

pytestmark = [pytest.mark.spark, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["vocab.num_words=2000", "encode.maxlen=120", "encode.rows_per_file=256", "encode.row_group_rows=128",
         "model.units=8", "model.embedding_dim=8", "train.batch_size=32", "train.word_pairs=", "ngram.hash_bits=16",
         "train.epochs=1"]
SMALL += ["word2vec.dim=8", "word2vec.min_count=2"]
# the shipped best recipe itself, on the tiny corpus with the small settings
RECIPE = (ROOT / "conf" / "recipes" / "best.toml").read_text().replace(
    'name = "best"', f'name = "tiny-best"\nset = {json.dumps(SMALL)}', 1).replace(
    '"pseudo.max_rows=20000"', '"pseudo.max_rows=60"').replace('"encode.maxlen=800"', '"encode.maxlen=160"')
STEPS = ["ingest", "prepare", "word2vec", "ngram", "pseudo_ngram", "lstm", "soft", "student", "evaluate"]


def small_aclimdb(src: Path, dst: Path, per_class: int = 150) -> Path:
    """The first ``per_class`` reviews of pos, neg and unsup, with the real urls files."""
    for cls in ("pos", "neg", "unsup"):
        (dst / "train" / cls).mkdir(parents=True)
        files = sorted((src / "train" / cls).iterdir(), key=lambda p: int(p.name.split("_")[0]))[:per_class]
        for f in files:
            shutil.copy(f, dst / "train" / cls / f.name)
        shutil.copy(src / "train" / f"urls_{cls}.txt", dst / "train" / f"urls_{cls}.txt")
    return dst


def make_recipe(tmp: Path, recipe: Path, *extra: str) -> tuple[str, list[str]]:
    cmd = ["make", "--no-print-directory", "recipe", f"RECIPE={recipe}", f"INPUT={tmp / 'aclImdb'}",
           f"WORK={tmp / 'work'}", f"RUNS_DIR={tmp / 'runs'}", "MASTER=local[2]", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = [ln.split("] ", 1)[1].split(":")[0] for ln in proc.stdout.splitlines()
             if ln.startswith("[") and ": ran in " in ln]
    return proc.stdout, steps


def test_the_best_recipe_runs_skips_reruns_and_records_lineage(extracted_aclimdb, tmp_path):
    small_aclimdb(extracted_aclimdb, tmp_path / "aclImdb")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    work = tmp_path / "work" / "recipes" / "tiny-best"

    out, ran = make_recipe(tmp_path, recipe)
    assert ran == STEPS
    assert "main job done" in out and "(val by title)" in out
    runs = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "runs").iterdir())
    assert runs == ["tiny-best-lstm", "tiny-best-student"]
    student = next((tmp_path / "runs").glob("tiny-best-student-*"))
    meta = json.loads((student / C.RUN_META).read_text())
    assert meta["status"] == "complete"
    lineage = meta["lineage"]
    ngram_acc = json.loads((work / "ngram" / C.NGRAM_META).read_text())["metrics"]["val_accuracy"]
    lstm = next((tmp_path / "runs").glob("tiny-best-lstm-*"))
    lstm_acc = json.loads((lstm / C.RUN_METRICS).read_text())["val_accuracy"]
    assert lineage["teachers"] == [  # the n-gram teacher of both pseudo steps is listed once
        {"step": "ngram", "kind": "ngram", "path": str(work / "ngram"), "val_accuracy": ngram_acc},
        {"step": "lstm", "kind": "keras", "run_id": lstm.name, "path": str(lstm), "val_accuracy": lstm_acc}]
    assert sorted(lineage["steps"]) == sorted(STEPS[:7])
    vocab = json.loads((work / "prepare/vocab" / C.VOCAB_SPEC).read_text())
    assert lineage["vocab_fingerprint"] == vocab["fingerprint"]
    assert json.loads((student / C.RUN_METRICS).read_text())["adversarial"] == {"mode": "at", "epsilon": 0.02}
    assert json.loads((lstm / C.RUN_METRICS).read_text())["adversarial"] is None
    for run in (lstm, student):  # the recipe's long shards, read in length-sorted batches
        assert json.loads((run / C.RUN_METRICS).read_text())["length_step"] == 32
        assert json.loads((run / C.RUN_META).read_text())["maxlen"] == 160
    assert json.loads((work / "pseudo_ngram" / C.MANIFEST).read_text())["splits"][C.PSEUDO]["rows"] == 60
    soft = json.loads((work / "soft" / C.MANIFEST).read_text())
    assert soft["pseudo_label"]["rows_in"] == 150  # every unsup row is labelled, as many of each label kept
    assert soft["splits"][C.PSEUDO]["rows"] == 2 * soft["pseudo_label"]["positive"] > 60
    reports = list((work / "evaluate" / C.SCORES_REPORTS).glob("*/" + C.SCORE_METRICS))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["rows"] == meta_rows(tmp_path)

    out, ran = make_recipe(tmp_path, recipe)  # everything is done: nothing runs
    assert ran == [] and f"0 of {len(STEPS)} steps ran" in out
    # (a changed setting reruns its step and what reads it: tests/test_recipe.py, on stand-in steps)


def meta_rows(tmp: Path) -> int:
    summary = json.loads((tmp / "work/recipes/tiny-best/ingest" / C.INGEST_SUMMARY).read_text())
    return summary["written_by_split"]["val"]
