"""The corpus-wide vocabulary: counting in Spark, ranking and the artifact.

Ranking: term count descending, ties broken by ``tie_break``:

``first_seen`` (default; Keras order)
    first appearance in corpus order: the record's ``ordinal``, then the position in the
    record.  This reproduces legacy Keras ``Tokenizer.word_index`` exactly.
``token``
    the token's code-point order.

Indices: 0 is padding; with an OOV token it takes 1 and words start at 2, otherwise words
start at 1.  ``num_words`` has Keras semantics: ids ``< num_words`` are kept, so with OOV
the vocabulary holds ``num_words - 2`` words.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from reviewpipe import constants as C
from reviewpipe import storage
from reviewpipe.config import PipelineConf
from reviewpipe.tokenizer import TokenizerSpec, tokenize_arrow

log = logging.getLogger(__name__)

POS_BITS = 24  # tie-break key = ordinal << 24 | position (positions past 16M are clipped)
PARTIAL_SCHEMA = "token string, count long, doc_count long, first_key long"


class VocabError(ValueError):
    """The vocabulary artifact is missing, inconsistent or does not match."""


@dataclass(frozen=True)
class Vocabulary:
    """A loaded vocabulary artifact: tokens in index order plus the spec."""

    tokens: list[str]  # tokens[i] has index spec.first_word_index + i
    counts: list[int]
    doc_counts: list[int]
    spec: dict  # the vocab.json content

    @property
    def tokenizer(self) -> TokenizerSpec:
        return TokenizerSpec.from_dict(self.spec["tokenizer"])

    @property
    def fingerprint(self) -> str:
        return self.spec["fingerprint"]

    @property
    def size(self) -> int:
        """Number of ids, reserved ones included (the Embedding's input_dim)."""
        return self.spec["size"]

    def word_index(self) -> dict[str, int]:
        first = self.tokenizer.first_word_index
        out = {t: first + i for i, t in enumerate(self.tokens)}
        if self.tokenizer.oov_token:
            out.setdefault(self.tokenizer.oov_token, C.OOV_INDEX)
        return out

    def index_docs(self) -> dict[int, int]:
        first = self.tokenizer.first_word_index
        return {first + i: d for i, d in enumerate(self.doc_counts)}


# ---------------------------------------------------------------------------------------
# counting (executor side)

def count_batch(texts, ordinals: np.ndarray, spec: TokenizerSpec):
    """Partial counts of one Arrow batch: token, count, doc_count, first_key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    order = np.argsort(ordinals, kind="stable")  # flat token order == (ordinal, position) order
    texts = texts.take(pa.array(order))
    ordinals = ordinals[order]
    lists = tokenize_arrow(texts, spec)
    flat = pc.list_flatten(lists)
    if len(flat) == 0:
        return None
    parents = pc.list_parent_indices(lists).to_numpy()
    enc = pc.dictionary_encode(flat)
    idx = enc.indices.to_numpy().astype(np.int64)
    k = len(enc.dictionary)
    counts = np.bincount(idx, minlength=k)
    doc_pairs = pc.unique(pa.array(parents.astype(np.int64) * k + idx)).to_numpy()  # hash, not sort
    doc_counts = np.bincount(doc_pairs % k, minlength=k)
    # dictionary_encode numbers values in order of first appearance, so value i's first
    # occurrence is where the running maximum of idx first reaches i.
    first_pos = np.flatnonzero(np.r_[True, idx[1:] > np.maximum.accumulate(idx)[:-1]])
    offsets = lists.offsets.to_numpy()
    row = parents[first_pos]
    within = np.minimum(first_pos - offsets[row], (1 << POS_BITS) - 1)
    first_key = (ordinals[row].astype(np.int64) << POS_BITS) | within
    return pa.table({"token": enc.dictionary, "count": counts, "doc_count": doc_counts, "first_key": first_key})


def _merge(tables):
    import pyarrow as pa

    t = pa.concat_tables(tables)
    g = t.group_by("token", use_threads=False).aggregate(
        [("count", "sum"), ("doc_count", "sum"), ("first_key", "min")])
    return pa.table({"token": g["token"], "count": g["count_sum"], "doc_count": g["doc_count_sum"],
                     "first_key": g["first_key_min"]})


def count_partition(batches: Iterator, spec: TokenizerSpec, merge_every: int = 16) -> Iterator:
    """mapInArrow body: map-side combine of a whole partition into one partial table."""
    pending, merged = [], None
    for batch in batches:
        t = count_batch(batch.column(C.TEXT), batch.column(C.ORDINAL).to_numpy(zero_copy_only=False), spec)
        if t is not None:
            pending.append(t)
        if len(pending) >= merge_every:
            merged = _merge(([merged] if merged is not None else []) + pending)
            pending = []
    if pending or merged is not None:
        merged = _merge(([merged] if merged is not None else []) + pending)
        yield from merged.cast(_partial_arrow_schema()).to_batches(max_chunksize=65536)


def _partial_arrow_schema():
    import pyarrow as pa

    return pa.schema([("token", pa.string()), ("count", pa.int64()), ("doc_count", pa.int64()),
                      ("first_key", pa.int64())])


# ---------------------------------------------------------------------------------------
# ranking and the artifact (driver side, pure Python)

def rank(rows: Sequence[tuple[str, int, int, int]], tie_break: str) -> list[tuple[str, int, int, int]]:
    """Order (token, count, doc_count, first_key) rows: count desc, then the tie-break."""
    if tie_break == "first_seen":
        return sorted(rows, key=lambda r: (-r[1], r[3]))
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def cut(ranked, spec: TokenizerSpec, num_words: int, min_count: int, max_doc_fraction: float,
        n_docs: int):
    """Apply min_count, max_doc_fraction and num_words (Keras: keep ids < num_words)."""
    kept = [r for r in ranked if r[1] >= min_count and (max_doc_fraction >= 1.0 or r[2] <= max_doc_fraction * n_docs)]
    if spec.oov_token:
        kept = [r for r in kept if r[0] != spec.oov_token]
    if num_words:
        kept = kept[: max(0, num_words - spec.first_word_index)]
    return kept


def fingerprint(spec: dict, tokens: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in spec.items() if k != "fingerprint"}, sort_keys=True).encode())
    for t in tokens:
        h.update(b"\n")
        h.update(t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def artifact_bytes(kept, spec: dict) -> tuple[bytes, bytes]:
    """(vocab.parquet bytes, vocab.json bytes); deterministic for the same input."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = TokenizerSpec.from_dict(spec["tokenizer"]).first_word_index
    table = pa.table({
        C.TOKEN: pa.array([r[0] for r in kept], pa.string()),
        C.INDEX: pa.array(range(first, first + len(kept)), pa.int32()),
        C.COUNT: pa.array([r[1] for r in kept], pa.int64()),
        C.DOC_COUNT: pa.array([r[2] for r in kept], pa.int64()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue(), (json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def make_spec(conf: PipelineConf, kept, n_docs: int, n_tokens: int, splits: Sequence[str]) -> dict:
    tok = TokenizerSpec.from_conf(conf.tokenizer)
    spec = {
        "tokenizer": tok.to_dict(),
        "num_words": conf.vocab.num_words,
        "min_count": conf.vocab.min_count,
        "max_doc_fraction": conf.vocab.max_doc_fraction,
        "tie_break": conf.vocab.tie_break,
        "reserved": {"padding": C.PAD_INDEX, **({"oov": C.OOV_INDEX} if tok.oov_token else {})},
        "words": len(kept),
        "size": tok.first_word_index + len(kept),
        "splits": list(splits),
        "corpus": {"documents": n_docs, "tokens": n_tokens},
    }
    spec["fingerprint"] = fingerprint(spec, [r[0] for r in kept])
    return spec


def load_vocab(spark_or_none, vocab_dir: str) -> Vocabulary:
    """Load and verify an artifact (the fingerprint is recomputed from its contents)."""
    import pyarrow.parquet as pq

    try:
        if spark_or_none is not None:
            spec = storage.read_json(spark_or_none, f"{vocab_dir}/{C.VOCAB_SPEC}")
        else:
            with open(f"{vocab_dir}/{C.VOCAB_SPEC}", encoding="utf-8") as f:
                spec = json.load(f)
        table = pq.read_table(f"{vocab_dir}/{C.VOCAB_TABLE}".removeprefix("file:"))
    except (FileNotFoundError, OSError, json.JSONDecodeError) as e:
        raise VocabError(f"no readable vocabulary artifact at {vocab_dir!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); build one with make vocab") from e
    except Exception as e:  # py4j errors from the Hadoop filesystem
        if type(e).__name__ != "Py4JJavaError":
            raise
        raise VocabError(f"no readable vocabulary artifact at {vocab_dir!r}; build one with make vocab") from e
    tokens = table.column(C.TOKEN).to_pylist()
    if fingerprint(spec, tokens) != spec.get("fingerprint"):
        raise VocabError(f"{vocab_dir}: vocab.json fingerprint does not match its tokens; the artifact is corrupt")
    return Vocabulary(tokens, table.column(C.COUNT).to_pylist(), table.column(C.DOC_COUNT).to_pylist(), spec)


# ---------------------------------------------------------------------------------------
# the Spark job

def read_reviews(spark, reviews_dir: str, splits: Sequence[str]):
    from pyspark.sql import functions as F

    df = spark.read.parquet(reviews_dir)
    return df.filter(F.col(C.SPLIT).isin(list(splits)))


def build_vocab(spark, reviews_dir: str, out_dir: str, conf: PipelineConf,
                splits: Sequence[str] | None = None) -> dict:
    """Count over ``splits`` (never val/test), rank, cut, and publish the artifact."""
    from pyspark.sql import functions as F

    started = time.time()
    splits = list(splits or conf.vocab.splits)
    bad = [s for s in splits if s not in C.VOCAB_SPLITS]
    if bad:
        raise VocabError(f"--splits {','.join(splits)}: {bad} are held out; a vocabulary is built from "
                         f"{' and/or '.join(C.VOCAB_SPLITS)} only")
    spec = TokenizerSpec.from_conf(conf.tokenizer)
    reviews = read_reviews(spark, reviews_dir, splits).select(C.ORDINAL, C.TEXT)
    n_docs = reviews.count()
    if n_docs == 0:
        raise VocabError(f"{reviews_dir}: no reviews in splits {splits}")
    partials = reviews.mapInArrow(lambda it: count_partition(it, spec), PARTIAL_SCHEMA)
    totals = (partials.groupBy("token")
              .agg(F.sum("count").alias("count"), F.sum("doc_count").alias("doc_count"),
                   F.min("first_key").alias("first_key")))
    table = totals.toArrow()  # Arrow, not Row objects: ~20x faster for 100k+ tokens
    rows = list(zip(*(table.column(c).to_pylist() for c in ("token", "count", "doc_count", "first_key"))))
    n_tokens = sum(r[1] for r in rows)
    ranked = rank(rows, conf.vocab.tie_break)
    kept = cut(ranked, spec, conf.vocab.num_words, conf.vocab.min_count, conf.vocab.max_doc_fraction, n_docs)
    vspec = make_spec(conf, kept, n_docs, n_tokens, splits)
    table_bytes, json_bytes = artifact_bytes(kept, vspec)
    vocab = Vocabulary([r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept], vspec)
    summary = {
        "fingerprint": vspec["fingerprint"], "splits": splits, "documents": n_docs, "tokens": n_tokens,
        "vocabulary_before_cut": len(ranked), "vocabulary_after_cut": len(kept), "size_with_reserved": vspec["size"],
        "token_coverage": round(sum(r[1] for r in kept) / max(n_tokens, 1), 6),
    }
    summary["val_oov_rate"] = oov_rate(spark, reviews_dir, vocab)
    summary["seconds"] = round(time.time() - started, 2)
    with storage.staged_output(spark, out_dir) as stage:
        storage.write_bytes(spark, f"{stage}/{C.VOCAB_TABLE}", table_bytes)
        storage.write_bytes(spark, f"{stage}/{C.VOCAB_SPEC}", json_bytes)
        storage.write_json(spark, f"{stage}/{C.VOCAB_SUMMARY}", summary)
    log.info("vocabulary: %d of %d tokens kept, coverage %.4f, val OOV %s, %.1fs", len(kept), len(ranked),
             summary["token_coverage"], summary["val_oov_rate"], summary["seconds"])
    return summary


def oov_rate(spark, reviews_dir: str, vocab: Vocabulary) -> float | None:
    """Fraction of val tokens that are not in the vocabulary (None without a val split)."""
    from pyspark.sql import functions as F

    val = read_reviews(spark, reviews_dir, [C.VAL]).select(C.TEXT)
    tokens = vocab.tokens
    spec = vocab.tokenizer

    def count(batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        value_set = pa.array(tokens, pa.string())
        for b in batches:
            flat = pc.list_flatten(tokenize_arrow(b.column(C.TEXT), spec))
            found = pc.is_in(flat, value_set=value_set)
            yield pa.RecordBatch.from_pydict({"n": [len(flat)], "oov": [len(flat) - pc.sum(found).as_py() if len(flat) else 0]})

    agg = val.mapInArrow(count, "n long, oov long").agg(F.sum("n"), F.sum("oov")).first()
    if not agg[0]:
        return None
    return round(agg[1] / agg[0], 6)
