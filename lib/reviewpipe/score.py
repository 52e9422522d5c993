"""Batch scoring: any ingest format (or a reviews table) + a model run -> scores by run date.

The model is applied in an Iterator pandas UDF: each Python worker loads the run once (a
per-process cache), tokenizes with the same vectorised function the encode job uses
(:func:`reviewpipe.encode.sequences` + ``pad_flat``), and predicts ``score.batch_size`` rows at
a time.  Output (DESIGN: scores)::

    SCORES_DIR/run_date=YYYY-MM-DD/part-*.parquet   review_id, probability, predicted_label,
                                                    model_run, vocab_fingerprint, scored_at
    SCORES_DIR/run_date=YYYY-MM-DD/_SUCCESS         written last; score-pending looks for it
    SCORES_DIR/_quarantine/run_date=YYYY-MM-DD/     rejected records with a reason
    SCORES_DIR/_reports/run_date=YYYY-MM-DD/score_summary.json (+ metrics.json with labels)

Re-running a date replaces that date's partition only (dynamic partition overwrite).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd  # module level: the pandas UDF's type hints are resolved against these globals

from reviewpipe import constants as C
from reviewpipe import storage
from reviewpipe.cli import JobError
from reviewpipe.config import PipelineConf
from reviewpipe.vocab import VocabError, load_vocab

log = logging.getLogger(__name__)

SCORE_SCHEMA = (f"{C.REVIEW_ID} string, {C.PROBABILITY} double, {C.PREDICTED_LABEL} tinyint, "
                f"{C.LENGTH} int, {C.OOV} int, {C.MODEL_RUN} string, {C.VOCAB_FINGERPRINT} string, {C.SCORED_AT} timestamp")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ScoreError(JobError):
    """Scoring cannot start (bad model run, fingerprint mismatch, bad date)."""


# ---------------------------------------------------------------------------------------
# the model run (driver side checks, before any Spark work)

@dataclass(frozen=True)
class ModelRun:
    path: str
    run_id: str
    fingerprint: str
    maxlen: int
    padding: str
    truncating: str
    masked: bool = False  # the model masks padding: a post-padded batch cropped to its longest row scores the same


def check_run(run_dir: str, vocab_dir: str | None = None) -> ModelRun:
    """Refuse a missing or unfinished run, or one whose vocabulary differs from ``vocab_dir``'s."""
    p = Path(run_dir)
    if not p.is_dir():
        raise ScoreError(f"model run {run_dir!r} does not exist; train one with make train (runs are in "
                         f"artifacts/runs/<run_id>)")
    missing = [n for n in (C.RUN_MODEL, C.RUN_META, C.RUN_VOCAB) if not (p / n).exists()]
    if missing:
        raise ScoreError(f"model run {run_dir!r} is incomplete (missing {', '.join(missing)}); finish it with "
                         f"make resume or pick a complete run")
    meta = json.loads((p / C.RUN_META).read_text(encoding="utf-8"))
    if meta.get("status") != "complete":
        raise ScoreError(f"model run {run_dir!r} has status {meta.get('status')!r}, not complete")
    run_vocab = load_vocab(None, str(p / C.RUN_VOCAB))
    if run_vocab.fingerprint != meta.get("vocab_fingerprint"):
        raise ScoreError(f"model run {run_dir!r}: its vocab/ copy does not match run.json's fingerprint")
    if vocab_dir:
        try:
            given = load_vocab(None, vocab_dir)
        except VocabError as e:
            raise ScoreError(str(e)) from e
        if given.fingerprint != run_vocab.fingerprint:
            raise ScoreError(f"model run {meta['run_id']} was trained with vocabulary {run_vocab.fingerprint[:12]}…, "
                             f"but --vocab {vocab_dir} is {given.fingerprint[:12]}…; score with the run's own "
                             f"vocabulary (omit --vocab) or a run trained on this one")
    return ModelRun(str(p.resolve()), meta["run_id"], run_vocab.fingerprint, int(meta["maxlen"]),
                    meta["padding"], meta["truncating"], bool(meta.get("masked", False)))


def check_date(run_date: str) -> str:
    if not DATE_RE.match(run_date or ""):
        raise ScoreError(f"--run-date {run_date!r}: expected YYYY-MM-DD")
    try:
        date.fromisoformat(run_date)
    except ValueError as e:
        raise ScoreError(f"--run-date {run_date!r}: {e}") from None
    return run_date


# ---------------------------------------------------------------------------------------
# worker side: one load per Python worker, batched inference

_CACHE: dict[tuple, Future] = {}
MODEL_LOADED = "reviewpipe score: loaded model run"
# Keras imports its optional integrations when they are installed (matplotlib for
# plot_image_gallery, scikit-learn for its estimator wrappers): 1.3-1.5 s of a scoring
# worker's 4.2 s TensorFlow import, for code that scoring never calls.
UNUSED_BY_KERAS_SCORING = ("matplotlib", "sklearn")


class _Skip(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (not imported while loading a scoring model)",
                                      name=name)
        return None


@contextlib.contextmanager
def imports_skipped(names: Sequence[str] = UNUSED_BY_KERAS_SCORING):
    """Inside: importing ``names`` (not imported yet) fails as if they were not installed, so
    libraries that import them optionally go without.  After: they import as usual (a
    library that went without keeps going without in this process)."""
    finder = _Skip(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


class Predictor:
    """Texts -> probabilities with a run's model and vocabulary (loaded once per process):
    the tokenizing and the length order both engines share."""

    run: ModelRun
    crop: bool
    engine: str

    def _vocabulary(self, run: ModelRun, crop: bool) -> None:
        vocab = load_vocab(None, f"{run.path}/{C.RUN_VOCAB}")
        self.run, self.tokens, self.spec = run, vocab.tokens, vocab.tokenizer
        # Only a masked, post-padded model ignores the columns past a row's last token; the
        # trainer masks exactly those (an unmasked pre-padded model reads its padding).
        self.crop = crop and run.masked and run.padding == "post"

    def _loaded(self, t0: float) -> None:
        # one line per load in the executor's stderr: how many workers loaded the run, and how long it took
        print(f"{MODEL_LOADED} {self.run.run_id} in {time.perf_counter() - t0:.1f} s (pid {os.getpid()}, "
              f"engine {self.engine})", file=sys.stderr, flush=True)

    def encode(self, texts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(padded ids, ids per text before truncation, words outside the vocabulary): the
        shards' ``ids``, ``length`` and ``oov``."""
        from reviewpipe.encode import sequences
        from reviewpipe.tokenizer import pad_flat

        values, lengths, oov = sequences(texts, self.tokens, self.spec)
        return pad_flat(values, lengths, self.run.maxlen, self.run.padding, self.run.truncating), lengths, oov

    def order(self, ids: np.ndarray) -> np.ndarray | None:
        """Rows by length, so the batches cut from them are cropped short (masked runs only)."""
        return np.argsort(np.count_nonzero(ids, axis=1), kind="stable") if self.crop else None


class OnnxPredictor(Predictor):
    """The run's ``model.onnx`` with ONNX Runtime (:mod:`reviewpipe.onnxmodel`): the process
    never imports TensorFlow, and a load takes about 0.2 s.  A masked model's batches are
    cropped to their longest row (by :class:`reviewpipe.onnxmodel.Classifier`)."""

    def __init__(self, run: ModelRun, threads: int, crop: bool = True):
        from reviewpipe.onnxmodel import Classifier

        t0 = time.perf_counter()
        self._vocabulary(run, crop)
        self.classifier, self.engine = Classifier(f"{run.path}/{C.RUN_ONNX}", threads), "onnx"
        self._loaded(t0)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.classifier(ids)


class KerasPredictor(Predictor):
    """Texts -> probabilities with the run's model and vocabulary (loaded once per process).

    ``engine="xla"`` predicts with :func:`reviewpipe.fused.compile_classifier` (one compiled
    loop over the model's own weights, docs/results.md has its speed) where it reproduces the
    model, on a machine without a GPU (there Keras runs cuDNN); otherwise, and with
    ``engine="keras"``, Keras's ``predict_on_batch``.  ``self.engine`` says which, and why."""

    def __init__(self, run: ModelRun, tf_threads: int, crop: bool = True, engine: str = "keras",
                 batch_size: int = 512):
        from reviewpipe import native_logs

        native_logs.install()  # this Python worker's TensorFlow start-up lines
        t0 = time.perf_counter()
        with imports_skipped():
            import tensorflow as tf

        if tf_threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # TF already initialised in this process
                pass
        import keras

        from reviewpipe import model as _custom_layers  # noqa: F401  (registers PaddingMask, TimePooling)

        self._vocabulary(run, crop)
        self.model = keras.models.load_model(f"{run.path}/{C.RUN_MODEL}", compile=False)
        self.fused, self.engine = None, "keras"
        if engine == "xla":
            self.fused, self.engine = self._compile(tf, batch_size)
        if self.crop and self.fused is None:  # the same layers and weights over a (None, None) input
            from reviewpipe.model import free_width

            self.model = free_width(self.model)
        self._loaded(t0)

    def _compile(self, tf, batch_size: int):
        from reviewpipe import fused

        if tf.config.list_physical_devices("GPU"):
            return None, "keras (a GPU: Keras runs cuDNN)"
        try:
            run = fused.compile_classifier(self.model, self.run.maxlen, batch_size)
            run(np.zeros((1, 1), np.int32))  # compiles here, at load time, not in the first task
        except fused.Unsupported as e:
            return None, f"keras (xla does not reproduce {e})"
        return run, "xla"

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if self.fused is not None:  # runs to the batch's longest row by itself
            return self.fused(ids)
        if self.crop:  # a masked model gives the same output without the padding columns
            from reviewpipe.model import crop

            ids = crop(ids)
        return np.asarray(self.model.predict_on_batch(ids), dtype=np.float64)


def resolve_engine(run: ModelRun, engine: str, input_bytes: int | None = None, cores: int = 1,
                   auto_onnx_bytes: int = 0) -> tuple[str, str]:
    """(the engine the workers will use, why it is that one when ``engine`` did not say so
    alone, or ''), on the driver before any Spark work.

    ``auto`` picks ``onnx`` for an input of at most ``auto_onnx_bytes`` per core: there the
    workers' start (a TensorFlow import and an XLA compile, ~5 s of CPU each) outweighs XLA's
    faster loop; above it, and for an input of unknown size, ``xla``.  ``onnx`` needs the
    run's ``model.onnx``: made here from ``model.keras`` when it is missing or stale (the
    trainer writes it; older runs get it on their first scoring).  A model the graph does not
    reproduce, or a run folder that cannot be written, falls back to ``xla`` (which itself
    keeps Keras for what it does not reproduce)."""
    why = ""
    if engine == "auto":
        per_core = None if input_bytes is None else input_bytes / max(1, cores)
        engine = "onnx" if per_core is not None and per_core <= auto_onnx_bytes else "xla"
        why = ("auto: input of unknown size" if per_core is None else
               f"auto: input {per_core / 2**20:.1f} MiB per core, {'at most' if engine == 'onnx' else 'over'} "
               f"{auto_onnx_bytes / 2**20:.1f} MiB")
    if engine != "onnx":
        return engine, why
    from reviewpipe import fused, onnxmodel

    try:
        onnxmodel.ensure(run.path)
    except fused.Unsupported as e:
        return "xla", f"onnx does not reproduce {e}"
    except OSError as e:
        return "xla", f"cannot write {C.RUN_ONNX} into the run: {e}"
    return "onnx", why


def predictor_for(run: ModelRun, sc, engine: str) -> tuple[Callable[[], Predictor], tuple]:
    """The workers' predictor factory for ``engine`` (as :func:`resolve_engine` gave it) and
    its key in the per-process cache."""
    key = (engine, run.path, sc.tf_threads, sc.length_aware, sc.batch_size)
    if engine == "onnx":
        return (lambda: OnnxPredictor(run, sc.tf_threads, sc.length_aware)), key
    return (lambda: KerasPredictor(run, sc.tf_threads, sc.length_aware, engine, sc.batch_size)), key


_CACHE_LOCK = threading.Lock()


def cached(key: tuple, factory: Callable[[], object]):
    """The per-process cache: a Python worker builds each predictor once and reuses it.

    A load that :func:`preload` started in the background is waited for; if it failed, the
    caller loads again itself, so a real error is raised by the task that needs the model."""
    while True:
        with _CACHE_LOCK:
            slot = _CACHE.get(key)
            mine = slot is None or (slot.done() and slot.exception() is not None)
            if mine:
                slot = _CACHE[key] = Future()
        if not mine:
            try:
                return slot.result()
            except BaseException:  # a background preload failed: go round and load here
                continue
        _fill(slot, factory)
        return slot.result()  # raises the factory's error here, in the task that needs the model


def _fill(slot: Future, factory: Callable[[], object]) -> None:
    try:
        slot.set_result(factory())
    except BaseException as e:
        slot.set_exception(e)


def preload(key: tuple, factory: Callable[[], object]) -> None:
    """Start building ``key``'s predictor in a background thread of this Python worker and
    return at once: the worker imports TensorFlow and loads the model while Spark reads the
    input, and the scoring task that follows finds it ready (:func:`cached`)."""
    with _CACHE_LOCK:
        if key in _CACHE:
            return
        _CACHE[key] = slot = Future()
    # a failure stays in the slot: the scoring task loads again and raises it there
    threading.Thread(target=_fill, args=(slot, factory), name="reviewpipe-preload", daemon=True).start()


def preload_on_workers(spark, key: tuple, factory: Callable[[], object]) -> None:
    """One instant task per core that calls :func:`preload`.  Spark reuses its Python workers
    (``spark.python.worker.reuse``), pooled by their environment, which differs between the RDD
    and the SQL runners: this runs through ``mapInArrow``, like the scoring UDF, so the scoring
    tasks land in the same processes.  A worker that missed it loads the model when its first
    scoring task needs it."""
    n = spark.sparkContext.defaultParallelism

    def start(batches):
        for _ in batches:
            pass
        preload(key, factory)
        return iter(())

    spark.range(n, numPartitions=n).mapInArrow(start, "id long").collect()


def predict_batches(series_iter: Iterator, predictor, batch_size: int) -> Iterator:
    """The body of the Iterator pandas UDF: texts in; per text its probability, its length in
    tokens and its OOV tokens out (a DataFrame, in the texts' order), checked."""
    import pyarrow as pa

    for texts in series_iter:
        ids, lengths, oov = predictor.encode(pa.array(texts, pa.string()))
        if ids.shape[0] != len(texts):
            raise RuntimeError(f"tokenizer returned {ids.shape[0]} rows for {len(texts)} texts")
        order = predictor.order(ids) if hasattr(predictor, "order") else None
        if order is not None:  # batches of similar lengths; the probabilities go back in row order
            ids = ids[order]
        parts = []
        for start in range(0, len(texts), batch_size):
            chunk = ids[start:start + batch_size]
            out = np.asarray(predictor(chunk))
            if out.shape not in ((len(chunk),), (len(chunk), 1)):
                raise RuntimeError(f"model returned shape {out.shape} for a batch of {len(chunk)}; expected "
                                   f"({len(chunk)}, 1)")
            parts.append(out.reshape(-1))
        probs = np.concatenate(parts) if parts else np.zeros(0)
        if order is not None:
            unsorted = np.empty_like(probs)
            unsorted[order] = probs
            probs = unsorted
        yield pd.DataFrame({C.PROBABILITY: probs.astype(np.float64), C.LENGTH: np.asarray(lengths, np.int32),
                            C.OOV: np.asarray(oov, np.int32)}, index=texts.index)


UDF_SCHEMA = f"{C.PROBABILITY} double, {C.LENGTH} int, {C.OOV} int"


def make_udf(factory: Callable[[], object], key: tuple, batch_size: int):
    """An Iterator pandas UDF string -> struct<probability, length, oov> around ``factory``
    (called once per worker)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(UDF_SCHEMA)
    def predict(series_iter: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        yield from predict_batches(series_iter, cached(key, factory), batch_size)

    return predict


# ---------------------------------------------------------------------------------------
# reading the input

def is_reviews_table(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.glob("split=*/*.parquet"))


@dataclass
class Input:
    """What :func:`read_input` gives the job: the records (review_id, label, text, reason,
    detail, source, ordinal, raw), the input format, the cached frames the records read (the
    caller unpersists them), the rows in, and the rows that passed the checks before the
    duplicate check (0: nothing to score; None: not counted before scoring, for a reviews
    table, whose checks run as its rows are scored and quarantined)."""
    records: object
    fmt: str
    cached: list
    rows_in: int
    rows_checked: int | None


def _row_counts(df, keys: Sequence[str], splits: Sequence[str] | None) -> tuple[list, int, int]:
    """One group-by over ``df`` (it fills ``df``'s cache): the rows per ``keys`` and per
    passed/failed checks, and the rows in and passed for the selected splits."""
    from pyspark.sql import functions as F

    by = [*keys, C.SPLIT] if splits else list(keys)
    got = df.groupBy(*by, F.col("reason").isNull().alias("_ok")).agg(F.count(F.lit(1)).alias("n")).collect()
    mine = [r for r in got if not splits or r[C.SPLIT] in splits]
    return got, sum(r["n"] for r in mine), sum(r["n"] for r in mine if r["_ok"])


def read_input(spark, path: str, fmt: str, conf: PipelineConf, splits: Sequence[str] | None) -> Input:
    """Read and check the input (the ingest readers and checks, or a reviews table).

    A raw input is parsed once into a cache, and the pass that fills it counts the rows in.
    A reviews table is Parquet already: its rows are counted from the files' metadata (a scan
    that reads no column), and the scoring and the quarantine read its columns themselves, so
    no pass runs over its text before the scoring."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from reviewpipe import ingest

    max_bytes = conf.score.max_text_bytes
    if fmt == "reviews" or (fmt == "auto" and is_reviews_table(path)):
        df = spark.read.parquet(path)
        if splits:
            df = df.filter(F.col(C.SPLIT).isin(list(splits)))
        nbytes = F.octet_length(C.TEXT)
        reason = (F.when(F.col(C.TEXT).isNull() | F.col(C.TEXT).rlike(r"(?U)^\s*$"), F.lit(C.EMPTY_TEXT))
                  .when(nbytes > max_bytes, F.lit(C.TEXT_TOO_LARGE)))
        detail = (F.when(reason == C.EMPTY_TEXT, F.lit("text is empty or whitespace only"))
                  .when(reason == C.TEXT_TOO_LARGE,
                        F.concat(nbytes.cast("string"), F.lit(f" bytes > score.max_text_bytes={max_bytes}"))))
        records = df.select(C.REVIEW_ID, C.LABEL, C.TEXT, C.SOURCE, C.ORDINAL, reason.alias("reason"),
                            detail.alias("detail"), F.col(C.TEXT).cast("binary").alias("raw"))
        return Input(records, "reviews", [], df.count(), None)
    # Every other format goes through the ingest readers and checks (one code path), with the
    # scoring size limit; nothing is carved into val.
    sconf = replace(conf, ingest=replace(conf.ingest, max_text_bytes=max_bytes))
    raw = ingest.read_raw(spark, path, fmt, sconf, label_optional=True)
    classified = ingest.classify(raw.df, sconf)
    # Scoring needs no label: a missing or unknown one makes the row unlabelled (left out of
    # the metrics), never quarantined.
    label_problem = F.col("reason").isin(C.MISSING_LABEL, C.UNKNOWN_LABEL)
    # Parsed once: one group-by fills this cache and gives the records per file (for the
    # ordinals) and the rows in; everything after reads it.  The records themselves are not
    # cached again (a second copy of every text); only the duplicated ids are, a small table
    # the records join, filled by the first pass that needs it (the scoring), and only where
    # the ids can repeat (RawInput.ids_unique).
    classified = (classified.withColumn(C.LABEL, F.when(label_problem, F.lit(None).cast("tinyint"))
                                        .otherwise(F.col(C.LABEL)))
                  .withColumn("detail", F.when(label_problem, F.lit(None)).otherwise(F.col("detail")))
                  .withColumn("reason", F.when(label_problem, F.lit(None)).otherwise(F.col("reason")))
                  .persist(StorageLevel.MEMORY_AND_DISK))
    counts, rows_in, checked = _row_counts(classified, ("file_rank",), splits)
    ordered = ingest.with_ordinal(spark, classified, raw.fmt == "aclimdb",
                                  [(r["file_rank"], r["n"]) for r in counts])
    cached = [classified]
    records = ordered
    if not raw.ids_unique:  # ids read from the input (or two files share a stem): the check runs
        dups = ingest.duplicate_ids(ordered).persist(StorageLevel.MEMORY_AND_DISK)
        records = ingest.mark_duplicates(ordered, dups)
        cached.append(dups)
    if splits:
        records = records.filter(F.col(C.SPLIT).isin(list(splits)))
    return Input(records.select(C.REVIEW_ID, C.LABEL, F.col("raw").cast("string").alias(C.TEXT), C.SOURCE,
                                C.ORDINAL, "reason", "detail", "raw"), raw.fmt, cached, rows_in, checked)


# ---------------------------------------------------------------------------------------
# evaluation

AUC_BINS = 100_000  # probability bins for the ROC AUC: pairs within one bin (width 1e-5) count half


def evaluate(labelled) -> dict:
    """accuracy, ROC AUC, precision, recall, F1 and the confusion matrix, from one Spark
    aggregation: rows per (label, predicted label, probability bin), at most a few hundred
    thousand, summed on the driver.  The AUC is the Mann-Whitney statistic over the bins
    (exact when no positive and negative share a bin of width 1/AUC_BINS)."""
    from pyspark.sql import functions as F

    bin_of = F.least(F.floor(F.col(C.PROBABILITY) * AUC_BINS), F.lit(AUC_BINS)).cast("int")
    got = (labelled.groupBy(C.LABEL, C.PREDICTED_LABEL, bin_of.alias("bin")).agg(F.count(F.lit(1)).alias("n"))
           .collect())
    cells: dict[tuple, int] = {}
    pos, neg = np.zeros(AUC_BINS + 1), np.zeros(AUC_BINS + 1)
    for r in got:
        key = (r[C.LABEL], r[C.PREDICTED_LABEL])
        cells[key] = cells.get(key, 0) + r["n"]
        (pos if r[C.LABEL] == 1 else neg)[r["bin"]] += r["n"]
    tp, tn = cells.get((1, 1), 0), cells.get((0, 0), 0)
    fp, fn = cells.get((0, 1), 0), cells.get((1, 0), 0)
    n = tp + tn + fp + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    auc = None
    if pos.sum() and neg.sum():  # both classes present: P(a positive outscores a negative), ties half
        below = np.cumsum(neg) - neg  # negatives in lower bins
        auc = float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
    return {
        "rows": n,
        "accuracy": round((tp + tn) / n, 5) if n else None,
        "roc_auc": round(auc, 5) if auc is not None else None,
        "precision": round(precision, 5), "recall": round(recall, 5),
        "f1": round(2 * precision * recall / (precision + recall), 5) if precision + recall else 0.0,
        "confusion_matrix": {"labels": [0, 1], "rows_are": "true label", "columns_are": "predicted label",
                             "matrix": [[tn, fp], [fn, tp]]},
    }


# ---------------------------------------------------------------------------------------
# the job

def score(spark, input_path: str, run_dir: str, out_dir: str, run_date: str, conf: PipelineConf, *,
          fmt: str = "auto", vocab_dir: str | None = None, splits: Sequence[str] | None = None,
          predictor_factory: Callable[[], object] | None = None) -> dict:
    """Score ``input_path`` into ``out_dir/run_date=<run_date>``; returns the summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    check_date(run_date)
    run = check_run(run_dir, vocab_dir)
    sc = conf.score
    started = time.time()
    out = str(out_dir).rstrip("/")
    part = f"{out}/{C.RUN_DATE}={run_date}"
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(sc.arrow_batch_rows))

    phases, mark = {}, [started]

    def lap(name: str) -> None:  # where the job's time goes, in score_summary.json
        now = time.time()
        phases[name] = round(now - mark[0], 2)
        mark[0] = now

    fingerprint = input_fingerprint(input_path)
    engine, engine_reason = ("custom", "") if predictor_factory is not None else resolve_engine(
        run, sc.engine, fingerprint and fingerprint["bytes"], spark.sparkContext.defaultParallelism, sc.auto_onnx_bytes)
    if engine_reason:
        log.info("score.engine=%s: %s; the workers use %s", sc.engine, engine_reason, engine)
    if predictor_factory is None:  # reused across dates and jobs by the same Python worker
        factory, key = predictor_for(run, sc, engine)
    else:
        factory, key = predictor_factory, ("custom", uuid.uuid4().hex)
    # reads the input and counts its rows in (a raw input is parsed into a cache); beside it,
    # the engine and the model load in the Python workers (one instant task per core), so the
    # scoring tasks find them ready
    reading = {"input": lambda: read_input(spark, input_path, fmt, conf, splits)}
    if predictor_factory is None and sc.preload:
        reading["preload"] = lambda: preload_on_workers(spark, key, factory)
    got = concurrently(**reading)["input"]
    records, in_fmt, cached, rows_in = got.records, got.fmt, got.cached, got.rows_in
    lap("parse_and_preload")
    scored = None
    try:
        predict = make_udf(factory, key, sc.batch_size)
        scored_at = datetime.now(timezone.utc).replace(microsecond=0)
        good = records.filter(F.col("reason").isNull())
        cores = spark.sparkContext.defaultParallelism
        if good.rdd.getNumPartitions() < cores:  # inference dominates: give every core a share
            good = good.repartition(cores)
        # kept (without the texts) for the checks, the metrics and the drift figures, so the
        # model runs once; the labels ride along and are not written
        scored = (good.select(C.REVIEW_ID, C.LABEL, predict(C.TEXT).alias("out"))
                  .select(C.REVIEW_ID, C.LABEL, "out.*")
                  .select(C.REVIEW_ID, C.LABEL, C.PROBABILITY,
                          (F.col(C.PROBABILITY) >= sc.threshold).cast("tinyint").alias(C.PREDICTED_LABEL),
                          C.LENGTH, C.OOV)
                  .persist(StorageLevel.MEMORY_AND_DISK))
        scores = scored.select(C.REVIEW_ID, C.PROBABILITY, C.PREDICTED_LABEL, C.LENGTH, C.OOV,
                               F.lit(run.run_id).alias(C.MODEL_RUN), F.lit(run.fingerprint).alias(C.VOCAB_FINGERPRINT),
                               F.lit(scored_at).cast("timestamp").alias(C.SCORED_AT),
                               F.lit(run_date).alias(C.RUN_DATE))
        excerpt = F.expr("make_valid_utf8(cast(substring(raw, 1, 240) as string))")
        bad = records.filter(F.col("reason").isNotNull()).select(
            C.SOURCE, C.REVIEW_ID, F.col(C.ORDINAL).cast("long"), F.col("reason").alias(C.REASON),
            F.col("detail").alias(C.DETAIL), excerpt.alias(C.EXCERPT),
            F.octet_length("raw").cast("long").alias(C.RAW_BYTES))
        quarantine = f"{out}/{C.SCORES_QUARANTINE}/{C.RUN_DATE}={run_date}"

        def empty_partition() -> None:
            storage.delete(spark, part)
            storage.mkdirs(spark, part)

        t_score = time.time()
        if got.rows_checked != 0:  # a record that passed the checks is scored (the first of a duplicated id)
            scores.write.mode("overwrite").partitionBy(C.RUN_DATE).parquet(out)
        else:  # nothing to score: dynamic overwrite would leave an earlier run's rows in place
            empty_partition()
        score_seconds = time.time() - t_score
        lap("score_and_write")

        def quarantined() -> dict:  # written, then counted from what is on disk
            bad.coalesce(1).write.mode("overwrite").parquet(quarantine)
            return dict(sorted((r[C.REASON], r["n"]) for r in spark.read.schema(f"{C.REASON} string")
                               .parquet(quarantine).groupBy(C.REASON).agg(F.count(F.lit(1)).alias("n")).collect()))

        def written() -> tuple:
            return tuple(spark.read.schema(SCORE_SCHEMA).parquet(part)
                         .agg(F.count(F.lit(1)), F.count_distinct(C.REVIEW_ID)).first())

        # The quarantine write and count, the read-back of the scores, the metrics and the drift
        # figures read different data (the kept scores for the last two, no second inference):
        # each is a short Spark job or two, mostly scheduling, so they run side by side (the
        # quarantine write beside the scores write took CPU from the inference).  Nothing is
        # written under _reports until the counts reconcile.
        nothing = got.rows_checked == 0
        done = concurrently(
            quarantine=quarantined, written=written,
            metrics=lambda: {"rows": 0} if nothing else evaluate(scored.filter(F.col(C.LABEL).isNotNull())),
            watch=lambda: watch(scored, 0 if nothing else None, run, sc.drift_threshold))
        lap("checks_and_reports")
        by_reason, (n_scored, n_ids), metrics = done["quarantine"], done["written"], done["metrics"]
        n_bad = sum(by_reason.values())
        if got.rows_checked is None and n_bad == rows_in and n_scored:
            # Every row of a reviews table was quarantined (known only now): the scores write had
            # no row to write, so what the partition holds is an earlier run's; it is emptied.
            empty_partition()
            n_scored = n_ids = 0
        # the reconciliation counts what was written, not what was meant to be: the rows in
        # (counted when the input was read) = the scores + the quarantine rows on disk
        if n_scored + n_bad != rows_in:
            raise ScoreError(f"counts do not reconcile for {run_date}: {rows_in} rows in != {n_scored} scored + "
                             f"{n_bad} quarantined")
        dupes = n_scored - n_ids
        if dupes:
            raise ScoreError(f"{dupes} duplicate review_ids in {part}")
        if done["watch"].get("profile") and done["watch"]["profile"]["rows"] != n_scored:
            raise ScoreError(f"drift figures over {done['watch']['profile']['rows']} rows, {n_scored} written")
        summary = {
            "run_date": run_date, "input": str(input_path), "input_fingerprint": fingerprint,
            "format": in_fmt, "splits": list(splits or []),
            "rows_in": rows_in, "rows_scored": n_scored, "rows_quarantined": n_bad,
            "quarantined_by_reason": by_reason, "model_run": run.run_id, "model_path": run.path,
            "vocab_fingerprint": run.fingerprint, "maxlen": run.maxlen, "threshold": sc.threshold,
            "batch_size": sc.batch_size, "arrow_batch_rows": sc.arrow_batch_rows, "tf_threads": sc.tf_threads,
            "length_aware": sc.length_aware, "engine": engine, "engine_reason": engine_reason or None,
            "preload": sc.preload,
            "scored_at": scored_at.isoformat(), "output": part,
            "score_seconds": round(score_seconds, 2),
            "rows_per_second": round(n_scored / score_seconds, 1) if score_seconds else None,
        }
        reports = f"{out}/{C.SCORES_REPORTS}/{C.RUN_DATE}={run_date}"
        storage.delete(spark, f"{reports}/{C.SCORE_METRICS}")
        if metrics["rows"]:
            metrics.update(run_date=run_date, model_run=run.run_id, input=str(input_path))
            storage.write_json(spark, f"{reports}/{C.SCORE_METRICS}", metrics)
            summary["metrics"] = {k: metrics[k] for k in ("accuracy", "roc_auc", "f1")}
        summary.update(done["watch"])
        summary["check_seconds"] = done.seconds  # each of the side-by-side parts, on its own clock
        summary["phase_seconds"] = phases
        summary["seconds"] = round(time.time() - started, 2)
        storage.write_json(spark, f"{reports}/{C.SCORE_SUMMARY}", summary)
        storage.write_text(spark, f"{part}/_SUCCESS", "")
        return summary
    finally:
        for df in (scored, *cached):
            if df is not None:
                df.unpersist()


class Done(dict):
    """What :func:`concurrently` returns: each call's result by name, and ``seconds``, each
    call's own wall time."""
    seconds: dict


def concurrently(**calls: Callable[[], object]) -> Done:
    """Run each call in its own thread and wait for them all; raise the first error (in the
    order given) once every call has ended.  A SparkContext takes jobs from several threads
    and its scheduler runs their tasks side by side (Spark's job scheduling guide);
    ``InheritableThread`` gives each thread the caller's job properties (job group,
    description) and releases its JVM thread when it ends."""
    from pyspark import InheritableThread

    results, errors, seconds = Done(), {}, {}

    def run(name: str, fn: Callable[[], object]) -> None:
        t0 = time.time()
        try:
            results[name] = fn()
        except BaseException as e:  # re-raised below, in the caller's thread
            errors[name] = e
        seconds[name] = round(time.time() - t0, 2)

    threads = [InheritableThread(run, args=(name, fn), name=f"reviewpipe-{name}") for name, fn in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in calls:
        if name in errors:
            raise errors[name]
    results.seconds = {name: seconds[name] for name in calls}
    return results


def watch(written, rows: int | None, run: ModelRun, threshold: float) -> dict:
    """The figures a nightly job watches (reviewpipe.drift): this date's OOV rate, lengths and
    share predicted positive, the run's training figures beside them, the PSIs and the flag."""
    from reviewpipe import drift

    metrics_path = Path(run.path) / C.RUN_METRICS
    training = json.loads(metrics_path.read_text(encoding="utf-8")).get("data_profile") \
        if metrics_path.is_file() else None
    if not training:
        return {"profile": None, "drift": None,
                "drift_note": f"run {run.run_id} has no data_profile in metrics.json (trained before it was recorded)"}
    scored = drift.scored_profile(written, rows, training, (C.PROBABILITY, C.PREDICTED_LABEL, C.LENGTH, C.OOV))
    if not scored["rows"]:
        return {"profile": scored, "drift": None, "drift_note": "no rows scored"}
    keep = ("rows", "oov_rate", "length_quantiles", "share_positive")
    return {"profile": scored, "training_profile": {k: training[k] for k in keep},
            "drift": drift.compare(training, scored, threshold)}


def input_fingerprint(path: str) -> dict | None:
    """Names, sizes and modification times of the input's files, hashed (local paths only;
    None for other filesystems).  A date whose input changes after it was scored shows up in
    :func:`pending_dates` as changed."""
    local = storage.local_path(str(path))
    if local is None or not Path(local).exists():
        return None
    root = Path(local)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h, total = hashlib.sha256(), 0
    for f in files:
        st = f.stat()
        rel = f.name if f == root else f.relative_to(root).as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        total += st.st_size
    return {"files": len(files), "bytes": total, "sha256": h.hexdigest()}


@dataclass(frozen=True)
class Pending:
    todo: list  # (date, folder) to score now, oldest first
    new: list  # dates never scored (or not finished)
    changed: list  # dates scored from other input than the folder holds now


def pending_dates(input_root: str, out_dir: str, rescore_changed: bool = False) -> Pending:
    """Every ``date=YYYY-MM-DD`` input partition that is not scored from what it holds now.

    A date counts as scored when its ``_SUCCESS`` exists and its summary names the same input
    folder with the same fingerprint (:func:`input_fingerprint`).  A date whose input changed
    after scoring (a late file) is reported as changed, and scored again with ``rescore_changed``.
    """
    root = Path(input_root)
    if not root.is_dir():
        raise ScoreError(f"--input {input_root!r} is not a folder of date=YYYY-MM-DD partitions")
    todo, new, changed = [], [], []
    for d in sorted(root.iterdir()):
        m = re.fullmatch(r"date=(\d{4}-\d{2}-\d{2})", d.name)
        if not (m and d.is_dir()):
            continue
        day = check_date(m.group(1))
        if not (Path(out_dir) / f"{C.RUN_DATE}={day}" / "_SUCCESS").is_file():
            new.append(day)
            todo.append((day, str(d)))
            continue
        summary_path = Path(out_dir) / C.SCORES_REPORTS / f"{C.RUN_DATE}={day}" / C.SCORE_SUMMARY
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
        same_input = summary.get("input") and Path(summary["input"]).resolve() == d.resolve()
        if not (same_input and summary.get("input_fingerprint") == input_fingerprint(str(d))):
            changed.append(day)
            if rescore_changed:
                todo.append((day, str(d)))
    return Pending(todo, new, changed)
