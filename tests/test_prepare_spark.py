"""The fused vocab+encode job (one tokenization) against build_vocab followed by encode."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from conftest import IMDB_CSV, require
from reviewpipe import constants as C
from reviewpipe.encode import EncodeError, encode
from reviewpipe.prepare import TOKENS_DIR, prepare, sum_counts
from reviewpipe.vocab import VocabError, build_vocab, load_vocab
from test_vocab_encode_spark import conf_for, shards, write_reviews

pytestmark = pytest.mark.spark


def real_corpus(spark, path, n_train=300, n_unsup=120, n_val=80):
    import pandas as pd

    texts = pd.read_csv(require(IMDB_CSV), nrows=n_train + n_unsup + n_val)["review"].tolist()
    texts[3] = texts[3] + " Ünïcödé İstanbul straße 😀 e\u0301 don’t"  # the non-ASCII path too
    texts[5] = ""  # an empty review
    write_reviews(spark, path, texts[:n_train])
    write_reviews(spark, path, texts[n_train:n_train + n_unsup], split="unsup", start=n_train)
    write_reviews(spark, path, texts[n_train + n_unsup:], split="val", start=n_train + n_unsup)
    return str(path)


def files_of(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


@pytest.mark.integration
@pytest.mark.parametrize("mode, oov, vocab_splits, maxlen, padding, truncating", [
    ("keras", "", "train", 50, "pre", "pre"),
    ("default", "[UNK]", "train,unsup", 120, "post", "pre"),
])
def test_prepare_equals_build_vocab_then_encode(spark, conf, tmp_path, mode, oov, vocab_splits, maxlen, padding,
                                                truncating):
    reviews = real_corpus(spark, tmp_path / "r")
    c = conf_for(conf, f"tokenizer.mode={mode}", f"tokenizer.oov_token={oov}", "vocab.num_words=3000",
                 f"vocab.splits={vocab_splits}", f"encode.maxlen={maxlen}", f"encode.padding={padding}",
                 f"encode.truncating={truncating}", "encode.rows_per_file=128", "encode.row_group_rows=64")
    ref = build_vocab(spark, reviews, str(tmp_path / "v1"), c)
    encode(spark, reviews, str(tmp_path / "v1"), str(tmp_path / "s1"), c)
    out = prepare(spark, reviews, str(tmp_path / "v2"), str(tmp_path / "s2"), c)

    for name in (C.VOCAB_TABLE, C.VOCAB_SPEC):  # the artifact is the same bytes
        assert (tmp_path / "v1" / name).read_bytes() == (tmp_path / "v2" / name).read_bytes()
    assert out["vocab"]["fingerprint"] == ref["fingerprint"]
    same = ("documents", "tokens", "vocabulary_before_cut", "vocabulary_after_cut", "token_coverage", "val_oov_rate")
    assert {k: out["vocab"][k] for k in same} == {k: ref[k] for k in same}
    assert shards(spark, tmp_path / "s2") == shards(spark, tmp_path / "s1")  # same rows, ids, lengths, OOV

    m1 = json.loads((tmp_path / "s1" / C.MANIFEST).read_text())
    m2 = json.loads((tmp_path / "s2" / C.MANIFEST).read_text())
    assert {s: v["rows"] for s, v in m2["splits"].items()} == {"train": 300, "unsup": 120, "val": 80}
    assert {k: v for k, v in m2.items() if k != "splits"} == {k: v for k, v in m1.items() if k != "splits"}
    for split, v in m2["splits"].items():  # files as listed, row groups as configured, no leftovers
        for f in v["files"]:
            meta = pq.ParquetFile(tmp_path / "s2" / f["path"]).metadata
            assert meta.num_rows == f["rows"] <= 128
            assert all(meta.row_group(i).num_rows == 64 for i in range(meta.num_row_groups - 1))
    assert not (tmp_path / "s2" / TOKENS_DIR).exists()
    listed = sorted(f["path"] for v in m2["splits"].values() for f in v["files"])
    assert [f for f in files_of(tmp_path / "s2") if f != C.MANIFEST] == listed
    assert load_vocab(spark, str(tmp_path / "v2")).fingerprint == ref["fingerprint"]


def test_prepare_matrix_mode_and_held_out_splits(spark, conf, tmp_path):
    reviews = write_reviews(spark, tmp_path / "r", ["good good film", "bad film", "good plot"])
    write_reviews(spark, tmp_path / "r", ["good unseen"], split="val", start=3)
    c = conf_for(conf, "vocab.num_words=0", "encode.maxlen=4", "encode.matrix_mode=count", "tokenizer.oov_token=")
    out = prepare(spark, reviews, str(tmp_path / "v"), str(tmp_path / "s"), c)
    got = shards(spark, tmp_path / "s")
    # good 3, film 2, bad 1, plot 1 -> good=1 film=2 bad=3 plot=4; no OOV token: "unseen" is dropped
    assert got["val/3"][C.IDS] == [1, 0, 0, 0] and got["val/3"][C.OOV] == 1
    assert got["train/0"][C.MATRIX].asDict() == {"size": 5, "indices": [1, 2], "values": [2.0, 1.0]}
    assert out["vocab"]["val_oov_rate"] == 0.5
    with pytest.raises(VocabError, match=r"\['val'\] are held out"):
        prepare(spark, reviews, str(tmp_path / "v2"), str(tmp_path / "s2"), c, vocab_splits=["train", "val"])


def test_prepare_refuses_shards_of_another_vocabulary(spark, conf, tmp_path):
    reviews = write_reviews(spark, tmp_path / "r", ["alpha beta", "beta gamma"])
    prepare(spark, reviews, str(tmp_path / "v"), str(tmp_path / "s"), conf_for(conf))
    before = (tmp_path / "s" / C.MANIFEST).read_text()
    with pytest.raises(EncodeError, match="refusing to mix them"):
        prepare(spark, reviews, str(tmp_path / "v"), str(tmp_path / "s"), conf_for(conf, "tokenizer.mode=keras",
                                                                                  "tokenizer.lower=false"))
    assert (tmp_path / "s" / C.MANIFEST).read_text() == before  # nothing replaced
    assert not list(tmp_path.glob("s.staging-*")) and not list(tmp_path.glob("v.staging-*"))


def test_an_empty_partition_writes_no_stream(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyspark

    from reviewpipe.prepare import tokenize_partition
    from reviewpipe.tokenizer import TokenizerSpec

    class Task:
        def partitionId(self):
            return 3

        def attemptNumber(self):
            return 0

    monkeypatch.setattr(pyspark.TaskContext, "get", staticmethod(lambda: Task()))
    assert list(tokenize_partition(iter([]), TokenizerSpec(), ["train"], str(tmp_path))) == []
    assert list((tmp_path / TOKENS_DIR).iterdir()) == []
    batch = pa.record_batch({C.REVIEW_ID: ["a", "b"], C.SPLIT: ["train", "val"], C.ORDINAL: pa.array([0, 1], pa.int64()),
                             C.LABEL: pa.array([1, 0], pa.int8()), C.TEXT: ["good good film", "good"]})
    out = pa.Table.from_batches(list(tokenize_partition(iter([batch]), TokenizerSpec(), ["train"], str(tmp_path))))
    stream, counts = f"{TOKENS_DIR}/part-00003-0.arrows", f"{TOKENS_DIR}/counts-00003-0.arrow"
    assert out.to_pylist() == [{"file": stream, "split": "train", "rows": 1, "counts": counts},
                               {"file": stream, "split": "val", "rows": 1, "counts": counts}]  # the manifest's counts
    got = sum_counts(str(tmp_path), [counts]).sort_by("token").to_pylist()
    assert got == [{"token": "film", "count": 1, "doc_count": 1, "first_key": 2},  # review 0, token 2
                   {"token": "good", "count": 2, "doc_count": 1, "first_key": 0}]  # the val row is encoded, not counted
    val_only = pa.record_batch({C.REVIEW_ID: ["c"], C.SPLIT: ["val"], C.ORDINAL: pa.array([2], pa.int64()),
                                C.LABEL: pa.array([1], pa.int8()), C.TEXT: ["bad"]})
    monkeypatch.setattr(Task, "partitionId", lambda self: 4)
    out = list(tokenize_partition(iter([val_only]), TokenizerSpec(), ["train"], str(tmp_path)))
    assert pa.Table.from_batches(out).to_pylist() == [
        {"file": f"{TOKENS_DIR}/part-00004-0.arrows", "split": "val", "rows": 1, "counts": None}]
    assert not (tmp_path / TOKENS_DIR / "counts-00004-0.arrow").exists()


def test_sum_counts_adds_the_tasks_partials_a_few_files_at_a_time(tmp_path):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from reviewpipe.vocab import _partial_arrow_schema

    (tmp_path / TOKENS_DIR).mkdir()
    partials = [[("a", 3, 2, 7), ("b", 1, 1, 9)], [("a", 1, 1, 4), ("c", 5, 1, 11)], [("b", 2, 2, 2)],
                [("d", 1, 1, 20), ("a", 2, 1, 30)], [("c", 1, 1, 1)]]
    names = []
    for i, rows in enumerate(partials):
        t = pa.Table.from_pylist([dict(zip(("token", "count", "doc_count", "first_key"), r)) for r in rows],
                                 schema=_partial_arrow_schema())
        names.append(f"{TOKENS_DIR}/counts-{i:05d}-0.arrow")
        with ipc.new_file(str(tmp_path / names[-1]), t.schema) as w:
            w.write_table(t)
    expected = [("a", 6, 4, 4), ("b", 3, 3, 2), ("c", 6, 2, 1), ("d", 1, 1, 20)]
    for every in (1, 2, 16):  # the running total and the pending files add up the same way
        got = sum_counts(str(tmp_path), names, merge_every=every).sort_by("token").to_pylist()
        assert [tuple(r.values()) for r in got] == expected
    assert sum_counts(str(tmp_path), []).num_rows == 0
