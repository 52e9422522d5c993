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
    import pyarrow.compute as pc

    lists = tokenize_arrow(texts, spec)
    flat = pc.list_flatten(lists)
    if len(flat) == 0:
        return None
    enc = pc.dictionary_encode(flat)
    return partial_counts(enc.dictionary, enc.indices.to_numpy(), lists.offsets.to_numpy(), ordinals)


def partial_counts(dictionary, codes: np.ndarray, offsets: np.ndarray, ordinals: np.ndarray,
                   rows: np.ndarray | None = None):
    """(token, count, doc_count, first_key) of tokenized rows, from their dictionary codes.

    ``codes`` are the dictionary codes of every token of the batch, ``offsets`` its row
    offsets, ``ordinals`` the rows' corpus order; ``rows`` (a bool mask) restricts the counts
    to some rows.  ``first_key`` is the smallest ``ordinal << POS_BITS | position`` of each
    token, so rows may come in any order.  Tokens with no occurrence are left out.
    """
    import pyarrow as pa

    k = len(dictionary)
    lengths = np.diff(offsets)
    parents = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    within = np.arange(len(codes), dtype=np.int64) - offsets[:-1].astype(np.int64)[parents]
    codes = codes.astype(np.int64)
    if rows is not None:
        tok = rows[parents]
        codes, parents, within = codes[tok], parents[tok], within[tok]
    counts = np.bincount(codes, minlength=k)
    doc_counts = _doc_counts(codes, parents, k)
    first_key = np.full(k, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_key, codes,
                  (np.asarray(ordinals, np.int64)[parents] << POS_BITS) | np.minimum(within, (1 << POS_BITS) - 1))
    table = pa.table({"token": dictionary, "count": counts, "doc_count": doc_counts, "first_key": first_key})
    present = counts > 0
    return table if present.all() else table.filter(pa.array(present))


def _doc_counts(codes: np.ndarray, parents: np.ndarray, k: int) -> np.ndarray:
    """Number of distinct rows each code occurs in.

    Each (row, code) pair is packed into one unsigned integer (32 bits when row and code
    fit, else 64), sorted with NumPy's SIMD sort, and counted once at the start of each run
    of equal keys: 3x faster than a 16-bit radix sort of the codes, and 10x faster than
    hashing the pairs, on IMDB batches.
    """
    if len(codes) == 0:
        return np.zeros(k, np.int64)
    bits = max(int(k - 1).bit_length(), 1)
    dt = np.uint32 if int(parents.max()).bit_length() + bits <= 32 else np.uint64
    key = np.sort((parents.astype(dt) << dt(bits)) | codes.astype(dt))
    first = np.empty(len(key), bool)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    return np.bincount((key[first] & dt((1 << bits) - 1)).astype(np.int64), minlength=k)


def _merge(tables):
    import pyarrow as pa

    t = pa.concat_tables(tables)
    g = t.group_by("token", use_threads=False).aggregate(
        [("count", "sum"), ("doc_count", "sum"), ("first_key", "min")])
    return pa.table({"token": g["token"], "count": g["count_sum"], "doc_count": g["doc_count_sum"],
                     "first_key": g["first_key_min"]})


class PartialSum:
    """A running sum of partial-count tables (token, count, doc_count, first_key): tables are
    added ``merge_every`` at a time, so it holds the total and at most that many others."""

    def __init__(self, merge_every: int = 16):
        self.merge_every, self.total, self.pending = merge_every, None, []

    def add(self, table) -> None:
        self.pending.append(table)
        if len(self.pending) >= self.merge_every:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.total = _merge(([self.total] if self.total is not None else []) + self.pending)
            self.pending = []

    def result(self):
        """The summed table, or None when nothing was added."""
        self._flush()
        return self.total


def count_partition(batches: Iterator, spec: TokenizerSpec, merge_every: int = 16) -> Iterator:
    """mapInArrow body: map-side combine of a whole partition into one partial table."""
    summed = PartialSum(merge_every)
    for batch in batches:
        t = count_batch(batch.column(C.TEXT), batch.column(C.ORDINAL).to_numpy(zero_copy_only=False), spec)
        if t is not None:
            summed.add(t)
    merged = summed.result()
    if merged is not None:
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


def check_splits(splits: Sequence[str]) -> list[str]:
    splits = list(splits)
    bad = [s for s in splits if s not in C.VOCAB_SPLITS]
    if bad:
        raise VocabError(f"--splits {','.join(splits)}: {bad} are held out; a vocabulary is built from "
                         f"{' and/or '.join(C.VOCAB_SPLITS)} only")
    return splits


def finish_vocab(totals, spec: TokenizerSpec, conf: PipelineConf, n_docs: int, splits: Sequence[str]):
    """Summed counts (an Arrow table: token, count, doc_count, first_key) -> the ranked and
    cut vocabulary, its summary, and the artifact's bytes."""
    rows = list(zip(*(totals.column(c).to_pylist() for c in ("token", "count", "doc_count", "first_key"))))
    n_tokens = sum(r[1] for r in rows)
    ranked = rank(rows, conf.vocab.tie_break)
    kept = cut(ranked, spec, conf.vocab.num_words, conf.vocab.min_count, conf.vocab.max_doc_fraction, n_docs)
    vspec = make_spec(conf, kept, n_docs, n_tokens, splits)
    table_bytes, json_bytes = artifact_bytes(kept, vspec)
    vocab = Vocabulary([r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept], vspec)
    summary = {
        "fingerprint": vspec["fingerprint"], "splits": list(splits), "documents": n_docs, "tokens": n_tokens,
        "vocabulary_before_cut": len(ranked), "vocabulary_after_cut": len(kept), "size_with_reserved": vspec["size"],
        "token_coverage": round(sum(r[1] for r in kept) / max(n_tokens, 1), 6),
    }
    return vocab, summary, table_bytes, json_bytes


def write_artifact(spark, stage: str, table_bytes: bytes, json_bytes: bytes, summary: dict) -> None:
    storage.write_bytes(spark, f"{stage}/{C.VOCAB_TABLE}", table_bytes)
    storage.write_bytes(spark, f"{stage}/{C.VOCAB_SPEC}", json_bytes)
    storage.write_json(spark, f"{stage}/{C.VOCAB_SUMMARY}", summary)
    log.info("vocabulary: %d of %d tokens kept, coverage %.4f, val OOV %s, %.1fs", summary["vocabulary_after_cut"],
             summary["vocabulary_before_cut"], summary["token_coverage"], summary["val_oov_rate"], summary["seconds"])


def build_vocab(spark, reviews_dir: str, out_dir: str, conf: PipelineConf,
                splits: Sequence[str] | None = None) -> dict:
    """Count over ``splits`` (never val/test), rank, cut, and publish the artifact."""
    from pyspark.sql import functions as F

    started = time.time()
    splits = check_splits(splits or conf.vocab.splits)
    spec = TokenizerSpec.from_conf(conf.tokenizer)
    reviews = read_reviews(spark, reviews_dir, splits).select(C.ORDINAL, C.TEXT)
    n_docs = reviews.count()
    if n_docs == 0:
        raise VocabError(f"{reviews_dir}: no reviews in splits {splits}")
    partials = reviews.mapInArrow(lambda it: count_partition(it, spec), PARTIAL_SCHEMA)
    totals = (partials.groupBy("token")
              .agg(F.sum("count").alias("count"), F.sum("doc_count").alias("doc_count"),
                   F.min("first_key").alias("first_key")))
    # Arrow, not Row objects: ~20x faster for 100k+ tokens
    vocab, summary, table_bytes, json_bytes = finish_vocab(totals.toArrow(), spec, conf, n_docs, splits)
    summary["val_oov_rate"] = oov_rate(spark, reviews_dir, vocab)
    summary["seconds"] = round(time.time() - started, 2)
    with storage.staged_output(spark, out_dir) as stage:
        write_artifact(spark, stage, table_bytes, json_bytes, summary)
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
