"""Encode reviews into fixed-length int32 id sequences (Parquet shards + ``_manifest.json``).

Keras semantics: ``texts_to_sequences`` (unknown words -> OOV index 1, or dropped when the
vocabulary has no OOV token) then ``pad_sequences`` with value 0.  Defaults differ from
``pad_sequences``' pre/pre on purpose: ``padding="post"`` keeps masks right-padded (the
cuDNN kernel's requirement) and ``truncating="pre"`` keeps the end of long reviews.
"""

from __future__ import annotations

import logging
import math
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
    return apply_oov(values, known, lengths, spec)


def apply_oov(values: np.ndarray, known: np.ndarray, lengths: np.ndarray, spec: TokenizerSpec):
    """Ids of every token (``known`` False for words outside the vocabulary) -> (flat ids,
    lengths, OOV counts): unknown words become the OOV index, or are dropped without one."""
    n = len(lengths)
    oov = np.bincount(np.repeat(np.arange(n), lengths)[~known], minlength=n)
    if spec.oov_token:
        values[~known] = C.OOV_INDEX
    else:
        values = values[known]
        lengths = lengths - oov
    return values.astype(np.int32), lengths, oov


def encode_batch(batch, tokens: Sequence[str], spec: TokenizerSpec, enc: EncodeConf, matrix_args: dict | None):
    """One Arrow batch of reviews -> an Arrow table in the shard schema."""
    values, lengths, oov = sequences(batch.column(C.TEXT), tokens, spec)
    return shard_table(batch, values, lengths, oov, enc, matrix_args)


def shard_table(batch, values: np.ndarray, lengths: np.ndarray, oov: np.ndarray, enc: EncodeConf,
                matrix_args: dict | None):
    """Rows of ``batch`` (review_id, label) with their sequences -> the shard schema."""
    import pyarrow as pa

    ids = pad_flat(values, lengths, enc.maxlen, enc.padding, enc.truncating)
    n = len(lengths)
    cols = {
        C.REVIEW_ID: batch.column(C.REVIEW_ID),
        C.LABEL: batch.column(C.LABEL).cast(pa.int8()),
        C.IDS: pa.ListArray.from_arrays(pa.array(np.arange(0, n * enc.maxlen + 1, enc.maxlen, dtype=np.int32)),
                                        pa.array(ids.ravel(), pa.int32())),
        C.LENGTH: pa.array(lengths, pa.int32()),
        C.OOV: pa.array(oov, pa.int32()),
    }
    if matrix_args is not None:
        cols[C.MATRIX] = matrix.sparse_rows_arrow(values, lengths, **matrix_args)
    return pa.table(cols)


class ShardWriter:
    """Writes one split's rows into part files with exactly ``row_group_rows`` rows per
    row group (the last one may be short) and at most ``rows_per_file`` rows per file."""

    def __init__(self, fs, base: str, split: str, task: int, enc: EncodeConf):
        self.fs, self.base, self.split, self.task, self.enc = fs, base, split, task, enc
        self.seq, self.writer, self.in_file, self.pending, self.done = 0, None, 0, [], []

    def _open(self, schema):
        import pyarrow.parquet as pq

        name = f"{C.SPLIT}={self.split}/task-{self.task:05d}-{self.seq:04d}.parquet"
        self.fs.create_dir(f"{self.base}/{C.SPLIT}={self.split}", recursive=True)
        # No dictionary for the id lists: 20k+ distinct ids overflow the dictionary page, and
        # zstd alone gives the same size for less time.
        self.writer = pq.ParquetWriter(f"{self.base}/{name}", schema, filesystem=self.fs, compression="zstd",
                                       use_dictionary=[f for f in schema.names if f not in (C.IDS, C.MATRIX)])
        self.name, self.in_file = name, 0

    def _write_group(self, table):
        if self.writer is None:
            self._open(table.schema)
        self.writer.write_table(table, row_group_size=len(table))
        self.in_file += len(table)
        if self.in_file >= self.enc.rows_per_file:
            self._close()

    def _close(self):
        if self.writer is not None:
            self.writer.close()
            self.done.append((self.split, self.name, self.in_file, self.task, self.seq))
            self.writer, self.seq, self.in_file = None, self.seq + 1, 0

    def add(self, table):
        import pyarrow as pa

        self.pending.append(table)
        buffered = pa.concat_tables(self.pending)
        while True:
            room = min(self.enc.row_group_rows, self.enc.rows_per_file - self.in_file)
            if len(buffered) < room:
                break
            self._write_group(buffered.slice(0, room))
            buffered = buffered.slice(room)
        self.pending = [buffered] if len(buffered) else []

    def finish(self):
        import pyarrow as pa

        if self.pending:
            rest = pa.concat_tables(self.pending)
            while len(rest):
                room = min(self.enc.row_group_rows, self.enc.rows_per_file - self.in_file)
                self._write_group(rest.slice(0, room))
                rest = rest.slice(room)
        self._close()
        return self.done


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    local = storage.local_path(uri)
    if local is not None:
        return pafs.LocalFileSystem(), local
    return pafs.FileSystem.from_uri(uri)


def encode_and_write(batches: Iterator, tokens_bc, spec: TokenizerSpec, enc: EncodeConf,
                     matrix_args: dict | None, stage_uri: str) -> Iterator:
    """mapInArrow body: encode a partition (sorted by split, ordinal) and write its shards
    with pyarrow; yields one (split, file, rows, task, seq) row per file written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark import TaskContext

    tokens = tokens_bc.value
    fs, base = _filesystem(stage_uri)
    task = TaskContext.get().partitionId()
    writers: dict[str, ShardWriter] = {}
    for batch in batches:
        splits = batch.column(C.SPLIT)
        present = pc.unique(splits).to_pylist()
        for split in present:
            part = batch if len(present) == 1 else batch.filter(pc.equal(splits, split))
            w = writers.setdefault(split, ShardWriter(fs, base, split, task, enc))
            w.add(encode_batch(part, tokens, spec, enc, matrix_args))
    rows = [r for w in writers.values() for r in w.finish()]
    yield pa.RecordBatch.from_pylist([dict(zip(("split", "file", "rows", "task", "seq"), r)) for r in rows],
                                     schema=pa.schema([("split", pa.string()), ("file", pa.string()),
                                                       ("rows", pa.int64()), ("task", pa.int64()),
                                                       ("seq", pa.int64())]))


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
    if enc.matrix_mode:
        matrix_args = {"mode": enc.matrix_mode, "num_words": vocab.size,
                       "index_docs": vocab.index_docs(), "document_count": vocab.spec["corpus"]["documents"]}
    counts = {r[C.SPLIT]: r["n"] for r in reviews.groupBy(C.SPLIT).agg(F.count(F.lit(1)).alias("n")).collect()}
    total = sum(counts.values())
    n_parts = max(spark.sparkContext.defaultParallelism,
                  sum(math.ceil(n / enc.rows_per_file) for n in counts.values()))
    with storage.staged_output(spark, out_dir) as stage:
        storage.mkdirs(spark, stage)
        stage_uri = storage.qualify(spark, stage)
        # Range-partition and sort the *input* (the sampling job reads only split/ordinal);
        # workers encode and write shards with pyarrow, so the id arrays never pass through
        # the JVM: Spark only sees one small row per file written.
        written = (reviews.repartitionByRange(n_parts, C.SPLIT, C.ORDINAL)
                   .sortWithinPartitions(C.SPLIT, C.ORDINAL)
                   .mapInArrow(lambda it: encode_and_write(it, tokens_bc, spec, enc, matrix_args, stage_uri),
                               "split string, file string, rows long, task long, seq long")
                   .collect())
        files = _rename_parts(spark, stage, written)
        manifest = _manifest(files, vocab, enc, counts)
        storage.write_json(spark, f"{stage}/{C.MANIFEST}", manifest)
    tokens_bc.unpersist()
    manifest["seconds"] = round(time.time() - started, 2)
    manifest["documents_per_second"] = round(total / max(manifest["seconds"], 1e-9), 1)
    log.info("encoded %d reviews into %d files in %.1fs", total, sum(len(f) for f in files.values()),
             manifest["seconds"])
    return manifest


def _rename_parts(spark, stage: str, written) -> dict[str, list[tuple[str, int]]]:
    """Rename task-<task>-<seq>.parquet to part-00000.parquet... per split, in (task, seq)
    order, so part numbers follow source order.  Returns {split: [(path, rows), ...]}."""
    out: dict[str, list[tuple[str, int]]] = {}
    for split in sorted({r["split"] for r in written}):
        rows = sorted((r for r in written if r["split"] == split), key=lambda r: (r["task"], r["seq"]))
        names = []
        for i, r in enumerate(rows):
            new = f"{C.SPLIT}={split}/part-{i:05d}.parquet"
            storage.rename(spark, f"{stage}/{r['file']}", f"{stage}/{new}")
            names.append((new, r["rows"]))
        out[split] = names
    return out


def _manifest(files: dict[str, list[tuple[str, int]]], vocab: Vocabulary, enc: EncodeConf,
              counts: dict[str, int]) -> dict:
    written = {s: sum(n for _, n in fs) for s, fs in files.items()}
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
        "splits": {s: {"rows": counts[s], "files": [{"path": f, "rows": n} for f, n in fs]}
                   for s, fs in sorted(files.items())},
        "schema": [{"name": C.REVIEW_ID, "type": "string"}, {"name": C.LABEL, "type": "int8", "nullable": True},
                   {"name": C.IDS, "type": f"list<int32>[{enc.maxlen}]"}, {"name": C.LENGTH, "type": "int32"},
                   {"name": C.OOV, "type": "int32"}]
                  + ([{"name": C.MATRIX, "type": "struct<size:int32,indices:list<int32>,values:list<float32>>"}]
                     if enc.matrix_mode else []),
    }
