from __future__ import annotations

import gzip

import pytest

from reviewpipe import constants as C
from reviewpipe.parsing import (AclImdbFile, SchemaError, order_aclimdb, parse_aclimdb_path, parse_aclimdb_urls, parse_csv,
                                parse_jsonl)


# --- aclImdb file names -------------------------------------------------------------------
def test_aclimdb_labelled_and_unsup_paths():
    assert parse_aclimdb_path("file:/d/aclImdb/train/pos/0_9.txt") == AclImdbFile(
        "file:/d/aclImdb/train/pos/0_9.txt", "train/pos/0_9", "train", "pos", 0, 9, 1)
    assert parse_aclimdb_path("/d/aclImdb/test/neg/12499_2.txt") == AclImdbFile(
        "/d/aclImdb/test/neg/12499_2.txt", "test/neg/12499_2", "test", "neg", 12499, 2, 0)
    unsup = parse_aclimdb_path("/d/aclImdb/train/unsup/49999_0.txt")
    assert (unsup.review_id, unsup.split, unsup.label, unsup.rating) == ("train/unsup/49999_0", "unsup", None, 0)


def test_aclimdb_non_review_files_are_not_records():
    assert parse_aclimdb_path("/d/aclImdb/train/urls_pos.txt") is None
    assert parse_aclimdb_path("/d/aclImdb/README") is None
    assert parse_aclimdb_path("/d/aclImdb/train/other/1_2.txt") is None


@pytest.mark.parametrize("path, detail", [
    ("/d/aclImdb/train/pos/notes.txt", "file name 'notes.txt' is not <id>_<rating>.txt"),
    ("/d/aclImdb/train/pos/3_99.txt", "rating 99 in '3_99.txt' is outside 0-10"),
    ("/d/aclImdb/train/neg/7-3.txt", "file name '7-3.txt' is not <id>_<rating>.txt"),
])
def test_aclimdb_bad_file_names_are_quarantined(path, detail):
    f = parse_aclimdb_path(path)
    assert (f.reason, f.detail) == (C.BAD_FILENAME, detail)


def test_aclimdb_source_order_is_split_class_numeric_id():
    paths = ["/r/test/pos/0_9.txt", "/r/train/unsup/0_0.txt", "/r/train/neg/10_2.txt", "/r/train/neg/9_1.txt",
             "/r/train/pos/100_8.txt", "/r/train/pos/2_7.txt", "/r/train/pos/x.txt"]
    ordered = order_aclimdb(parse_aclimdb_path(p) for p in paths)
    assert [f.review_id for f in ordered] == [
        "train/pos/2_7", "train/pos/100_8", "train/pos/x", "train/neg/9_1", "train/neg/10_2",
        "train/unsup/0_0", "test/pos/0_9"]


# --- CSV ----------------------------------------------------------------------------------
def csv_records(data: bytes, **kw):
    return list(parse_csv(data, "f", "review", kw.pop("label", "sentiment"), kw.pop("id", ""), ))


def test_csv_rfc4180_quoting():
    data = (b'review,sentiment\r\n'
            b'"A, comma",positive\r\n'
            b'"She said ""wow""",negative\r\n'
            b'"line one\r\nline two\nline three",positive\r\n'
            b'plain text,negative\r\n')
    recs = csv_records(data)
    assert [(r.review_id, r.raw, r.label_raw, r.row, r.locator) for r in recs] == [
        ("f/0", b"A, comma", "positive", 0, "line 2"),
        ("f/1", b'She said "wow"', "negative", 1, "line 3"),
        ("f/2", b"line one\r\nline two\nline three", "positive", 2, "line 4"),
        ("f/3", b"plain text", "negative", 3, "line 7"),
    ]
    assert all(r.reason is None for r in recs)


def test_csv_a_review_past_the_csv_modules_128_kib_field_limit_is_one_record():
    long = b"word " * 60_000  # 300 kB: Python's csv refuses fields over 131,072 characters by default
    recs = csv_records(b'review,sentiment\n"' + long + b'",positive\nnext,negative\n')
    assert [(r.raw, r.label_raw, r.row, r.locator, r.reason) for r in recs] == [
        (long, "positive", 0, "line 2", None), (b"next", "negative", 1, "line 3", None)]


def test_csv_bom_gzip_and_blank_lines():
    data = gzip.compress(b'\xef\xbb\xbfreview,sentiment\n\n"x",positive\n\n')
    recs = csv_records(data)
    assert [(r.raw, r.label_raw, r.row) for r in recs] == [(b"x", "positive", 0)]


def test_csv_invalid_utf8_bytes_survive_unchanged():
    recs = csv_records(b'review,sentiment\n"caf\xe9 \xff",positive\n')
    assert recs[0].raw == b"caf\xe9 \xff" and recs[0].reason is None  # validation flags it later


def test_csv_malformed_rows_keep_their_raw_lines():
    data = (b'review,sentiment\n'
            b'"closed"junk,positive\n'
            b'too,many,fields\n'
            b'ok,negative\n'
            b'"never closed,positive\nlast,negative\n')
    recs = csv_records(data)
    assert [(r.row, r.reason, r.detail, r.raw) for r in recs] == [
        (0, C.MALFORMED_CSV, "CSV parse error: ',' expected after '\"'", b'"closed"junk,positive\n'),
        (1, C.MALFORMED_CSV, "expected 2 fields, got 3", b"too,many,fields\n"),
        (2, None, None, b"ok"),
        (3, C.MALFORMED_CSV, "CSV parse error: unexpected end of data",
         b'"never closed,positive\nlast,negative\n'),
    ]


def test_csv_configurable_columns_and_missing_column_error():
    data = b'id,text,stars\nr1,"good",pos\n'
    recs = list(parse_csv(data, "f", "text", "stars", "id"))
    assert [(r.review_id, r.raw, r.label_raw) for r in recs] == [("r1", b"good", "pos")]
    with pytest.raises(SchemaError, match=r"f: the text column 'review' is not in the CSV header \['id', 'text', 'stars'\]"):
        list(parse_csv(data, "f", "review", "sentiment"))


# --- JSONL --------------------------------------------------------------------------------
def test_jsonl_records_and_errors():
    data = (b'{"text": "fine", "label": 1}\n'
            b'\n'
            b'{"text": 42, "label": "pos"}\n'
            b'{"text": "x", "label": true\n'
            b'[1, 2]\r\n'
            b'{"text": "caf\xe9"}\n'
            b'{"label": 0}\n'
            b'{"text": "lone \\ud800 surrogate", "label": 0.0}\n')
    recs = list(parse_jsonl(data, "j", "text", "label"))
    assert [(r.review_id, r.row, r.locator, r.reason, r.label_raw) for r in recs] == [
        ("j/0", 0, "line 1", None, "1"),
        ("j/1", 1, "line 3", C.NON_TEXT, "pos"),
        ("j/2", 2, "line 4", C.MALFORMED_JSON, None),
        ("j/3", 3, "line 5", C.MALFORMED_JSON, None),
        ("j/4", 4, "line 6", C.INVALID_UTF8, None),
        ("j/5", 5, "line 7", C.EMPTY_TEXT, "0"),
        ("j/6", 6, "line 8", None, "0"),
    ]
    assert recs[0].raw == b"fine"
    assert recs[6].raw == b"lone \xed\xa0\x80 surrogate"  # kept as invalid UTF-8, quarantined later


def test_jsonl_leading_bom_and_nul_bytes():
    recs = list(parse_jsonl(b'\xef\xbb\xbf{"text": "bom", "label": 0}\n{"text": "a\\u0000b", "label": 1}\n',
                            "j", "text", "label"))
    assert [(r.raw, r.label_raw, r.reason) for r in recs] == [(b"bom", "0", None), (b"a\x00b", "1", None)]


def test_csv_old_mac_line_endings_and_nul_bytes():
    recs = csv_records(b'review,sentiment\rold mac,positive\r"nul\x00byte",negative\r')
    assert [(r.raw, r.label_raw, r.locator) for r in recs] == [
        (b"old mac", "positive", "line 2"), (b"nul\x00byte", "negative", "line 3")]


def test_aclimdb_urls_give_titles_by_line():
    content = (b"http://www.imdb.com/title/tt0453418/usercomments\n"
               b"http://www.imdb.com/title/tt0064354/usercomments\r\n"
               b"\n"
               b"http://www.imdb.com/\n"
               b"http://www.imdb.com/title/tt0453418/usercomments")
    assert parse_aclimdb_urls(content) == ["tt0453418", "tt0064354", None, None, "tt0453418"]
    assert parse_aclimdb_urls(b"") == []
