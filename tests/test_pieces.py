"""Big CSV/JSONL files read in byte-range pieces give exactly the records of the whole file."""

from __future__ import annotations

import json

import pytest

from reviewpipe import constants as C
from reviewpipe import pieces
from reviewpipe.config import load_conf
from reviewpipe.ingest import IngestError, ingest, read_raw

pytestmark = pytest.mark.spark

CSV = ('\ufeffreview,sentiment\r\n'
       '"A film with, commas",positive\r\n'
       '"Quoted ""twice"" and\nover two lines",negative\r\n'
       '\r\n'
       'plain text,pos\r\n'
       '"three\nline\nreview",neg\r\n'
       'too,many,fields,here\r\n'
       '"caf\u00e9 \ud83d\ude00 unicode",positive\r\n'
       '"a ""quote"" at the end ""\n""",negative\r\n' * 3
       + 'last one without a newline,positive').encode("utf-8", "surrogatepass")
JSONL = (b'\xef\xbb\xbf{"text": "first", "label": 1}\n'
         b'\n'
         b'{"text": "with \\n an escaped newline", "label": 0}\r\n'
         b'{not json}\n'
         b'{"text": "bad \xff utf8", "label": 1}\n'
         b'[1, 2]\n'
         b'{"text": 42, "label": 0}\n'
         + b''.join(b'{"text": "row %d", "label": %d}\n' % (i, i % 2) for i in range(20))
         + b'{"text": "no newline at the end", "label": 1}')


def conf_with(conf, *extra):
    return load_conf(None, [f"spark.defaults_file={conf.spark.defaults_file}", *extra])


def raw_rows(spark, path, fmt, conf):
    cols = ["file_rank", "row", "source", "review_id", "label_raw", "raw", "reason", "detail"]
    df = read_raw(spark, str(path), fmt, conf).df
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


@pytest.mark.parametrize("fmt,data", [("csv", CSV), ("jsonl", JSONL)])
def test_pieces_give_the_records_of_the_whole_file(spark, conf, tmp_path, fmt, data):
    path = tmp_path / f"big.{fmt}"
    path.write_bytes(data)
    other = tmp_path / f"small.{fmt}"  # a small file beside it stays whole, ranked in its place
    other.write_bytes(data[:data.index(b"\n") + 1] + (b'x,positive\n' if fmt == "csv" else b'{"text": "x"}\n'))
    whole = raw_rows(spark, tmp_path, fmt, conf_with(conf, "ingest.split_bytes=0"))
    assert len(whole) > 20 and any(r[6] for r in whole)  # quarantine rows are part of it
    for split in (24, 160):  # pieces shorter than most records (30+ pieces), and pieces of several records
        got = raw_rows(spark, tmp_path, fmt, conf_with(conf, f"ingest.split_bytes={split}"))
        assert got == whole, split


def test_a_record_longer_than_several_pieces_is_read_whole(spark, conf, tmp_path):
    """A 2.5 MB quoted review with a newline every 100 bytes across 600 kB pieces (past the csv
    module's default field limit, 128 KiB): the records of the whole file, the long one whole."""
    long_text = ("x" * 99 + "\n") * 25_000
    body = "".join(f'"row {i}",positive\n' for i in range(3000))
    path = tmp_path / "long.csv"
    path.write_bytes(("review,sentiment\n" + body + f'"{long_text}",negative\n' + body).encode())
    whole = raw_rows(spark, path, "csv", conf_with(conf, "ingest.split_bytes=0", "ingest.max_text_bytes=8000000"))
    assert len(whole) == 6001 and not any(r[6] for r in whole)
    got = raw_rows(spark, path, "csv", conf_with(conf, "ingest.split_bytes=600000", "ingest.max_text_bytes=8000000"))
    assert got == whole
    assert [r[5] for r in got if r[4] == "negative"] == [long_text.encode()]
    first = pieces.Piece(0, str(path), 0, 600_000, path.stat().st_size)  # the piece where it starts reads on
    assert pieces.region(first, 0).endswith(b'",negative\n') and len(pieces.region(first, 0)) > 2_500_000


def test_regions_tile_the_file_and_respect_quotes():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as t:
        path = Path(t) / "f.csv"
        path.write_bytes(CSV)
        for split in (1, 5, 16, 100):
            plan = pieces.plan(0, str(path), len(CSV), split)
            parity, regions = 0, []
            for pc in plan:
                regions.append(pieces.region(pc, parity))
                parity = (parity + pieces.quotes(pc)) % 2
            assert b"".join(regions) == CSV  # every byte in exactly one piece's records
            assert all(r.count(b'"') % 2 == 0 for r in regions)  # no piece cuts a quoted field


def test_a_split_file_ingests_with_the_same_ids_sources_and_quarantine(spark, conf, tmp_path):
    path = tmp_path / "in" / "reviews.csv"
    path.parent.mkdir()
    path.write_bytes(CSV)
    out = {}
    for split in (0, 40):
        c = conf_with(conf, f"ingest.split_bytes={split}", f"data.checksums={conf.data.checksums}")
        summary = ingest(spark, str(path), str(tmp_path / f"out{split}"), c)
        reviews = sorted(tuple(r) for r in spark.read.parquet(str(tmp_path / f"out{split}" / C.REVIEWS_DIR))
                         .select(C.REVIEW_ID, C.SPLIT, C.LABEL, C.TEXT, C.SOURCE, C.ORDINAL).collect())
        quarantine = sorted(tuple(r) for r in spark.read.parquet(str(tmp_path / f"out{split}" / C.QUARANTINE_DIR))
                            .select(C.SOURCE, C.REVIEW_ID, C.ORDINAL, C.REASON, C.EXCERPT).collect())
        out[split] = (reviews, quarantine, {k: summary[k] for k in ("rows_read", "rows_written", "rows_quarantined")})
    assert out[40] == out[0]
    assert out[0][2]["rows_read"] == out[0][2]["rows_written"] + out[0][2]["rows_quarantined"]


def test_malformed_quoting_in_a_split_file_is_refused_with_the_way_out(spark, conf, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'review,sentiment\n"fine",positive\n"broken "quote here,negative\n' + b'"ok",positive\n' * 10)
    whole = raw_rows(spark, path, "csv", conf_with(conf, "ingest.split_bytes=0"))
    assert any(r[6] == C.MALFORMED_CSV for r in whole)
    with pytest.raises(Exception, match=r"set ingest.split_bytes=0 to read it whole"):
        raw_rows(spark, path, "csv", conf_with(conf, "ingest.split_bytes=30"))
