"""Pseudo-labels: a trained run labels the unlabelled reviews, and the confident ones become
a training split (self-training on the 50,000 unsup reviews).

``make pseudo-label RUN=<run folder>`` writes a new shards folder: every file of the source
folder (hard links where the filesystem allows, else copies) plus the split ``pseudo``.  Its
rows are the ``pseudo.split`` (unsup) rows whose teacher probability is >= ``pseudo.threshold``
(label 1) or <= 1 - threshold (label 0), in the shard schema, in source order.  With
``pseudo.balance`` both labels keep the same number of rows, the most confident ones.  The
manifest's ``pseudo_label`` record names the teacher(s) and the rule, and reports how the same
rule does on val (the teacher's accuracy, the share of rows the rule keeps and their accuracy):
a report, never an input to the choice of rows.  Several runs on the same vocabulary make one
teacher, the mean of their probabilities (an ensemble, usually more accurate than any member).
An n-gram teacher folder (``make train-ngram``, :mod:`reviewpipe.ngram`) can join them: its
probabilities are looked up by review id, and the n-gram teachers' mean weighs
``pseudo.ngram_share`` against the Keras runs' mean.  Train the student with
``train.splits = ["train", "pseudo"]``.

With ``pseudo.soft`` the pseudo rows also carry ``target`` (float32), the teacher's
probability, and the trainer fits that instead of the 0/1 ``label`` (knowledge distillation:
the student also learns how sure the teacher was).  ``pseudo.threshold = 0.5`` keeps every row.

The teacher reads the shards as it was trained: cropped to its run's maxlen.  Row groups are
read one at a time; only the probabilities (4 bytes a row) are held between the two passes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from reviewpipe import constants as C
from reviewpipe import ngram, shards, storage
from reviewpipe.cli import JobError
from reviewpipe.config import EncodeConf, PipelineConf

log = logging.getLogger(__name__)


class PseudoLabelError(JobError):
    """Pseudo-labels cannot be written; the message says why."""


def choose(probs: np.ndarray, threshold: float, balance: bool, max_rows: int = 0,
           seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, labels) for teacher probabilities: confident rows, optionally balanced by
    keeping the ``min(n_pos, n_neg)`` most confident rows of each label (ties: source order).

    ``max_rows > 0`` then keeps a seeded uniform sample of at most that many of those rows
    (half of each label when balanced), so a student's epoch fits a time budget without
    keeping only the easiest rows."""
    labels = (probs >= 0.5).astype(np.int8)
    pos = np.flatnonzero(probs >= threshold)
    neg = np.flatnonzero(probs <= 1.0 - threshold)
    if balance:
        n = min(len(pos), len(neg))
        pos = pos[np.argsort(-probs[pos], kind="stable")[:n]]
        neg = neg[np.argsort(probs[neg], kind="stable")[:n]]
    if max_rows and len(pos) + len(neg) > max_rows:
        rng = np.random.default_rng(seed)
        if balance:
            pos = rng.choice(pos, max_rows // 2, replace=False)
            neg = rng.choice(neg, max_rows // 2, replace=False)
        else:
            both = rng.choice(np.concatenate([pos, neg]), max_rows, replace=False)
            pos, neg = both, both[:0]
    keep = np.zeros(len(probs), bool)
    keep[pos] = True
    keep[neg] = True
    return keep, labels


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or no hard links there
        shutil.copy2(src, dst)


def _length_aware(meta: dict) -> bool:
    """A masked, post-padded run scores a batch cropped to its longest row the same."""
    return bool(meta.get("masked")) and meta.get("padding") == "post"


def _inference_model(model, meta: dict):
    from reviewpipe.model import free_width

    return free_width(model) if _length_aware(meta) else model


def _teacher(run: Path, manifest: dict, src_dir: Path) -> tuple[dict, Path]:
    """A finished run that reads these shards as it was trained, or an n-gram teacher folder;
    refuses anything else."""
    if ngram.is_teacher(run):
        return ngram.read_meta(run), run
    meta_path = run / C.RUN_META
    if not meta_path.is_file():
        raise PseudoLabelError(f"--run {run}: no {C.RUN_META}; give a finished run folder")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("status") != "complete":
        raise PseudoLabelError(f"--run {run}: the run is {meta.get('status')!r}, not complete")
    shards.check_fingerprint(manifest, meta["vocab_fingerprint"], src_dir)
    if (manifest["padding"], manifest["truncating"]) != (meta["padding"], meta["truncating"]):
        raise PseudoLabelError(f"{src_dir} is {manifest['padding']}-padded/{manifest['truncating']}-truncated; "
                               f"the run {run.name} was trained on {meta['padding']}/{meta['truncating']}")
    if int(meta["maxlen"]) > int(manifest["maxlen"]):
        raise PseudoLabelError(f"the run {run.name} reads {meta['maxlen']} ids, the shards hold {manifest['maxlen']}")
    return meta, run


def pseudo_label(run_dirs: str | list[str], shards_dir: str, out_dir: str, conf: PipelineConf) -> dict:
    """Label ``pseudo.split`` with the runs' models (their mean probability: one run, or an
    ensemble of runs on the same vocabulary) and write ``out_dir`` (see the module doc)."""
    import keras
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from reviewpipe import model as M  # also registers PaddingMask and TimePooling for load_model
    from reviewpipe.encode import ShardWriter

    started = time.perf_counter()
    pc = conf.pseudo
    src_dir, out = Path(shards_dir), Path(out_dir)
    if out.resolve() == src_dir.resolve():
        raise PseudoLabelError("--output must be a new folder, not the source shards folder")
    runs = [Path(r) for r in ([run_dirs] if isinstance(run_dirs, str) else run_dirs)]
    if not runs:
        raise PseudoLabelError("give at least one --run (the teacher)")
    manifest = shards.load_manifest(src_dir)
    teachers = [_teacher(r, manifest, src_dir) for r in runs]
    if not shards.split_rows(manifest, pc.split):
        raise PseudoLabelError(f"{src_dir} has no {pc.split!r} rows to label")
    if out.exists():
        old = out / C.MANIFEST
        if not (old.is_file() and "pseudo_label" in json.loads(old.read_text(encoding="utf-8"))):
            raise PseudoLabelError(f"--output {out} exists and is not a pseudo-labelled shards folder; "
                                   f"refusing to replace it")
    src_len = int(manifest["maxlen"])
    models = [(_inference_model(keras.models.load_model(run / C.RUN_MODEL, compile=False), meta), meta)
              for meta, run in teachers if meta.get("kind") != "ngram"]
    lookups = [ngram.PredictionLookup(run) for meta, run in teachers if meta.get("kind") == "ngram"]

    def row_groups(split):
        files = shards.split_files(src_dir, manifest, split)
        return [(f, g) for f, n in zip(files, shards.row_groups(files)) for g in range(n)]

    def predict(path, group, labelled):
        """The teacher's probability: the mean of the Keras runs (each reading the rows cropped
        to its own maxlen) and of the n-gram teachers, mixed by ``pseudo.ngram_share``."""
        t = pq.ParquetFile(path).read_row_group(group, columns=[C.LABEL] + ([C.REVIEW_ID] if lookups else []))
        labels = t.column(C.LABEL).fill_null(-1).to_numpy().astype(np.float32)
        rows = labels >= 0 if labelled else np.ones(len(labels), bool)  # as read_row_group keeps them
        means = []
        if models:
            total = np.zeros(int(rows.sum()))
            for model, meta in models:
                ids, _ = shards.read_row_group(path, group, src_len, labelled, int(meta["maxlen"]),
                                               meta["padding"], meta["truncating"])
                if _length_aware(meta):  # sorted by length, cropped batches: the same probabilities
                    total += M.predict_length_aware(model, ids, pc.batch_size)
                    continue
                for i in range(0, len(ids), pc.batch_size):
                    total[i:i + pc.batch_size] += np.asarray(model.predict_on_batch(ids[i:i + pc.batch_size]),
                                                             np.float64).ravel()
            means.append(total / len(models))
        if lookups:
            review_ids = t.column(C.REVIEW_ID).to_numpy(zero_copy_only=False)[rows]
            means.append(sum(lookup(review_ids) for lookup in lookups) / len(lookups))
        p = means[0] if len(means) == 1 else (1.0 - pc.ngram_share) * means[0] + pc.ngram_share * means[1]
        return p.astype(np.float32), labels[rows]

    groups = row_groups(pc.split)
    probs = np.concatenate([predict(f, g, False)[0] for f, g in groups])
    keep, labels = choose(probs, pc.threshold, pc.balance, pc.max_rows, pc.seed)
    report = _val_report(manifest, row_groups, predict, pc.threshold)

    with storage.staged_local(out) as stage:  # replaces an older pseudo-labelled folder on success
        for split, info in manifest["splits"].items():
            if split != C.PSEUDO:
                for f in info["files"]:
                    _link_or_copy(src_dir / f["path"], stage / f["path"])
        enc = EncodeConf(maxlen=src_len, row_group_rows=int(manifest["row_group_rows"]),
                         rows_per_file=int(manifest["rows_per_file"]))
        writer = ShardWriter(pafs.LocalFileSystem(), str(stage), C.PSEUDO, 0, enc)
        offset = 0
        for f, g in groups:
            t = pq.ParquetFile(f).read_row_group(g)
            m = keep[offset:offset + len(t)]
            lab = pa.array(labels[offset:offset + len(t)][m], pa.int8())
            soft = pa.array(probs[offset:offset + len(t)][m], pa.float32())
            offset += len(t)
            t = t.filter(pa.array(m))
            t = t.set_column(t.schema.get_field_index(C.LABEL), C.LABEL, lab)
            writer.add(t.append_column(pa.field(C.TARGET, pa.float32(), nullable=False), soft) if pc.soft else t)
        files = []
        for i, (_, name, rows, _, _) in enumerate(writer.finish()):
            new = f"{C.SPLIT}={C.PSEUDO}/part-{i:05d}.parquet"
            (stage / name).rename(stage / new)
            files.append({"path": new, "rows": rows})
        kept = int(keep.sum())
        if sum(f["rows"] for f in files) != kept:
            raise PseudoLabelError(f"wrote {sum(f['rows'] for f in files)} pseudo rows, chose {kept}")
        record = {"teachers": [{"run": str(run.resolve()), "kind": meta.get("kind", "keras"),
                                "val_accuracy": (meta["metrics"].get("val_accuracy") if meta.get("kind") == "ngram"
                                                 else _metric(run, "val_accuracy"))}
                               for meta, run in teachers],
                  "ngram_share": pc.ngram_share if models and lookups else None,
                  "source": str(src_dir.resolve()), "split": pc.split, "threshold": pc.threshold,
                  "balance": pc.balance, "max_rows": pc.max_rows, "seed": pc.seed, "soft": pc.soft,
                  "rows_in": int(len(probs)), "rows_kept": kept,
                  "positive": int(labels[keep].sum()), "negative": int(kept - labels[keep].sum()),
                  "val_report": report, "seconds": round(time.perf_counter() - started, 1)}
        splits = {s: v for s, v in manifest["splits"].items() if s != C.PSEUDO}
        splits[C.PSEUDO] = {"rows": kept, "files": files}
        schema = [c for c in manifest["schema"] if c["name"] != C.TARGET]
        if pc.soft:
            schema.append({"name": C.TARGET, "type": "float32", "splits": [C.PSEUDO]})
        new_manifest = {**manifest, "splits": dict(sorted(splits.items())), "schema": schema,
                        "pseudo_label": record}
        (stage / C.MANIFEST).write_text(json.dumps(new_manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("pseudo-labels: kept %d of %d %s rows (%d positive) at threshold %.2f; on val the rule keeps "
             "%.1f%% of rows at accuracy %.4f", kept, len(probs), pc.split, record["positive"], pc.threshold,
             100 * (report.get("kept_fraction") or 0), report.get("kept_accuracy") or float("nan"))
    return record


def _metric(run: Path, key: str):
    path = run / C.RUN_METRICS
    return json.loads(path.read_text(encoding="utf-8")).get(key) if path.is_file() else None


def _val_report(manifest: dict, row_groups, predict, threshold: float) -> dict:
    """How the threshold rule does on val: share of rows kept, their accuracy, overall accuracy."""
    if not shards.split_rows(manifest, C.VAL):
        return {}
    got = [predict(f, g, True) for f, g in row_groups(C.VAL)]
    p = np.concatenate([x[0] for x in got])
    y = np.concatenate([x[1] for x in got])
    if not len(p):
        return {}
    confident = (p >= threshold) | (p <= 1.0 - threshold)
    right = (p >= 0.5) == (y >= 0.5)
    return {"rows": int(len(p)), "accuracy": round(float(right.mean()), 5),
            "kept_fraction": round(float(confident.mean()), 5),
            "kept_accuracy": round(float(right[confident].mean()), 5) if confident.any() else None}
