"""The recipe runner: checks, hashes, skip / rerun / resume decisions, and lineage.

A fake ``make`` (REVIEWPIPE_MAKE) records each call and writes the outputs a real target
would, so the runner's decisions are tested exactly and fast; tests/test_recipe_real.py runs
a tiny recipe through the real Makefile targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from reviewpipe import constants as C
from reviewpipe.recipe import RecipeError, load_recipe, run_recipe, state, status_lines

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """
name = "tiny"
set = ["vocab.num_words=500"]

[[step]]
name = "ingest"
kind = "ingest"

[[step]]
name = "prepare"
kind = "prepare"
reviews = "ingest"

[[step]]
name = "w2v"
kind = "pretrain"
reviews = "ingest"
vocab = "prepare"

[[step]]
name = "ngram"
kind = "ngram"
reviews = "ingest"

[[step]]
name = "pseudo"
kind = "pseudo"
shards = "prepare"
teachers = ["ngram"]
set = ["pseudo.threshold=0.5"]

[[step]]
name = "student"
kind = "train"
vocab = "prepare"
shards = "pseudo"
init = "w2v"
set = ["train.epochs=2"]

[[step]]
name = "evaluate"
kind = "evaluate"
reviews = "ingest"
model = "student"
"""

FAKE_MAKE = r"""#!{python}
import json, os, sys
from pathlib import Path
target, kv = sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:])
with open(os.environ["FAKE_MAKE_LOG"], "a") as f:
    f.write(json.dumps({{"target": target, **kv}}) + "\n")
outs = {{"ingest": ["INGEST_OUT"], "prepare": ["VOCAB_OUT", "SHARDS_OUT"], "pretrain": ["W2V_OUT"],
         "train-ngram": ["NGRAM_OUT"], "pseudo-label": ["PSEUDO_OUT"], "evaluate": ["EVAL_OUT"]}}
if target in ("train", "resume"):
    run = Path(kv["RUNS_DIR"]) / kv["RUN_ID"]
    run.mkdir(parents=True, exist_ok=True)
    if os.environ.get("FAKE_MAKE_FAIL") == target:  # killed after an epoch: a checkpoint, no finish
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / "state.json").write_text("{{}}")
        (run / "run.json").write_text(json.dumps({{"status": "running", "vocab_fingerprint": "fp"}}))
        sys.exit(2)
    (run / "run.json").write_text(json.dumps({{"status": "complete", "vocab_fingerprint": "fp"}}))
    (run / "metrics.json").write_text(json.dumps({{"val_accuracy": 0.875}}))
    sys.exit(0)
for var in outs[target]:
    Path(kv[var]).mkdir(parents=True, exist_ok=True)
    (Path(kv[var]) / "part").write_text("x")
if target == "train-ngram":
    (Path(kv["NGRAM_OUT"]) / "ngram.json").write_text(json.dumps({{"metrics": {{"val_accuracy": 0.9}}}}))
sys.exit(1 if os.environ.get("FAKE_MAKE_FAIL") == target else 0)
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    make = tmp_path / "fake-make"
    make.write_text(FAKE_MAKE.format(python=sys.executable))
    make.chmod(0o755)
    log = tmp_path / "make.log"
    monkeypatch.setenv("REVIEWPIPE_MAKE", str(make))
    monkeypatch.setenv("FAKE_MAKE_LOG", str(log))
    monkeypatch.chdir(ROOT)  # the conf's relative paths

    def load(*cli_set, text=None):
        if text is not None:
            recipe.write_text(text)
        return load_recipe(recipe, None, list(cli_set), tmp_path / "work", tmp_path / "runs")

    def calls():
        out = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return out

    return load, calls, tmp_path


def test_a_first_run_runs_every_step_with_the_paths_of_the_steps_it_reads(env):
    load, calls, tmp = env
    recipe = load()
    run_recipe(recipe, make_args={"MASTER": "local[2]"})
    made = calls()
    assert [c["target"] for c in made] == ["ingest", "prepare", "pretrain", "train-ngram", "pseudo-label", "train",
                                          "evaluate"]
    w = tmp / "work" / "recipes" / "tiny"
    student = recipe.step("student")
    run_dir = tmp / "runs" / f"tiny-student-{student.hash[:12]}"
    assert made[1] == {"target": "prepare", "INGEST_OUT": str(w / "ingest"), "VOCAB_OUT": str(w / "prepare/vocab"),
                       "SHARDS_OUT": str(w / "prepare/shards"), "SET": "vocab.num_words=500", "MASTER": "local[2]"}
    assert made[4]["MODEL"] == str(w / "ngram") and made[4]["SHARDS_OUT"] == str(w / "prepare/shards")
    assert made[5]["SET"] == f"model.embedding_init=word2vec:{w / 'w2v'} vocab.num_words=500 train.epochs=2"
    assert (made[5]["RUNS_DIR"], made[5]["RUN_ID"], made[5]["SHARDS_OUT"]) == (
        str(tmp / "runs"), run_dir.name, str(w / "pseudo"))
    assert made[6]["MODEL"] == str(run_dir) and made[6]["EVAL_OUT"] == str(w / "evaluate")
    assert all(state(recipe, s) == "done" for s in recipe.steps)
    lineage = json.loads((run_dir / C.RUN_META).read_text())["lineage"]
    assert lineage["recipe"] == "tiny" and lineage["hash"] == student.hash and lineage["vocab_fingerprint"] == "fp"
    assert lineage["steps"] == {s.name: {"kind": s.kind, "hash": s.hash, "output": str(recipe.out(s))}
                                for s in recipe.steps if s.name in ("ingest", "prepare", "w2v", "ngram", "pseudo")}
    assert lineage["teachers"] == [{"step": "ngram", "kind": "ngram", "path": str(w / "ngram"), "val_accuracy": 0.9}]


def test_a_second_run_skips_everything(env):
    load, calls, _ = env
    run_recipe(load())
    calls()
    records = run_recipe(load())
    assert calls() == [] and not any(r["ran"] for r in records)


def test_a_changed_setting_reruns_its_step_and_what_reads_it(env):
    load, calls, _ = env
    before = load()
    run_recipe(before)
    calls()
    after = load("train.seed=7")  # the [train] section: student and evaluate only
    changed = [s.name for s, b in zip(after.steps, before.steps) if s.hash != b.hash]
    assert changed == ["student", "evaluate"]
    assert [state(after, s) for s in after.steps] == ["done"] * 5 + ["stale", "stale"]
    run_recipe(after, ["train.seed=7"])
    assert [c["target"] for c in calls()] == ["train", "evaluate"]
    # the n-gram teacher's setting: the teacher, its pseudo-labels, the student, the evaluation
    text = RECIPE.replace('kind = "ngram"\n', 'kind = "ngram"\nset = ["ngram.c=0.5"]\n')
    changed = [s.name for s, b in zip(load(text=text).steps, before.steps) if s.hash != b.hash]
    assert changed == ["ngram", "pseudo", "student", "evaluate"]


def test_a_step_killed_half_way_is_redone_not_trusted(env, monkeypatch):
    load, calls, tmp = env
    recipe = load()
    monkeypatch.setenv("FAKE_MAKE_FAIL", "train-ngram")  # wrote part of its output, then died
    with pytest.raises(RecipeError, match=r"ngram failed \(make train-ngram exited 1\).*steps before it are kept"):
        run_recipe(recipe)
    assert [c["target"] for c in calls()] == ["ingest", "prepare", "pretrain", "train-ngram"]
    ngram = recipe.step("ngram")
    assert (recipe.out(ngram) / "part").is_file() and state(recipe, ngram) == "missing"
    monkeypatch.delenv("FAKE_MAKE_FAIL")
    run_recipe(load())
    assert [c["target"] for c in calls()] == ["train-ngram", "pseudo-label", "train", "evaluate"]
    # a stamp whose output has gone is not trusted either
    prepare = recipe.step("prepare")
    for p in (recipe.out(prepare) / "vocab").iterdir():
        p.unlink()
    (recipe.out(prepare) / "vocab").rmdir()
    (recipe.out(prepare) / "shards" / "part").unlink()
    (recipe.out(prepare) / "shards").rmdir()
    assert state(recipe, prepare) == "missing"


def test_a_training_step_killed_after_an_epoch_resumes(env, monkeypatch):
    load, calls, _ = env
    monkeypatch.setenv("FAKE_MAKE_FAIL", "train")
    with pytest.raises(RecipeError, match="make train exited 2"):
        run_recipe(load())
    calls()
    monkeypatch.delenv("FAKE_MAKE_FAIL")
    run_recipe(load())
    assert [c["target"] for c in calls()] == ["resume", "evaluate"]


def test_the_ingest_hash_follows_the_input(env, tmp_path):
    load, _, tmp = env
    base = load().step("ingest").hash
    archive = tmp / "a.tar.gz"
    archive.write_bytes(b"x" * 10)
    recipe = load_recipe(tmp / "tiny.toml", None, [], tmp / "work", tmp / "runs", archive=str(archive))
    assert recipe.step("ingest").hash != base  # IMDB_ARCHIVE=... is another input
    archive.write_bytes(b"y" * 11)
    again = load_recipe(tmp / "tiny.toml", None, [], tmp / "work", tmp / "runs", archive=str(archive))
    assert again.step("ingest").hash != recipe.step("ingest").hash  # so is a changed file
    assert again.step("prepare").hash != recipe.step("prepare").hash  # and what reads it
    folder = tmp / "in"
    folder.mkdir()
    (folder / "r.csv").write_text("review,sentiment\n")
    first = load_recipe(tmp / "tiny.toml", None, [], tmp / "work", tmp / "runs", str(folder)).step("ingest").hash
    (folder / "s.csv").write_text("review,sentiment\n")  # a file landed
    assert load_recipe(tmp / "tiny.toml", None, [], tmp / "work", tmp / "runs", str(folder)).step("ingest").hash != first


def test_force_and_status(env):
    load, calls, tmp = env
    recipe = load()
    lines = status_lines(recipe)
    assert lines[0] == f"recipe tiny ({tmp / 'tiny.toml'})"
    assert [ln.split()[:3] for ln in lines[1:]] == [[s.name, s.kind, "missing"] for s in recipe.steps]
    run_recipe(recipe)
    calls()
    run_recipe(load(), force=["w2v"])  # and what reads it: the student (its init), then the evaluation
    assert [c["target"] for c in calls()] == ["pretrain", "train", "evaluate"]
    run_recipe(load(), force=["evaluate"])
    assert [c["target"] for c in calls()] == ["evaluate"]
    assert all(ln.split()[2] == "done" for ln in status_lines(load())[1:])
    with pytest.raises(RecipeError, match=r"--force \['nope'\]: no such step in tiny"):
        run_recipe(load(), force=["nope"])


@pytest.mark.parametrize("text, message", [
    (RECIPE.replace('kind = "pretrain"', 'kind = "pretrainn"'), "step 'w2v': kind 'pretrainn' is not one of ingest"),
    (RECIPE.replace('teachers = ["ngram"]', 'teachers = ["student"]'), "teachers = 'student' is not an earlier step"),
    (RECIPE.replace('teachers = ["ngram"]', 'teachers = ["prepare"]'), "'prepare' is a prepare step, not ngram/train"),
    (RECIPE.replace('reviews = "ingest"\nvocab', 'vocab'), "a pretrain step needs reviews = <an earlier ingest step>"),
    (RECIPE.replace('set = ["train.epochs=2"]', 'set = ["train.epochs=two"]'), "step 'student': train.epochs"),
    (RECIPE.replace('init = "w2v"', 'init = "w2v"\nteachers = ["ngram"]'), "unknown key(s) ['teachers'] for a train"),
    (RECIPE + '\n[[step]]\nname = "ngram"\nkind = "ngram"\nreviews = "ingest"\n', "step 'ngram': a second step"),
    ("name = 'x'\n", "no [[step]] entries"),
    (RECIPE.replace('init = "w2v"', 'init = ["w2v"]'), "init must name one step by name, got ['w2v']"),
])
def test_recipe_mistakes_are_named_before_anything_runs(env, text, message):
    load, calls, _ = env
    with pytest.raises(RecipeError) as e:
        load(text=text)
    assert message in str(e.value)
    assert calls() == []


def test_the_shipped_recipes_load():
    for path in sorted((ROOT / "conf" / "recipes").glob("*.toml")):
        recipe = load_recipe(path, None, [], "data/work", "artifacts/runs")
        assert recipe.steps[-1].kind == "evaluate", path
