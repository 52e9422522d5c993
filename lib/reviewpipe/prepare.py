"""Vocabulary and shards from one tokenization of the text: the fused vocab+encode job.

``build_vocab`` then ``encode`` tokenize every review twice (to count, then to encode) and
range-partition the text through a shuffle.  :func:`prepare` tokenizes each review once:

pass 1
    Each input partition is tokenized one Arrow batch at a time, as it is read (no shuffle,
    no sort).  The batch's tokens are dictionary-encoded; the codes and the
    batch's small dictionary go to an Arrow IPC stream in the staging folder, and the
    vocabulary splits' tokens are counted from the codes, combined per task into one Arrow
    file of partial counts next to the streams.  The job returns only a few rows per task.
driver
    The partial count files are summed (Arrow hash aggregation, a few files at a time), then
    ranked, cut and fingerprinted by the very functions ``build_vocab`` uses; the vocabulary
    artifact is published.
pass 2
    Each stream is read back; every batch's dictionary is looked up in the vocabulary once
    (one lookup per distinct word of the batch, not per token), its codes are mapped with
    one ``take``, padded, and written by the encode job's shard writer.

The vocabulary artifact is byte-identical to ``build_vocab``'s, and the shards hold the same
rows as ``encode``'s (tests check both); only the grouping of rows into part files differs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator, Sequence

import numpy as np

from reviewpipe import constants as C
from reviewpipe import encode as E
from reviewpipe import storage
from reviewpipe import vocab as V
from reviewpipe.config import EncodeConf, PipelineConf
from reviewpipe.tokenizer import TokenizerSpec, tokenize_arrow

log = logging.getLogger(__name__)

TOKENS_DIR = "_tokens"  # pass-1 streams, inside the shards staging folder; removed before publishing
CODES = "codes"
PASS1_SCHEMA = "file string, split string, rows long, counts string"
MERGE_EVERY = 16  # a task's partial tables summed at once
DRIVER_MERGE_EVERY = 4  # count files the driver holds before adding them to its total


# ---------------------------------------------------------------------------------------
# pass 1 (executor side)

def tokenize_partition(batches: Iterator, spec: TokenizerSpec, vocab_splits: Sequence[str], stage_uri: str,
                       merge_every: int = MERGE_EVERY) -> Iterator:
    """mapInArrow body: write the partition's token codes to one IPC stream and the vocabulary
    splits' partial counts to one Arrow file; yield one (file, split, rows, counts) row per
    split in the stream (``counts`` is null when the partition holds no vocabulary split)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc
    from pyspark import TaskContext

    ctx = TaskContext.get()
    fs, base = E._filesystem(stage_uri)
    fs.create_dir(f"{base}/{TOKENS_DIR}", recursive=True)
    name = f"{TOKENS_DIR}/part-{ctx.partitionId():05d}-{ctx.attemptNumber()}.arrows"
    value_set = pa.array(list(vocab_splits), pa.string())
    summed, sink, writer = V.PartialSum(merge_every), None, None
    rows: dict[str, int] = {}
    try:
        for batch in batches:
            lists = tokenize_arrow(batch.column(C.TEXT), spec)
            enc = pc.dictionary_encode(pc.list_flatten(lists))
            offsets = lists.offsets
            out = pa.record_batch({C.REVIEW_ID: batch.column(C.REVIEW_ID), C.SPLIT: batch.column(C.SPLIT),
                                   C.LABEL: batch.column(C.LABEL).cast(pa.int8()),
                                   CODES: pa.ListArray.from_arrays(offsets, enc)})
            if writer is None:  # opened on the first batch: an empty partition writes no stream
                sink = fs.open_output_stream(f"{base}/{name}")
                writer = ipc.new_stream(sink, out.schema)
            writer.write_batch(out)
            for v in pc.value_counts(batch.column(C.SPLIT)).to_pylist():
                rows[v["values"]] = rows.get(v["values"], 0) + v["counts"]
            counted = pc.is_in(batch.column(C.SPLIT), value_set=value_set).to_numpy(zero_copy_only=False)
            if len(enc) and counted.any():
                ordinals = batch.column(C.ORDINAL).to_numpy(zero_copy_only=False)
                summed.add(V.partial_counts(enc.dictionary, enc.indices.to_numpy(), offsets.to_numpy(),
                                            ordinals, None if counted.all() else counted))
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
    merged = summed.result()
    counts = None
    if merged is not None and len(merged):
        # A file the driver sums, not rows for the JVM: taking ~1 M partial-count rows into
        # Spark and aggregating them there cost ~6 s of the 300k benchmark.
        counts = f"{TOKENS_DIR}/counts-{ctx.partitionId():05d}-{ctx.attemptNumber()}.arrow"
        table = merged.cast(V._partial_arrow_schema())
        with fs.open_output_stream(f"{base}/{counts}") as out, ipc.new_file(out, table.schema) as w:
            w.write_table(table)
    if writer is not None:
        schema = pa.schema([("file", pa.string()), ("split", pa.string()), ("rows", pa.int64()),
                            ("counts", pa.string())])
        yield pa.RecordBatch.from_pylist([{"file": name, "split": k, "rows": v, "counts": counts}
                                          for k, v in sorted(rows.items())], schema=schema)


def sum_counts(stage_uri: str, names: Sequence[str], merge_every: int = DRIVER_MERGE_EVERY):
    """Sum the tasks' partial count files (token, count, doc_count, first_key) into one table,
    ``merge_every`` files at a time: the driver holds the running total (one row per distinct
    word, as the ranking needs anyway) and a few partials, never all of them."""
    import pyarrow.ipc as ipc

    fs, base = E._filesystem(stage_uri)
    summed = V.PartialSum(merge_every)
    for name in names:
        with fs.open_input_file(f"{base}/{name}") as f:
            summed.add(ipc.open_file(f).read_all())
    total = summed.result()
    return total if total is not None else V._partial_arrow_schema().empty_table()


# ---------------------------------------------------------------------------------------
# pass 2 (executor side)

def map_codes(dictionary, codes: np.ndarray, offsets: np.ndarray, tokens_set, spec: TokenizerSpec):
    """Token codes of one batch -> (flat ids, lengths, OOV counts), the ``sequences`` contract
    of the encode job, with one vocabulary lookup per dictionary entry."""
    import pyarrow.compute as pc

    lengths = np.diff(offsets).astype(np.int64)
    n = len(lengths)
    if len(codes) == 0:
        return np.zeros(0, np.int32), lengths, np.zeros(n, np.int64)
    pos = pc.index_in(dictionary, value_set=tokens_set)
    known_entry = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    entry_ids = pc.fill_null(pos, -1).to_numpy().astype(np.int64) + spec.first_word_index
    return E.apply_oov(entry_ids[codes], known_entry[codes], lengths, spec)


def encode_streams(files: Iterator, tokens_bc, spec: TokenizerSpec, enc: EncodeConf, matrix_args: dict | None,
                   stage_uri: str) -> Iterator:
    """mapPartitions body over (task, stream) pairs: encode and write the shards; yields one
    ("file", split, name, rows, task, seq) per file and one ("tokens", split, tokens, oov)
    per split seen."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

    fs, base = E._filesystem(stage_uri)
    tokens_set = pa.array(tokens_bc.value, pa.string())
    for task, name in files:
        writers: dict[str, E.ShardWriter] = {}
        totals: dict[str, list[int]] = {}
        with fs.open_input_stream(f"{base}/{name}") as source:
            for batch in ipc.open_stream(source):
                codes = batch.column(CODES)
                values, lengths, oov = map_codes(codes.values.dictionary, codes.values.indices.to_numpy(),
                                                  codes.offsets.to_numpy(), tokens_set, spec)
                table = E.shard_table(batch, values, lengths, oov, enc, matrix_args)
                n_tokens = np.diff(codes.offsets.to_numpy())
                splits = batch.column(C.SPLIT)
                present = pc.unique(splits).to_pylist()
                for split in present:
                    mask = None if len(present) == 1 else pc.equal(splits, split)
                    part = table if mask is None else table.filter(mask)
                    sel = np.ones(len(table), bool) if mask is None else mask.to_numpy(zero_copy_only=False)
                    t = totals.setdefault(split, [0, 0])
                    t[0] += int(n_tokens[sel].sum())
                    t[1] += int(oov[sel].sum())
                    writers.setdefault(split, E.ShardWriter(fs, base, split, task, enc)).add(part)
        for w in writers.values():
            for split, file, rows, t, seq in w.finish():
                yield ("file", split, file, rows, t, seq)
        for split, (n, o) in totals.items():
            yield ("tokens", split, n, o)


# ---------------------------------------------------------------------------------------
# driver

@contextlib.contextmanager
def _sql_conf(spark, key: str, value) -> Iterator[None]:
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(value))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def prepare(spark, reviews_dir: str, vocab_out: str, shards_out: str, conf: PipelineConf,
            vocab_splits: Sequence[str] | None = None, splits: Sequence[str] | None = None) -> dict:
    """Build the vocabulary over ``vocab_splits`` and encode ``splits`` (default: all) from
    one tokenization.  Publishes the vocabulary, then the shards; returns both summaries."""
    from pyspark.sql import functions as F

    started = time.time()
    phases: dict[str, float] = {}
    mark = [started]

    def phase(name: str) -> None:
        now = time.time()
        phases[name] = round(now - mark[0], 2)
        mark[0] = now

    vocab_splits = V.check_splits(vocab_splits or conf.vocab.splits)
    spec = TokenizerSpec.from_conf(conf.tokenizer)
    enc = conf.encode
    reviews = spark.read.parquet(reviews_dir)
    if splits:
        reviews = reviews.filter(F.col(C.SPLIT).isin(list(splits)))
    reviews = reviews.select(C.REVIEW_ID, C.SPLIT, C.ORDINAL, C.LABEL, C.TEXT)
    existing = E.read_manifest(spark, shards_out) if storage.exists(spark, shards_out) else None

    with storage.staged_output(spark, shards_out) as stage:
        storage.mkdirs(spark, stage)
        stage_uri = storage.qualify(spark, stage)
        # No sort and no shuffle: the JVM's reading pipelines with the Python tokenizer (a sort
        # would hold each whole partition back first), and counting does not need row order.
        pass1 = reviews.mapInArrow(lambda it: tokenize_partition(it, spec, vocab_splits, stage_uri), PASS1_SCHEMA)
        # One job with no shuffle, returning a few rows per task.  Several input splits per
        # core, so that the last wave of tasks is short (the scan's splits are pass 1's tasks).
        with _sql_conf(spark, "spark.sql.files.minPartitionNum", 4 * spark.sparkContext.defaultParallelism):
            read = pass1.toArrow().to_pylist()
        phase("pass1_tokenize")
        totals = sum_counts(stage_uri, sorted({r["counts"] for r in read if r["counts"]}))
        phase("sum_counts")
        # Rows per split as pass 1 read them: the counts in the manifest, and nothing is lost
        # between here and the shards (the encode pass must write as many).
        counts: dict[str, int] = {}
        for r in read:
            counts[r["split"]] = counts.get(r["split"], 0) + r["rows"]
        n_docs = sum(counts.get(s, 0) for s in vocab_splits)
        if n_docs == 0:
            raise V.VocabError(f"{reviews_dir}: no reviews in splits {vocab_splits}")
        streams = sorted({r["file"] for r in read})
        vocab, vsummary, table_bytes, json_bytes = V.finish_vocab(totals, spec, conf, n_docs, vocab_splits)
        if existing is not None and existing.get("vocab_fingerprint") != vocab.fingerprint:
            raise E.EncodeError(
                f"{shards_out} holds shards encoded with vocabulary {existing.get('vocab_fingerprint', '?')[:12]}…, "
                f"but this build is {vocab.fingerprint[:12]}…; refusing to mix them. Remove {shards_out} or "
                f"choose another shards output.")
        phase("rank")

        matrix_args = None
        if enc.matrix_mode:
            matrix_args = {"mode": enc.matrix_mode, "num_words": vocab.size,
                           "index_docs": vocab.index_docs(), "document_count": n_docs}
        tokens_bc = spark.sparkContext.broadcast(vocab.tokens)
        jobs = list(enumerate(streams))
        out = (spark.sparkContext.parallelize(jobs, max(len(jobs), 1))
               .mapPartitions(lambda it: encode_streams(it, tokens_bc, spec, enc, matrix_args, stage_uri))
               .collect())
        tokens_bc.unpersist()
        phase("pass2_encode")
        storage.delete(spark, f"{stage}/{TOKENS_DIR}")
        written = [dict(zip(("split", "file", "rows", "task", "seq"), r[1:])) for r in out if r[0] == "file"]
        files = E._rename_parts(spark, stage, written)
        manifest = E._manifest(files, vocab, enc, counts)
        storage.write_json(spark, f"{stage}/{C.MANIFEST}", manifest)

        val = [r for r in out if r[0] == "tokens" and r[1] == C.VAL]
        val_tokens = sum(r[2] for r in val)
        vsummary["val_oov_rate"] = round(sum(r[3] for r in val) / val_tokens, 6) if val_tokens else None
        vsummary["seconds"] = round(time.time() - started, 2)
        with storage.staged_output(spark, vocab_out) as vstage:
            V.write_artifact(spark, vstage, table_bytes, json_bytes, vsummary)
    phase("publish")
    total = sum(counts.values())
    manifest["seconds"] = round(time.time() - started, 2)
    manifest["documents_per_second"] = round(total / max(manifest["seconds"], 1e-9), 1)
    manifest["phase_seconds"] = phases
    log.info("prepare: phases %s", " ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
    log.info("prepare: vocabulary %d words (%s…), %d reviews encoded into %d files in %.1fs",
             vsummary["vocabulary_after_cut"], vocab.fingerprint[:12], total,
             sum(len(f) for f in files.values()), manifest["seconds"])
    return {"vocab": vsummary, "shards": manifest}
