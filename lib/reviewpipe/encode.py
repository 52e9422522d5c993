"""Encode reviews into fixed-length int32 id sequences (Parquet shards + ``_manifest.json``).

Keras semantics: ``texts_to_sequences`` (unknown words -> OOV index 1, or dropped when the
vocabulary has no OOV token) then ``pad_sequences`` with value 0.  Defaults differ from
``pad_sequences``' pre/pre on purpose: ``padding="post"`` keeps masks right-padded (the
cuDNN kernel's requirement) and ``truncating="pre"`` keeps the end of long reviews.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Iterator, Sequence

import numpy as np

from reviewpipe import constants as C
from reviewpipe import matrix, storage
from reviewpipe.config import EncodeConf, PipelineConf
from reviewpipe.tokenizer import TokenizerSpec, pad_flat, tokenize_arrow
from reviewpipe.vocab import Vocabulary, load_vocab

log = logging.getLogger(__name__)

SHARD_SCHEMA = "review_id string, label tinyint, ids array<int>, length int, oov int"
MATRIX_SCHEMA = "matrix struct<size:int,indices:array<int>,values:array<float>>"


class EncodeError(ValueError):
    """Encoding cannot proceed (fingerprint mismatch, bad input)."""


def sequences(texts, tokens: Sequence[str], spec: TokenizerSpec):
    """Keras ``texts_to_sequences`` over an Arrow string array, vectorised.

    Returns (flat ids, per-row lengths, per-row OOV counts).  Unknown words map to the OOV
    index, or are dropped (and still counted in ``oov``) when the spec has no OOV token.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    lists = tokenize_arrow(texts, spec)
    flat = pc.list_flatten(lists)
    n = len(lists)
    lengths = np.diff(lists.offsets.to_numpy()).astype(np.int64)
    if len(flat) == 0:
        return np.zeros(0, np.int32), lengths, np.zeros(n, np.int64)
    pos = pc.index_in(flat, value_set=pa.array(tokens, pa.string()))
    known = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    values = pc.fill_null(pos, -1).to_numpy().astype(np.int64) + spec.first_word_index
    oov = np.bincount(np.repeat(np.arange(n), lengths)[~known], minlength=n)
    if spec.oov_token:
        values[~known] = C.OOV_INDEX
    else:
        values = values[known]
        lengths = lengths - oov
    return values.astype(np.int32), lengths, oov


def encode_partition(batches: Iterator, tokens_bc, spec: TokenizerSpec, enc: EncodeConf,
                     matrix_args: dict | None) -> Iterator:
    """mapInArrow body: reviews -> review_id, split, ordinal, label, ids, length, oov [, matrix]."""
    import pyarrow as pa

    tokens = tokens_bc.value
    for batch in batches:
        values, lengths, oov = sequences(batch.column(C.TEXT), tokens, spec)
        ids = pad_flat(values, lengths, enc.maxlen, enc.padding, enc.truncating)
        n = len(lengths)
        ids_arr = pa.ListArray.from_arrays(pa.array(np.arange(0, n * enc.maxlen + 1, enc.maxlen, dtype=np.int32)),
                                           pa.array(ids.ravel(), pa.int32()))
        cols = {C.REVIEW_ID: batch.column(C.REVIEW_ID), C.SPLIT: batch.column(C.SPLIT),
                C.ORDINAL: batch.column(C.ORDINAL), C.LABEL: batch.column(C.LABEL), C.IDS: ids_arr,
                C.LENGTH: pa.array(lengths, pa.int32()), C.OOV: pa.array(oov, pa.int32())}
        if matrix_args is not None:
            cols[C.MATRIX] = matrix.sparse_rows_arrow(values, lengths, **matrix_args)
        yield pa.RecordBatch.from_pydict(cols)


def read_manifest(spark, shards_dir: str) -> dict | None:
    path = f"{shards_dir}/{C.MANIFEST}"
    return storage.read_json(spark, path) if storage.exists(spark, path) else None


def encode(spark, reviews_dir: str, vocab_dir: str, out_dir: str, conf: PipelineConf,
           splits: Sequence[str] | None = None) -> dict:
    """Encode every split of ``reviews_dir`` with the vocabulary and publish shards + manifest."""
    from pyspark.sql import functions as F

    started = time.time()
    enc = conf.encode
    vocab = load_vocab(spark, vocab_dir)
    existing = read_manifest(spark, out_dir) if storage.exists(spark, out_dir) else None
    if existing is not None and existing.get("vocab_fingerprint") != vocab.fingerprint:
        raise EncodeError(
            f"{out_dir} holds shards encoded with vocabulary {existing.get('vocab_fingerprint', '?')[:12]}…, "
            f"but {vocab_dir} is {vocab.fingerprint[:12]}…; refusing to mix them. Remove {out_dir} or "
            f"choose another --output.")
    spec = vocab.tokenizer
    reviews = spark.read.parquet(reviews_dir)
    if splits:
        reviews = reviews.filter(F.col(C.SPLIT).isin(list(splits)))
    reviews = reviews.select(C.REVIEW_ID, C.SPLIT, C.ORDINAL, C.LABEL, C.TEXT)
    tokens_bc = spark.sparkContext.broadcast(vocab.tokens)
    matrix_args = None
    schema = "review_id string, split string, ordinal long, label tinyint, ids array<int>, length int, oov int"
    if enc.matrix_mode:
        matrix_args = {"mode": enc.matrix_mode, "num_words": vocab.size,
                       "index_docs": vocab.index_docs(), "document_count": vocab.spec["corpus"]["documents"]}
        schema += ", " + MATRIX_SCHEMA
    counts = {r[C.SPLIT]: r["n"] for r in reviews.groupBy(C.SPLIT).agg(F.count(F.lit(1)).alias("n")).collect()}
    total = sum(counts.values())
    n_files = max(spark.sparkContext.defaultParallelism,
                  sum(math.ceil(n / enc.rows_per_file) for n in counts.values()))
    # Range-partition the *input*: Spark's sampling job then reads only split/ordinal
    # instead of running the whole encode a second time to find the range bounds.
    encoded = (reviews.repartitionByRange(n_files, C.SPLIT, C.ORDINAL)
               .mapInArrow(lambda it: encode_partition(it, tokens_bc, spec, enc, matrix_args), schema))
    # Parquet sizes row groups in bytes: aim for row_group_rows rows of maxlen int32 values.
    block = max(1 << 20, enc.row_group_rows * (enc.maxlen * 4 + 64))
    columns = [C.REVIEW_ID, C.LABEL, C.IDS, C.LENGTH, C.OOV] + ([C.MATRIX] if enc.matrix_mode else [])
    with storage.staged_output(spark, out_dir) as stage:
        (encoded.sortWithinPartitions(C.ORDINAL).select(C.SPLIT, *columns)
         .write.mode("overwrite").option("parquet.block.size", block)
         .option("maxRecordsPerFile", enc.rows_per_file).partitionBy(C.SPLIT).parquet(stage))
        files = _rename_parts(spark, stage)
        manifest = _manifest(spark, stage, files, vocab, enc, counts, columns)
        storage.write_json(spark, f"{stage}/{C.MANIFEST}", manifest)
    tokens_bc.unpersist()
    manifest["seconds"] = round(time.time() - started, 2)
    manifest["documents_per_second"] = round(total / max(manifest["seconds"], 1e-9), 1)
    log.info("encoded %d reviews into %d files in %.1fs", total, len(files), manifest["seconds"])
    return manifest


def _rename_parts(spark, stage: str) -> dict[str, list[str]]:
    """Spark names files part-<n>-<uuid>.c000.zstd.parquet; rename to <split>/part-00000.parquet."""
    out: dict[str, list[str]] = {}
    for d in storage.list_names(spark, stage):
        if not d.startswith(f"{C.SPLIT}="):
            if d in ("_SUCCESS", "._SUCCESS.crc"):  # the manifest marks completion instead
                storage.delete(spark, f"{stage}/{d}")
            continue
        split = d.split("=", 1)[1]
        parts = [n for n in storage.list_names(spark, f"{stage}/{d}") if n.endswith(".parquet")]
        names = []
        for i, name in enumerate(sorted(parts, key=_part_order)):
            new = f"part-{i:05d}.parquet"
            storage.rename(spark, f"{stage}/{d}/{name}", f"{stage}/{d}/{new}")
            names.append(f"{d}/{new}")
        for n in storage.list_names(spark, f"{stage}/{d}"):
            if n.startswith(".") and n.endswith(".crc"):
                storage.delete(spark, f"{stage}/{d}/{n}")
        out[split] = names
    return out


_PART = re.compile(r"^part-(\d+)-.*?\.c(\d+)\.")


def _part_order(name: str) -> tuple[int, int, str]:
    """Spark's part-<task>-<uuid>.c<seq>.zstd.parquet: order by task, then file within task."""
    m = _PART.match(name)
    return (int(m[1]), int(m[2]), name) if m else (1 << 30, 0, name)


def _manifest(spark, stage: str, files: dict[str, list[str]], vocab: Vocabulary, enc: EncodeConf,
              counts: dict[str, int], columns: list[str]) -> dict:
    from pyspark.sql import functions as F

    per_file = {}
    local = storage.local_path(stage)
    if local is not None:  # footers only; no data is read
        import pyarrow.parquet as pq

        for fs in files.values():
            for f in fs:
                per_file[f] = pq.read_metadata(f"{local}/{f}").num_rows
    else:
        df = spark.read.parquet(stage)
        for r in df.groupBy(F.input_file_name().alias("f")).agg(F.count(F.lit(1)).alias("n")).collect():
            per_file["/".join(r["f"].rsplit("/", 2)[-2:])] = r["n"]  # split=x/part-00000.parquet
    written = {s: sum(per_file.get(f, 0) for f in fs) for s, fs in files.items()}
    if written != counts:
        raise EncodeError(f"written rows per split {written} differ from the input {counts}")
    return {
        "format": "reviewpipe-shards/1",
        "vocab_fingerprint": vocab.fingerprint,
        "vocab_size": vocab.size,
        "tokenizer": vocab.tokenizer.to_dict(),
        "maxlen": enc.maxlen, "padding": enc.padding, "truncating": enc.truncating,
        "dtype": "int32", "pad_value": C.PAD_INDEX,
        "row_group_rows": enc.row_group_rows, "rows_per_file": enc.rows_per_file,
        "matrix_mode": enc.matrix_mode or None,
        "splits": {s: {"rows": counts[s], "files": [{"path": f, "rows": per_file.get(f, 0)} for f in fs]}
                   for s, fs in sorted(files.items())},
        "schema": [{"name": C.REVIEW_ID, "type": "string"}, {"name": C.LABEL, "type": "int8", "nullable": True},
                   {"name": C.IDS, "type": f"list<int32>[{enc.maxlen}]"}, {"name": C.LENGTH, "type": "int32"},
                   {"name": C.OOV, "type": "int32"}]
                  + ([{"name": C.MATRIX, "type": "struct<size:int32,indices:list<int32>,values:list<float32>>"}]
                     if enc.matrix_mode else []),
    }
