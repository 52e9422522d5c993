"""An n-gram teacher for pseudo-labels: NB-weighted logistic regression over word 1..n-grams.

NBSVM (Wang & Manning, 2012) with the logistic loss: each binary n-gram feature is scaled by
its naive-Bayes log-count ratio ``r = log((alpha + pos counts) / |.|_1) - log((alpha + neg
counts) / |.|_1)`` and an L2 logistic regression is fitted on the scaled features.  It reads
the whole review (no maxlen, no vocabulary cap), and it errs on other reviews than the LSTMs
do, so mixed into the teacher of ``make pseudo-label`` it makes the labels more accurate
(``pseudo.ngram_share``).  It is a teacher, never the served model.

Words come from the pipeline's tokenizer (``[tokenizer]``); n-grams are hashed into
``2 ** ngram.hash_bits`` buckets (scikit-learn's ``HashingVectorizer``), so the model is one
weight vector ``r * coef`` and a bias, with no n-gram dictionary to store.

Teacher folder (``make train-ngram``)::

    ngram.json         what was trained on (reviews, splits, rows), settings, tokenizer, metrics
    ngram.npz          the nonzero weights (bucket, value) and the bias
    predictions.parquet  review_id, split, probability for every review outside ngram.splits

``make pseudo-label`` looks a teacher's probabilities up by review id in
``predictions.parquet``; :meth:`NgramModel.predict` scores new texts.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from reviewpipe import constants as C
from reviewpipe import storage
from reviewpipe.cli import JobError
from reviewpipe.config import PipelineConf
from reviewpipe.tokenizer import TokenizerSpec, tokenize

log = logging.getLogger(__name__)

PREDICT_ROWS = 8192  # reviews per feature matrix when predicting: memory stays flat as the corpus grows


class NgramError(JobError):
    """The n-gram teacher cannot be trained or read; the message says why."""


@dataclass(frozen=True)
class NgramModel:
    """``p = sigmoid(x . weights + bias)`` over binary hashed n-gram features ``x``."""

    spec: TokenizerSpec
    ngram_max: int
    hash_bits: int
    weights: np.ndarray  # float32 [2 ** hash_bits]: NB ratio times regression coefficient
    bias: float

    def features(self, texts):
        """Binary CSR matrix [len(texts), 2 ** hash_bits] of the texts' hashed 1..n-grams."""
        return vectorizer(self.spec, self.ngram_max, self.hash_bits).transform(texts)

    def predict(self, texts) -> np.ndarray:
        """Probability of a positive review, float64 [len(texts)]."""
        z = self.features(texts) @ self.weights.astype(np.float64) + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, folder: Path) -> None:
        nz = np.flatnonzero(self.weights).astype(np.int64)
        np.savez_compressed(folder / C.NGRAM_WEIGHTS, index=nz, value=self.weights[nz], bias=np.float64(self.bias))

    @classmethod
    def load(cls, folder: str | Path) -> "NgramModel":
        folder = Path(folder)
        meta = read_meta(folder)
        with np.load(folder / C.NGRAM_WEIGHTS) as z:
            weights = np.zeros(2 ** int(meta["ngram"]["hash_bits"]), np.float32)
            weights[z["index"]] = z["value"]
            bias = float(z["bias"])
        return cls(TokenizerSpec.from_dict(meta["tokenizer"]), int(meta["ngram"]["ngram_max"]),
                   int(meta["ngram"]["hash_bits"]), weights, bias)


def vectorizer(spec: TokenizerSpec, ngram_max: int, hash_bits: int):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(tokenizer=lambda text: tokenize(text, spec), preprocessor=None, lowercase=False,
                             token_pattern=None, ngram_range=(1, ngram_max), n_features=2 ** hash_bits,
                             alternate_sign=False, binary=True, norm=None, dtype=np.float32)


def nb_ratio(x, y: np.ndarray, alpha: float) -> np.ndarray:
    """Naive-Bayes log-count ratio of each feature column (float32)."""
    pos = alpha + np.asarray(x[y == 1].sum(axis=0), np.float64).ravel()
    neg = alpha + np.asarray(x[y == 0].sum(axis=0), np.float64).ravel()
    return (np.log(pos / pos.sum()) - np.log(neg / neg.sum())).astype(np.float32)


def bag_features(ids: np.ndarray, orders: int, buckets: int, batch_rows: int = 2048):
    """``ids`` [n, t] as the CSR matrix [n, buckets] that :class:`reviewpipe.model.NgramBag`
    weighs: each row's count of every n-gram hash over the square root of its n-gram count."""
    from scipy import sparse

    from reviewpipe.model import ngram_hashes

    rows, cols = [], []
    for start in range(0, len(ids), batch_rows):
        hashed = ngram_hashes(ids[start:start + batch_rows], orders, buckets)
        h = np.concatenate([np.asarray(b) for b, _ in hashed], axis=1)
        r, c = np.nonzero(np.concatenate([np.asarray(v) for _, v in hashed], axis=1))
        rows.append(r + start)
        cols.append(h[r, c])
    rows, cols = np.concatenate([np.zeros(0, np.int64), *rows]), np.concatenate([np.zeros(0, np.int64), *cols])
    x = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(ids), buckets))
    x.sum_duplicates()
    per_row = np.asarray(x.sum(axis=1), np.float64).ravel()
    return sparse.diags((1 / np.sqrt(np.maximum(per_row, 1))).astype(np.float32)) @ x


def fit_bag(ids: np.ndarray, labels: np.ndarray, orders: int, buckets: int, c: float,
            alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """(weights [buckets] float32, bias): an NB-weighted logistic regression in the feature
    space of :class:`reviewpipe.model.NgramBag` (``model.wide_init=nb``), so that the bag with
    these weights plus the bias gives the regression's logit.  ``labels`` in [0, 1] are cut at
    0.5; the log-count ratios count each row's n-grams once, as :func:`fit` does."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    y = (np.asarray(labels) >= 0.5).astype(np.int64)
    if set(np.unique(y)) != {0, 1}:
        raise NgramError(f"model.wide_init=nb needs both labels among the training rows, got {sorted(set(y.tolist()))}")
    x = bag_features(ids, orders, buckets)
    present = x.copy()
    present.data[:] = 1
    r = nb_ratio(present, y, alpha)
    lr = LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=1000, random_state=0)  # same on every worker
    lr.fit(x @ sparse.diags(r), y)
    return (r * lr.coef_.ravel()).astype(np.float32), float(lr.intercept_[0])


def fit_fold_bags(ids: np.ndarray, labels: np.ndarray, orders: int, buckets: int, c: float,
                  folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tables [folds, buckets] float32, biases [folds], each row's fold): table ``k`` is
    :func:`fit_bag` on the rows outside fold ``k`` (:func:`reviewpipe.model.row_fold`), so a
    row's fold table scores it as the full regression scores rows it never saw."""
    from reviewpipe.model import row_fold

    fold = np.asarray(row_fold(ids, folds))
    fits = [fit_bag(ids[fold != k], labels[fold != k], orders, buckets, c) for k in range(folds)]
    return np.stack([w for w, _ in fits]), np.array([b for _, b in fits], np.float32), fold


def fit(texts, labels: np.ndarray, spec: TokenizerSpec, conf: PipelineConf) -> NgramModel:
    """Fit NB-weighted logistic regression on ``texts`` with 0/1 ``labels``."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    nc = conf.ngram
    y = np.asarray(labels).astype(np.int64)
    if set(np.unique(y)) != {0, 1}:
        raise NgramError(f"the n-gram teacher needs both labels among its training rows, got {sorted(set(y.tolist()))}")
    x = vectorizer(spec, nc.ngram_max, nc.hash_bits).transform(texts)
    r = nb_ratio(x, y, nc.alpha)
    lr = LogisticRegression(C=nc.c, solver="liblinear", dual=True, max_iter=nc.max_iter)
    lr.fit(x @ sparse.diags(r), y)
    weights = (r * lr.coef_.ravel()).astype(np.float32)
    return NgramModel(spec, nc.ngram_max, nc.hash_bits, weights, float(lr.intercept_[0]))


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / C.NGRAM_META
    if not path.is_file():
        raise NgramError(f"{folder}: no {C.NGRAM_META}; give a folder written by make train-ngram")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("status") != "complete":
        raise NgramError(f"{folder}: the n-gram teacher is {meta.get('status')!r}, not complete")
    return meta


def is_teacher(folder: str | Path) -> bool:
    return (Path(folder) / C.NGRAM_META).is_file()


def _read_reviews(reviews: str):
    import pyarrow.dataset as ds

    cols = [C.REVIEW_ID, C.SPLIT, C.LABEL, C.TEXT]
    t = ds.dataset(reviews, format="parquet", partitioning="hive").to_table(columns=cols)
    return t.set_column(1, C.SPLIT, t.column(C.SPLIT).cast("string"))


def train_teacher(reviews: str, out_dir: str, conf: PipelineConf) -> dict:
    """Fit on ``ngram.splits`` of the ingest's reviews table; predict every other review."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    started = time.perf_counter()
    nc = conf.ngram
    if not Path(reviews).is_dir():
        raise NgramError(f"--reviews {reviews}: no such folder (the ingest job's reviews/ output)")
    table = _read_reviews(reviews)
    in_fit = pc.is_in(table.column(C.SPLIT), pa.array(nc.splits))
    labelled = pc.and_(in_fit, pc.is_valid(table.column(C.LABEL)))
    fit_rows = table.filter(labelled)
    if not fit_rows.num_rows:
        raise NgramError(f"--reviews {reviews} has no labelled rows in ngram.splits {nc.splits}")
    spec = TokenizerSpec.from_conf(conf.tokenizer)
    t0 = time.perf_counter()
    model = fit(fit_rows.column(C.TEXT).to_pylist(), fit_rows.column(C.LABEL).to_numpy(), spec, conf)
    fit_s = time.perf_counter() - t0
    rest = table.filter(pc.invert(in_fit))
    t0 = time.perf_counter()
    text = rest.column(C.TEXT)
    probs = np.concatenate([np.zeros(0)] + [model.predict(text.slice(i, PREDICT_ROWS).to_pylist())
                                            for i in range(0, rest.num_rows, PREDICT_ROWS)])
    predict_s = time.perf_counter() - t0
    preds = pa.table({C.REVIEW_ID: rest.column(C.REVIEW_ID), C.SPLIT: rest.column(C.SPLIT),
                      C.PROBABILITY: pa.array(probs.astype(np.float32), pa.float32())})
    counts = {s: int(n) for s, n in zip(*np.unique(table.column(C.SPLIT).to_numpy(zero_copy_only=False),
                                                   return_counts=True))}
    metrics = {"fit_rows": fit_rows.num_rows, "unlabelled_fit_rows_skipped": int(pc.sum(in_fit).as_py() or 0)
               - fit_rows.num_rows, "nonzero_weights": int(np.count_nonzero(model.weights)),
               "fit_seconds": round(fit_s, 1), "predict_seconds": round(predict_s, 1),
               "predict_rows_per_s": round(rest.num_rows / predict_s) if predict_s > 0 and rest.num_rows else None}
    metrics.update(_val_metrics(rest, probs))
    meta = {"status": "complete", "kind": "ngram", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reviews": str(Path(reviews).resolve()), "rows": counts, "tokenizer": spec.to_dict(),
            "ngram": asdict(nc), "metrics": metrics, "seconds": round(time.perf_counter() - started, 1)}
    with storage.staged_local(Path(out_dir)) as stage:
        model.save(stage)
        pq.write_table(preds, stage / C.NGRAM_PREDICTIONS)
        (stage / C.NGRAM_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("n-gram teacher: fitted on %d rows in %.1f s; val accuracy %s; %d predictions in %.1f s",
             fit_rows.num_rows, fit_s, metrics.get("val_accuracy"), rest.num_rows, predict_s)
    return meta


def _val_metrics(rest, probs: np.ndarray) -> dict:
    """Accuracy, ROC AUC and log loss on the labelled val rows among the predictions."""
    split = rest.column(C.SPLIT).to_numpy(zero_copy_only=False)
    label = rest.column(C.LABEL).to_numpy(zero_copy_only=False)
    m = (split == C.VAL) & ~np.isnan(label.astype(np.float64))
    if not m.any():
        return {}
    from sklearn.metrics import log_loss, roc_auc_score

    y, p = label[m].astype(np.int64), probs[m]
    out = {"val_rows": int(m.sum()), "val_accuracy": round(float(((p >= 0.5) == (y == 1)).mean()), 5),
           "val_loss": round(float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])), 5)}
    if len(set(y.tolist())) == 2:
        out["val_auc"] = round(float(roc_auc_score(y, p)), 5)
    return out


class PredictionLookup:
    """A teacher folder's probabilities, looked up by review id (see ``make pseudo-label``)."""

    def __init__(self, folder: str | Path):
        import pandas as pd
        import pyarrow.parquet as pq

        self.folder = Path(folder)
        self.meta = read_meta(folder)
        t = pq.read_table(self.folder / C.NGRAM_PREDICTIONS, columns=[C.REVIEW_ID, C.PROBABILITY])
        self._index = pd.Index(t.column(C.REVIEW_ID).to_pylist())
        self._probs = t.column(C.PROBABILITY).to_numpy().astype(np.float64)

    def __call__(self, review_ids) -> np.ndarray:
        pos = self._index.get_indexer(review_ids)
        if (pos < 0).any():
            missing = np.asarray(review_ids, dtype=object)[pos < 0]
            raise NgramError(f"n-gram teacher {self.folder} has no prediction for {len(missing)} of {len(pos)} "
                             f"rows (first: {missing[0]!r}); it predicts the reviews outside "
                             f"{self.meta['ngram']['splits']} of {self.meta['reviews']}, so train it on the same "
                             f"ingest as these shards")
        return self._probs[pos]
