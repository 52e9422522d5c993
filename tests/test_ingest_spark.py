from __future__ import annotations

import gzip
import json

import pytest

from reviewpipe import constants as C
from reviewpipe.config import load_conf
from reviewpipe.ingest import IngestError, ingest
from reviewpipe.splits import is_val

pytestmark = pytest.mark.spark


def small_conf(conf, *overrides):
    return load_conf(None, [f"spark.defaults_file={conf.spark.defaults_file}",
                            f"data.checksums={conf.data.checksums}", "ingest.max_text_bytes=64", *overrides])


def read(spark, out):
    reviews = {r[C.REVIEW_ID]: r.asDict() for r in spark.read.parquet(f"{out}/{C.REVIEWS_DIR}").collect()}
    quarantine = {(r[C.REVIEW_ID] or r[C.SOURCE]): r.asDict()
                  for r in spark.read.parquet(f"{out}/{C.QUARANTINE_DIR}").collect()}
    summary = json.loads((out / C.INGEST_SUMMARY).read_text())
    return reviews, quarantine, summary


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_aclimdb_folder_with_bad_files(spark, conf, tmp_path):
    root = tmp_path / "aclImdb"
    write(root / "train/pos/0_9.txt", b"A great film.<br /><br />Loved it")
    write(root / "train/pos/10_7.txt", b"Good \xc3\xa9nough")
    write(root / "train/pos/2_8.txt", b"")
    write(root / "train/neg/0_2.txt", b"bad bytes \xff\xfe here")
    write(root / "train/neg/1_1.txt", b" \t\r\n \xc2\xa0 ")  # whitespace only, NBSP included
    write(root / "train/neg/oops.txt", b"no rating in the name")
    write(root / "train/unsup/0_0.txt", b"x" * 65)
    write(root / "train/unsup/1_0.txt", b"unlabelled but fine")
    write(root / "test/pos/0_10.txt", b"held out")
    write(root / "train/urls_pos.txt", b"http://not-a-review")
    out = tmp_path / "out"
    summary = ingest(spark, str(root), str(out), small_conf(conf, "ingest.val_fraction=0.0"))
    reviews, quarantine, written = read(spark, out)
    assert summary == {**written, "seconds": summary["seconds"], "reviews_per_second": summary["reviews_per_second"]}
    assert {k: v["reason"] for k, v in quarantine.items()} == {
        "train/pos/2_8": C.EMPTY_TEXT, "train/neg/0_2": C.INVALID_UTF8, "train/neg/1_1": C.EMPTY_TEXT,
        "train/neg/oops": C.BAD_FILENAME, "train/unsup/0_0": C.TEXT_TOO_LARGE}
    assert quarantine["train/neg/0_2"]["excerpt"] == "bad bytes \ufffd\ufffd here"
    assert quarantine["train/unsup/0_0"]["detail"] == "65 bytes > ingest.max_text_bytes=64"
    assert sorted(reviews) == ["test/pos/0_10", "train/pos/0_9", "train/pos/10_7", "train/unsup/1_0"]
    r = reviews["train/pos/0_9"]
    assert (r["split"], r["label"], r["rating"], r["text"], r["source"]) == (
        "train", 1, 9, "A great film.<br /><br />Loved it", "train/pos/0_9.txt")
    assert reviews["train/pos/10_7"]["text"] == "Good énough"
    assert (reviews["train/unsup/1_0"]["split"], reviews["train/unsup/1_0"]["label"]) == ("unsup", None)
    assert reviews["test/pos/0_10"]["split"] == "test"
    # ordinal: split (train, test), class (pos, neg, unsup), numeric id - over all 9 records
    ordinals = {**{k: v["ordinal"] for k, v in reviews.items()}, **{k: v["ordinal"] for k, v in quarantine.items()}}
    assert sorted(ordinals, key=ordinals.get) == [
        "train/pos/0_9", "train/pos/2_8", "train/pos/10_7", "train/neg/0_2", "train/neg/1_1", "train/neg/oops",
        "train/unsup/0_0", "train/unsup/1_0", "test/pos/0_10"]
    assert sorted(ordinals.values()) == list(range(9))
    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (9, 4, 5)
    assert summary["reconciled"] is True
    assert summary["quarantined_by_reason"] == {"bad_filename": 1, "empty_text": 2, "invalid_utf8": 1,
                                                "text_too_large": 1}


def test_csv_every_reason_and_reconciliation(spark, conf, tmp_path):
    rows = [
        b'id,review,sentiment',
        b'a,"Fine, really ""fine""",positive',
        b'b,"two\nlines",NEGATIVE',
        b'c,"",positive',
        b'd,"  ",negative',
        b'e,"caf\xe9",positive',
        b'f,ok,',
        b'g,ok,meh',
        b'h,"closed"junk,positive',
        b'a,duplicate of a,negative',
        b'i,' + b'y' * 70 + b',positive',
        b',no id,positive',
        b'j,last one,neg',
    ]
    path = tmp_path / "in" / "reviews.csv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(b"\r\n".join(rows) + b"\r\n"))
    out = tmp_path / "out"
    summary = ingest(spark, str(path), str(out), small_conf(conf, "ingest.csv_id_column=id", "ingest.val_fraction=0"))
    reviews, quarantine, _ = read(spark, out)
    assert {k: (v["text"], v["label"], v["split"]) for k, v in reviews.items()} == {
        "a": ('Fine, really "fine"', 1, "train"), "b": ("two\nlines", 0, "train"), "j": ("last one", 0, "train")}
    assert {k: v["reason"] for k, v in quarantine.items()} == {
        "c": C.EMPTY_TEXT, "d": C.EMPTY_TEXT, "e": C.INVALID_UTF8, "f": C.MISSING_LABEL, "g": C.UNKNOWN_LABEL,
        "reviews.csv.gz:line 10": C.MALFORMED_CSV, "a": C.DUPLICATE_ID, "i": C.TEXT_TOO_LARGE,
        "reviews.csv.gz:line 13": C.MISSING_ID}
    assert quarantine["a"]["detail"] == "review_id first seen at reviews.csv.gz:line 2"
    assert quarantine["reviews.csv.gz:line 10"]["excerpt"] == 'h,"closed"junk,positive\r\n'
    assert quarantine["g"]["detail"] == 'label ["meh"] is not in ingest.positive_labels/negative_labels'
    assert [reviews[k]["ordinal"] for k in ("a", "b", "j")] == [0, 1, 11]
    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (12, 3, 9)


def test_csv_val_split_matches_python_twin(spark, conf, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("review,sentiment\n" + "".join(f"review number {i},positive\n" for i in range(200)))
    out = tmp_path / "out"
    ingest(spark, str(path), str(out), small_conf(conf, "ingest.val_fraction=0.3"))
    reviews, _, summary = read(spark, out)
    expected_val = {f"r/{i}" for i in range(200) if is_val(f"r/{i}", 0.3)}
    assert {k for k, v in reviews.items() if v["split"] == "val"} == expected_val
    assert summary["written_by_split"] == {"train": 200 - len(expected_val), "val": len(expected_val)}
    assert summary["val_split"] == {"rule": "review_id", "fraction": 0.3, "rows_by_title": 0, "rows_by_review_id": 200,
                                    "train_titles": 0, "val_titles": 0, "titles_on_both_sides": 0}
    assert {v["title"] for v in reviews.values()} == {None}


def test_jsonl_and_parquet_inputs(spark, conf, tmp_path):
    jl = tmp_path / "in.jsonl"
    jl.write_bytes(b'{"id": 7, "body": "good", "y": 1}\n{"id": 8, "body": "bad", "y": 0}\nnot json\n'
                   b'{"id": 9, "body": ["x"], "y": 1}\n')
    c = small_conf(conf, "ingest.text_column=body", "ingest.label_column=y", "ingest.id_column=id",
                   "ingest.val_fraction=0")
    summary = ingest(spark, str(jl), str(tmp_path / "o1"), c)
    reviews, quarantine, _ = read(spark, tmp_path / "o1")
    assert {k: (v["text"], v["label"]) for k, v in reviews.items()} == {"7": ("good", 1), "8": ("bad", 0)}
    assert {k: v["reason"] for k, v in quarantine.items()} == {"in.jsonl:line 3": C.MALFORMED_JSON, "9": C.NON_TEXT}
    assert summary["rows_read"] == 4

    spark.createDataFrame([("p1", "nice", "positive"), ("p2", None, "negative"), ("p3", "meh", None)],
                          "rid string, txt string, sentiment string").coalesce(1).write.parquet(str(tmp_path / "pq"))
    c = small_conf(conf, "ingest.text_column=txt", "ingest.label_column=sentiment", "ingest.id_column=rid",
                   "ingest.val_fraction=0")
    summary = ingest(spark, str(tmp_path / "pq"), str(tmp_path / "o2"), c, fmt="parquet")
    reviews, quarantine, _ = read(spark, tmp_path / "o2")
    assert list(reviews) == ["p1"] and reviews["p1"]["ordinal"] == 0
    assert {k: v["reason"] for k, v in quarantine.items()} == {"p2": C.EMPTY_TEXT, "p3": C.MISSING_LABEL}


def test_wrong_columns_fail_before_any_output(spark, conf, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,label\nhello,positive\n")
    with pytest.raises(ValueError, match=r"the text column 'review' is not in the CSV header \['text', 'label'\]"):
        ingest(spark, str(path), str(tmp_path / "out"), small_conf(conf))
    assert not (tmp_path / "out").exists()
    with pytest.raises(IngestError, match="does not exist"):
        ingest(spark, str(tmp_path / "nope"), str(tmp_path / "out"), small_conf(conf), fmt="csv")


def test_every_record_quarantined_still_succeeds(spark, conf, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'review,sentiment\n"",positive\n"\xff",negative\nfine,maybe\n')
    summary = ingest(spark, str(path), str(tmp_path / "out"), small_conf(conf))
    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (3, 0, 3)
    assert summary["quarantined_by_reason"] == {"empty_text": 1, "invalid_utf8": 1, "unknown_label": 1}
    assert summary["written_by_split"] == {}


def test_header_only_and_empty_inputs(spark, conf, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"review,sentiment\r\n")
    summary = ingest(spark, str(path), str(tmp_path / "out"), small_conf(conf))
    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (0, 0, 0)


def _titled_aclimdb(root):
    """7 labelled reviews of two movies (two without a known title) and one unsup review."""
    url = "http://www.imdb.com/title/{}/usercomments\n"
    for stem in ("0_9", "1_8", "2_7"):
        write(root / f"train/pos/{stem}.txt", f"positive review {stem}".encode())
    for stem in ("0_1", "1_2", "2_3", "3_4"):
        write(root / f"train/neg/{stem}.txt", f"negative review {stem}".encode())
    write(root / "train/unsup/0_0.txt", b"unlabelled")
    write(root / "train/urls_pos.txt", "".join(url.format(t) for t in ("tt0000001", "tt0000002", "tt0000001")).encode())
    # line 2 has no title and line 3 is missing: both reviews fall back to their review id
    write(root / "train/urls_neg.txt", (url.format("tt0000002") + url.format("tt0000001")
                                        + "http://www.imdb.com/\n").encode())
    write(root / "train/urls_unsup.txt", url.format("tt0000005").encode())


def test_aclimdb_val_split_groups_by_title(spark, conf, tmp_path):
    root = tmp_path / "aclImdb"
    _titled_aclimdb(root)
    out = tmp_path / "out"
    summary = ingest(spark, str(root), str(out), small_conf(conf, "ingest.val_fraction=0.5"))
    reviews, _, _ = read(spark, out)
    assert {k: v["title"] for k, v in reviews.items()} == {
        "train/pos/0_9": "tt0000001", "train/pos/1_8": "tt0000002", "train/pos/2_7": "tt0000001",
        "train/neg/0_1": "tt0000002", "train/neg/1_2": "tt0000001", "train/neg/2_3": None, "train/neg/3_4": None,
        "train/unsup/0_0": "tt0000005"}
    # tt0000001 hashes to train and tt0000002 to val at 0.5; the untitled two go by review id
    assert {k: v["split"] for k, v in reviews.items()} == {
        "train/pos/0_9": "train", "train/pos/2_7": "train", "train/neg/1_2": "train", "train/neg/2_3": "train",
        "train/pos/1_8": "val", "train/neg/0_1": "val", "train/neg/3_4": "val", "train/unsup/0_0": "unsup"}
    assert all((v["split"] == "val") == is_val(k, 0.5, v["title"]) for k, v in reviews.items() if v["split"] != "unsup")
    assert summary["val_split"] == {"rule": "title+review_id", "fraction": 0.5, "rows_by_title": 5,
                                    "rows_by_review_id": 2, "train_titles": 1, "val_titles": 1,
                                    "titles_on_both_sides": 0}


def test_val_group_review_id_keeps_the_old_split(spark, conf, tmp_path):
    root = tmp_path / "aclImdb"
    _titled_aclimdb(root)
    out = tmp_path / "out"
    summary = ingest(spark, str(root), str(out), small_conf(conf, "ingest.val_fraction=0.5", "ingest.val_group=review_id"))
    reviews, _, _ = read(spark, out)
    assert sorted(k for k, v in reviews.items() if v["split"] == "val") == [
        "train/neg/0_1", "train/neg/1_2", "train/neg/3_4", "train/pos/0_9", "train/pos/2_7"]
    assert reviews["train/pos/1_8"]["title"] == "tt0000002"  # titles are still recorded
    assert summary["val_split"] == {"rule": "review_id", "fraction": 0.5, "rows_by_title": 0,
                                    "rows_by_review_id": 7, "train_titles": 1, "val_titles": 2,
                                    "titles_on_both_sides": 1}
