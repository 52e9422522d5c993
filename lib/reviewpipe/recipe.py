"""Recipes: the steps that make a model, as one resumable command (``make recipe RECIPE=name``).

A recipe (``conf/recipes/<name>.toml``) lists steps in order. Each step has a ``kind`` (one of
:data:`KINDS`: a Makefile target with known inputs and outputs), the earlier steps it reads
(by role: ``reviews``, ``vocab``, ``shards``, ``init``, ``teachers``, ``model``) and its own
``--set`` overrides::

    name = "default"
    set = ["vocab.num_words=30000"]          # every step

    [[step]]
    name = "prepare"
    kind = "prepare"
    reviews = "ingest"

Make still runs every job; this module only decides which steps to run. A step's **hash**
covers its kind, the resolved settings of the conf sections that shape its output
(:attr:`Kind.sections`), the hashes of the steps it reads and, for ingest, the identity of
the input (path, file count, bytes, newest modification time). After a step's target exits
0, a stamp with the hash goes to ``<work>/recipes/<name>/steps/<step>.json``. A step is
skipped when its stamp has the same hash and its output is there; otherwise its stamp is
removed first and the step runs again, so a step killed half-way (Ctrl-C, SIGTERM, kill -9)
is redone, never trusted. A training step killed after an epoch resumes from its checkpoint
(``make resume``), since its run id carries the hash. Changing one step's setting changes
its hash and those of every step that reads it, and only those run again; a step forced to run
(``--force``) runs what reads it again too.

Outputs: ``<work>/recipes/<name>/<step>/`` for every kind but ``train``, whose run goes to
``RUNS_DIR/<name>-<step>-<hash12>`` (so ``make score`` finds it). Each run's ``run.json``
gets a ``lineage``: the recipe, every step it depends on with its hash, each teacher's run
and val accuracy, and the vocabulary fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from reviewpipe import constants as C
from reviewpipe.cli import JobError
from reviewpipe.config import PipelineConf, load_conf

log = logging.getLogger(__name__)

STAMP_VERSION = 1


class RecipeError(JobError):
    """The recipe cannot be read or run; the message names the step and the fix."""


@dataclass(frozen=True)
class Kind:
    target: str                           # the Makefile target that runs it
    roles: dict                           # role -> the kinds a step of that role may be
    required: tuple[str, ...]             # roles that must be given
    sections: tuple[str, ...]             # conf sections whose settings shape the output


KINDS: dict[str, Kind] = {
    "ingest": Kind("ingest", {}, (), ("data", "ingest")),
    "prepare": Kind("prepare", {"reviews": ("ingest",)}, ("reviews",), ("tokenizer", "vocab", "encode")),
    "pretrain": Kind("pretrain", {"reviews": ("ingest",), "vocab": ("prepare",)}, ("reviews", "vocab"),
                     ("word2vec",)),
    "ngram": Kind("train-ngram", {"reviews": ("ingest",)}, ("reviews",), ("tokenizer", "ngram")),
    "pseudo": Kind("pseudo-label", {"shards": ("prepare",), "teachers": ("ngram", "train")}, ("shards", "teachers"),
                   ("pseudo",)),
    "train": Kind("train", {"vocab": ("prepare",), "shards": ("prepare", "pseudo"), "init": ("pretrain",)},
                  ("vocab", "shards"), ("model", "train")),
    "evaluate": Kind("evaluate", {"reviews": ("ingest",), "model": ("train",)}, ("reviews", "model"), ("score",)),
}
_STEP_KEYS = {"name", "kind", "set", *{r for k in KINDS.values() for r in k.roles}}


@dataclass
class Step:
    name: str
    kind: str
    refs: dict                 # role -> step name (teachers: a list of names)
    overrides: list
    conf: PipelineConf | None = None
    hash: str = ""

    def needs(self) -> list[str]:
        out = []
        for ref in self.refs.values():
            out.extend(ref if isinstance(ref, list) else [ref])
        return out


@dataclass
class Recipe:
    name: str
    path: Path
    description: str
    steps: list[Step]
    work: Path
    runs: Path
    common: list = field(default_factory=list)   # the recipe's own set, for every step
    input: str | None = None                       # ingest's input (None: the data step's aclImdb)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    @property
    def state_dir(self) -> Path:
        return self.work / "recipes" / self.name / "steps"

    def out(self, step: Step) -> Path:
        if step.kind == "train":
            return self.runs / f"{self.name}-{step.name}-{step.hash[:12]}"
        return self.work / "recipes" / self.name / step.name

    def stamp_path(self, step: Step) -> Path:
        return self.state_dir / f"{step.name}.json"


# ---------------------------------------------------------------------------------------
# reading and checking

def load_recipe(path: str | Path, conf_path: str | None, cli_set: Sequence[str], work: str | Path,
                runs: str | Path, input_path: str | None = None, archive: str | None = None) -> Recipe:
    """Read, check and hash a recipe; every step's settings are validated before anything runs."""
    path = Path(path)
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        raise RecipeError(f"recipe {str(path)!r} not found; recipes here: {', '.join(found) or 'none'}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: {e}") from e
    unknown = set(doc) - {"name", "description", "set", "step"}
    if unknown:
        raise RecipeError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected name, description, set, [[step]]")
    name = str(doc.get("name") or path.stem)
    common = _str_list(doc.get("set", []), f"{path}: set")
    steps: list[Step] = []
    for i, raw in enumerate(doc.get("step", [])):
        where = f"{path}: step {i + 1}"
        if not isinstance(raw, dict) or "name" not in raw or "kind" not in raw:
            raise RecipeError(f"{where}: every [[step]] needs a name and a kind")
        sname, kind = str(raw["name"]), str(raw["kind"])
        where = f"{path}: step {sname!r}"
        if kind not in KINDS:
            raise RecipeError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if sname in {s.name for s in steps}:
            raise RecipeError(f"{where}: a second step of that name")
        extra = set(raw) - _STEP_KEYS
        bad_roles = (set(raw) & (_STEP_KEYS - {"name", "kind", "set"})) - set(KINDS[kind].roles)
        if extra or bad_roles:
            raise RecipeError(f"{where}: unknown key(s) {sorted(extra | bad_roles)} for a {kind} step; it takes "
                              f"{', '.join(KINDS[kind].roles) or 'no inputs'} and set")
        refs = {}
        for role, kinds in KINDS[kind].roles.items():
            if role not in raw:
                if role in KINDS[kind].required:
                    raise RecipeError(f"{where}: a {kind} step needs {role} = <an earlier {'/'.join(kinds)} step>")
                continue
            names = raw[role] if role == "teachers" else [raw[role]]
            if role == "teachers" and (not isinstance(names, list) or not names):
                raise RecipeError(f"{where}: teachers must be a non-empty list of earlier step names")
            if not all(isinstance(n, str) for n in names):
                raise RecipeError(f"{where}: {role} must name {'steps' if role == 'teachers' else 'one step'} "
                                  f"by name, got {raw[role]!r}")
            for ref in names:
                earlier = {s.name: s for s in steps}
                if ref not in earlier:
                    raise RecipeError(f"{where}: {role} = {ref!r} is not an earlier step")
                if earlier[ref].kind not in kinds:
                    raise RecipeError(f"{where}: {role} = {ref!r} is a {earlier[ref].kind} step, not {'/'.join(kinds)}")
            refs[role] = list(names) if role == "teachers" else names[0]
        steps.append(Step(sname, kind, refs, _str_list(raw.get("set", []), f"{where}: set")))
    if not steps:
        raise RecipeError(f"{path}: no [[step]] entries")
    recipe = Recipe(name, path, str(doc.get("description", "")), steps, Path(work), Path(runs), common, input_path)
    for step in steps:
        try:
            step.conf = load_conf(conf_path, [*common, *step.overrides, *cli_set])
        except ValueError as e:
            raise RecipeError(f"{path}: step {step.name!r}: {e}") from e
        step.hash = _hash(recipe, step, input_path, archive)
    return recipe


def _str_list(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"{where} must be a list of 'section.key=value' strings")
    return list(value)


def input_identity(path: str | None, archive: str | None = None) -> dict:
    """What identifies an ingest input without reading it: path, files, bytes, newest mtime.
    Without a path, the data step's archive (IMDB_ARCHIVE, else the one data.* settings find)."""
    if not path:
        if archive:
            return {"archive": input_identity(archive)}
        return {"input": "the data step's aclImdb (found by the [data] settings)"}
    p = Path(path)
    if not p.exists():
        return {"input": str(p), "missing": True}
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    stats = [f.stat() for f in files]
    return {"input": str(p.resolve()), "files": len(files), "bytes": sum(s.st_size for s in stats),
            "newest_mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def _hash(recipe: Recipe, step: Step, input_path: str | None, archive: str | None = None) -> str:
    settings = step.conf.to_dict()
    doc = {"kind": step.kind, "settings": {sec: settings[sec] for sec in KINDS[step.kind].sections},
           "needs": {role: ([recipe.step(r).hash for r in ref] if isinstance(ref, list) else recipe.step(ref).hash)
                     for role, ref in sorted(step.refs.items())}}
    if step.kind == "ingest":
        doc["input"] = input_identity(input_path, archive)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# state

def read_stamp(recipe: Recipe, step: Step) -> dict | None:
    p = recipe.stamp_path(step)
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    except json.JSONDecodeError:
        return None


def output_present(recipe: Recipe, step: Step) -> bool:
    out = recipe.out(step)
    if step.kind == "train":
        meta = out / C.RUN_META
        return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("status") == "complete"
    return out.is_dir() and any(out.iterdir())


def state(recipe: Recipe, step: Step) -> str:
    """done (same hash, output there), stale (made from other inputs or settings), or missing."""
    stamp = read_stamp(recipe, step)
    if stamp is None:
        return "missing"
    if stamp.get("hash") != step.hash:
        return "stale"
    return "done" if output_present(recipe, step) else "missing"


def status_lines(recipe: Recipe) -> list[str]:
    lines = [f"recipe {recipe.name} ({recipe.path})" + (f": {recipe.description}" if recipe.description else "")]
    for step in recipe.steps:
        stamp = read_stamp(recipe, step) or {}
        st = state(recipe, step)
        when = f"  {stamp.get('seconds')} s, finished {stamp.get('finished')}" if st == "done" else ""
        lines.append(f"  {step.name:<12} {step.kind:<9} {st:<8} {step.hash[:12]}  {recipe.out(step)}{when}")
    return lines


# ---------------------------------------------------------------------------------------
# running

def make_vars(recipe: Recipe, step: Step, cli_set: Sequence[str]) -> tuple[str, dict]:
    """(Makefile target, its variables) for a step; paths come from the steps it reads."""
    out, ref = recipe.out(step), {role: (recipe.out(recipe.step(r)) if isinstance(r, str) else
                                        [recipe.out(recipe.step(x)) for x in r]) for role, r in step.refs.items()}
    sets = [*recipe.common, *step.overrides, *cli_set]
    target = KINDS[step.kind].target
    v: dict[str, str] = {}
    if step.kind == "ingest":
        v["INGEST_OUT"] = str(out)
        if recipe.input:
            v["INPUT"] = recipe.input
    elif step.kind == "prepare":
        v.update(INGEST_OUT=str(ref["reviews"]), VOCAB_OUT=str(out / "vocab"), SHARDS_OUT=str(out / "shards"))
    elif step.kind == "pretrain":
        v.update(INGEST_OUT=str(ref["reviews"]), VOCAB_OUT=str(ref["vocab"] / "vocab"), W2V_OUT=str(out))
    elif step.kind == "ngram":
        v.update(INGEST_OUT=str(ref["reviews"]), NGRAM_OUT=str(out))
    elif step.kind == "pseudo":
        v.update(SHARDS_OUT=str(ref["shards"] / "shards"), PSEUDO_OUT=str(out),
                 MODEL=" ".join(str(t) for t in ref["teachers"]))
    elif step.kind == "train":
        shards_step = recipe.step(step.refs["shards"])
        shards = ref["shards"] / "shards" if shards_step.kind == "prepare" else ref["shards"]
        v.update(VOCAB_OUT=str(ref["vocab"] / "vocab"), SHARDS_OUT=str(shards), RUNS_DIR=str(out.parent),
                 RUN_ID=out.name)
        if "init" in ref:
            sets = [f"model.embedding_init=word2vec:{ref['init']}", *sets]
        if (out / C.RUN_CHECKPOINTS / "state.json").is_file():
            target = "resume"  # killed after an epoch: continue from the checkpoint
    elif step.kind == "evaluate":
        v.update(INGEST_OUT=str(ref["reviews"]), MODEL=str(ref["model"]), EVAL_OUT=str(out))
    v["SET"] = " ".join(sets)
    return target, v


def _clear(recipe: Recipe, step: Step) -> None:
    """Before a step runs: forget its stamp, and drop an output no checkpoint can continue."""
    import shutil

    recipe.stamp_path(step).unlink(missing_ok=True)
    out = recipe.out(step)
    if step.kind == "train":
        if out.exists() and not (out / C.RUN_CHECKPOINTS / "state.json").is_file():
            shutil.rmtree(out)
    elif out.exists():
        shutil.rmtree(out)


def _make_parameters(makefile: Path = Path("Makefile")) -> set[str]:
    """The Makefile's ``NAME ?= ...`` variables: a parent make exports any given on its command
    line, and a step must see only the values the runner gives it."""
    if not makefile.is_file():
        return set()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*\?=", makefile.read_text(encoding="utf-8"), re.M))


def _run_make(target: str, variables: dict, make_args: dict, log_prefix: str) -> None:
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", *_make_parameters()}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    cmd = [os.environ.get("REVIEWPIPE_MAKE", "make"), "--no-print-directory", target,
           *(f"{k}={v}" for k, v in {**make_args, **variables}.items())]
    print(f"{log_prefix}: make {target} " + " ".join(f"{k}='{v}'" if " " in v else f"{k}={v}"
                                                   for k, v in variables.items()), flush=True)
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if rc != 0:
        raise RecipeError(f"{log_prefix} failed (make {target} exited {rc}); fix it and run the same command again: "
                          f"the steps before it are kept")


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the runner dies (kill -9), so no orphan keeps writing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass


def run_recipe(recipe: Recipe, cli_set: Sequence[str] = (), make_args: dict | None = None,
               force: Sequence[str] = ()) -> list[dict]:
    """Run the steps that are not done, in order; returns one record per step."""
    unknown = set(force) - {s.name for s in recipe.steps}
    if unknown:
        raise RecipeError(f"--force {sorted(unknown)}: no such step in {recipe.name}")
    recipe.state_dir.mkdir(parents=True, exist_ok=True)
    records = []
    rebuilt: set[str] = set()  # steps run in this invocation: what reads them runs too
    t_all = time.perf_counter()
    for i, step in enumerate(recipe.steps, 1):
        prefix = f"[{i}/{len(recipe.steps)}] {step.name}"
        if (step.name not in force and not rebuilt.intersection(step.needs())
                and state(recipe, step) == "done"):
            print(f"{prefix}: done, skipped ({step.hash[:12]}, {recipe.out(step)})", flush=True)
            records.append({"step": step.name, "ran": False, **(read_stamp(recipe, step) or {})})
            continue
        _clear(recipe, step)
        target, variables = make_vars(recipe, step, cli_set)
        t0 = time.perf_counter()
        started = _now()
        _run_make(target, variables, make_args or {}, prefix)
        seconds = round(time.perf_counter() - t0, 1)
        if step.kind == "train":
            write_lineage(recipe, step)
        stamp = {"version": STAMP_VERSION, "recipe": recipe.name, "step": step.name, "kind": step.kind,
                 "hash": step.hash, "output": str(recipe.out(step)), "started": started, "finished": _now(),
                 "seconds": seconds, "needs": step.needs()}
        _write_json(recipe.stamp_path(step), stamp)
        print(f"{prefix}: ran in {seconds} s", flush=True)
        rebuilt.add(step.name)
        records.append({"ran": True, **stamp})
    print(f"recipe {recipe.name}: {sum(r['ran'] for r in records)} of {len(records)} steps ran, "
          f"{time.perf_counter() - t_all:.0f} s", flush=True)
    return records


def ancestors(recipe: Recipe, step: Step) -> list[Step]:
    """Every step ``step`` depends on, directly or not, in recipe order."""
    seen: set[str] = set()
    todo = step.needs()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(recipe.step(name).needs())
    return [s for s in recipe.steps if s.name in seen]


def write_lineage(recipe: Recipe, step: Step) -> dict:
    """Record in the run's run.json how it was made: the recipe, each step's hash, the teachers."""
    run_dir = recipe.out(step)
    meta_path = run_dir / C.RUN_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    teachers, named = [], set()
    for s in ancestors(recipe, step):
        for t in s.refs.get("teachers", []) if s.kind == "pseudo" else []:
            if t not in named:  # a teacher of several pseudo steps is listed once
                named.add(t)
                teachers.append(_teacher(recipe, recipe.step(t)))
    lineage = {"recipe": recipe.name, "recipe_file": str(recipe.path), "step": step.name, "hash": step.hash,
               "steps": {s.name: {"kind": s.kind, "hash": s.hash, "output": str(recipe.out(s))}
                         for s in ancestors(recipe, step)},
               "teachers": teachers, "vocab_fingerprint": meta.get("vocab_fingerprint")}
    _write_json(meta_path, {**meta, "lineage": lineage})
    return lineage


def _teacher(recipe: Recipe, step: Step) -> dict:
    out = recipe.out(step)
    if step.kind == "ngram":
        m = json.loads((out / C.NGRAM_META).read_text(encoding="utf-8")).get("metrics", {})
        return {"step": step.name, "kind": "ngram", "path": str(out), "val_accuracy": m.get("val_accuracy")}
    m = json.loads((out / C.RUN_METRICS).read_text(encoding="utf-8"))
    return {"step": step.name, "kind": "keras", "run_id": out.name, "path": str(out),
            "val_accuracy": m.get("val_accuracy")}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
