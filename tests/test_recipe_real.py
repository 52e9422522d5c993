"""A tiny recipe over a few hundred real aclImdb reviews, through the real Makefile targets:
ingest -> prepare -> n-gram teacher -> soft pseudo-labels -> student -> evaluation."""

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
RECIPE = f"""
name = "tiny-real"
set = {json.dumps(SMALL)}

[[step]]
name = "ingest"
kind = "ingest"

[[step]]
name = "prepare"
kind = "prepare"
reviews = "ingest"

[[step]]
name = "ngram"
kind = "ngram"
reviews = "ingest"

[[step]]
name = "pseudo"
kind = "pseudo"
shards = "prepare"
teachers = ["ngram"]
set = ["pseudo.threshold=0.5", "pseudo.soft=true", "pseudo.max_rows=60"]

[[step]]
name = "student"
kind = "train"
vocab = "prepare"
shards = "pseudo"
set = ["train.splits=train,pseudo"]

[[step]]
name = "evaluate"
kind = "evaluate"
reviews = "ingest"
model = "student"
"""


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


def test_tiny_recipe_runs_skips_reruns_and_records_lineage(extracted_aclimdb, tmp_path):
    small_aclimdb(extracted_aclimdb, tmp_path / "aclImdb")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)

    out, ran = make_recipe(tmp_path, recipe)
    assert ran == ["ingest", "prepare", "ngram", "pseudo", "student", "evaluate"]
    assert "main job done" in out and "(val by title)" in out
    runs = [p for p in (tmp_path / "runs").iterdir()]
    assert len(runs) == 1 and runs[0].name.startswith("tiny-real-student-")
    meta = json.loads((runs[0] / C.RUN_META).read_text())
    assert meta["status"] == "complete"
    lineage = meta["lineage"]
    ngram_dir = tmp_path / "work" / "recipes" / "tiny-real" / "ngram"
    ngram_acc = json.loads((ngram_dir / C.NGRAM_META).read_text())["metrics"]["val_accuracy"]
    assert lineage["teachers"] == [{"step": "ngram", "kind": "ngram", "path": str(ngram_dir),
                                    "val_accuracy": ngram_acc}]
    assert sorted(lineage["steps"]) == ["ingest", "ngram", "prepare", "pseudo"]
    vocab = json.loads((tmp_path / "work/recipes/tiny-real/prepare/vocab" / C.VOCAB_SPEC).read_text())
    assert lineage["vocab_fingerprint"] == vocab["fingerprint"]
    pseudo = json.loads((tmp_path / "work/recipes/tiny-real/pseudo" / C.MANIFEST).read_text())
    assert pseudo["splits"][C.PSEUDO]["rows"] == 60
    assert (pseudo["pseudo_label"]["rows_in"], pseudo["pseudo_label"]["positive"]) == (150, 30)
    reports = list((tmp_path / "work/recipes/tiny-real/evaluate" / C.SCORES_REPORTS).glob("*/" + C.SCORE_METRICS))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["rows"] == meta_rows(tmp_path)

    out, ran = make_recipe(tmp_path, recipe)  # everything is done: nothing runs
    assert ran == [] and "0 of 6 steps ran" in out

    out, ran = make_recipe(tmp_path, recipe, "SET=train.seed=7")  # a student setting: student + evaluate
    assert ran == ["student", "evaluate"]
    assert len(list((tmp_path / "runs").iterdir())) == 2


def meta_rows(tmp: Path) -> int:
    summary = json.loads((tmp / "work/recipes/tiny-real/ingest" / C.INGEST_SUMMARY).read_text())
    return summary["written_by_split"]["val"]
