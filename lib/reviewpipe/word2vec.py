"""Spark Word2Vec over train+unsup, written as vectors aligned to the vocabulary's ids.

Output folder::

    vectors.npy      float32 [vocabulary size, dim]; row i is the vector of id i
    vectors.tsv, metadata.tsv   the same rows in TensorBoard projector form
    word2vec.json    vocabulary fingerprint, settings, coverage, corpus size, timing

Reserved rows: padding (id 0) is all zeros; OOV (id 1, when the tokenizer has one) is the
mean vector of the words Word2Vec saw that are *outside* the kept vocabulary, i.e. what OOV
stands for.  Vocabulary words Word2Vec did not keep (fewer than ``min_count`` occurrences)
get small seeded random vectors and count against ``coverage``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from reviewpipe import constants as C
from reviewpipe import storage
from reviewpipe.cli import JobError
from reviewpipe.config import PipelineConf
from reviewpipe.vocab import Vocabulary, load_vocab, read_reviews

log = logging.getLogger(__name__)

W2V_SPEC = "word2vec.json"
W2V_MATRIX = "vectors.npy"
PREFIX = "word2vec:"


class PretrainedError(JobError):
    """Pretrained vectors are missing or belong to another vocabulary."""


def tokens_column(df, spec):
    """Add ``tokens`` (array<string>) with the one tokenizer (Arrow batch path)."""
    import pyarrow as pa

    from reviewpipe.tokenizer import tokenize_arrow

    from pyspark.sql.types import ArrayType, StringType

    schema = df.select(C.TEXT).schema.add("tokens", ArrayType(StringType()))

    def tok(batches):
        for b in batches:
            lists = tokenize_arrow(b.column(C.TEXT), spec)
            yield pa.RecordBatch.from_arrays([b.column(C.TEXT), lists.cast(pa.list_(pa.string()))],
                                             names=[C.TEXT, "tokens"])

    return df.select(C.TEXT).mapInArrow(tok, schema).select("tokens")


def align(vocab: Vocabulary, words: list[str], vectors: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """The [vocab.size, dim] matrix for ``vocab`` from Word2Vec's (words, vectors)."""
    dim = vectors.shape[1]
    first = vocab.tokenizer.first_word_index
    pos = {w: i for i, w in enumerate(words)}
    matrix = np.zeros((vocab.size, dim), np.float32)
    found = np.array([pos.get(t, -1) for t in vocab.tokens], np.int64)
    hit = found >= 0
    matrix[first:first + len(vocab.tokens)][hit] = vectors[found[hit]]
    rng = np.random.default_rng(seed)
    scale = float(vectors.std()) if vectors.size else 0.1
    n_miss = int((~hit).sum())
    matrix[first:first + len(vocab.tokens)][~hit] = rng.normal(0, scale, (n_miss, dim)).astype(np.float32)
    outside = np.ones(len(words), bool)
    outside[found[hit]] = False
    if vocab.tokenizer.oov_token:
        matrix[C.OOV_INDEX] = vectors[outside].mean(axis=0) if outside.any() else 0.0
    return matrix, {"coverage": round(float(hit.mean()) if len(hit) else 0.0, 6),
                    "vocab_words": len(vocab.tokens), "with_vector": int(hit.sum()), "random_init": n_miss,
                    "oov_row": "mean of words outside the vocabulary" if vocab.tokenizer.oov_token else None,
                    "outside_vocab_words": int(outside.sum())}


def pretrain(spark, reviews_dir: str, vocab_dir: str, out_dir: str, conf: PipelineConf) -> dict:
    from pyspark.ml.feature import Word2Vec

    started = time.time()
    wc = conf.word2vec
    vocab = load_vocab(spark, vocab_dir)
    reviews = read_reviews(spark, reviews_dir, wc.splits)
    n_docs = reviews.count()  # from the Parquet metadata; tokenizing happens once, inside fit
    docs = tokens_column(reviews, vocab.tokenizer)
    partitions = wc.partitions or spark.sparkContext.defaultParallelism
    w2v = Word2Vec(vectorSize=wc.dim, windowSize=wc.window, minCount=wc.min_count, maxIter=wc.iterations,
                   numPartitions=partitions, stepSize=wc.step_size, seed=wc.seed, inputCol="tokens")
    model = w2v.fit(docs)
    rows = model.getVectors().collect()
    words = [r["word"] for r in rows]
    vectors = np.array([r["vector"].toArray() for r in rows], np.float32).reshape(len(rows), wc.dim)
    matrix, cover = align(vocab, words, vectors, wc.seed)
    from reviewpipe.embeddings import export_projector

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    out = Path(storage.local_path(out_dir) or out_dir)
    np.save(out / W2V_MATRIX, matrix)
    export_projector(matrix, vocab, out)
    spec = {"vocab_fingerprint": vocab.fingerprint, "dim": wc.dim, "window": wc.window,
            "min_count": wc.min_count, "iterations": wc.iterations, "partitions": partitions,
            "step_size": wc.step_size, "seed": wc.seed, "splits": list(wc.splits),
            "documents": n_docs, "word2vec_vocabulary": len(words), **cover,
            "seconds": round(time.time() - started, 1)}
    (out / W2V_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("word2vec: %d-d vectors for %d of %d vocabulary words (coverage %.4f) in %.0fs",
             wc.dim, cover["with_vector"], cover["vocab_words"], cover["coverage"], spec["seconds"])
    return spec


def load_pretrained(init: str, vocab: Vocabulary) -> tuple[np.ndarray, dict]:
    """The aligned matrix for ``model.embedding_init = word2vec:<folder>``; refuses another vocabulary."""
    folder = Path(init[len(PREFIX):])
    spec_path = folder / W2V_SPEC
    if not spec_path.is_file():
        raise PretrainedError(f"model.embedding_init: no {W2V_SPEC} in {folder}; run make pretrain first")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if spec.get("vocab_fingerprint") != vocab.fingerprint:
        raise PretrainedError(
            f"model.embedding_init: the vectors in {folder} are aligned to vocabulary "
            f"{str(spec.get('vocab_fingerprint'))[:12]}…, but training uses {vocab.fingerprint[:12]}…; "
            f"re-run make pretrain with this vocabulary")
    matrix = np.load(folder / W2V_MATRIX)
    if matrix.shape[0] != vocab.size:
        raise PretrainedError(f"{folder / W2V_MATRIX} has {matrix.shape[0]} rows, the vocabulary {vocab.size}")
    return matrix, spec
