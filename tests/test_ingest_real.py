"""Ingest of the real datasets in ../shared/datasets (skipped with a reason when absent)."""

from __future__ import annotations

import pytest

from conftest import IMDB_CSV, require
from reviewpipe import constants as C
from reviewpipe.ingest import ingest

pytestmark = [pytest.mark.spark, pytest.mark.integration]


@pytest.fixture(scope="module")
def aclimdb_ingested(spark, conf, extracted_aclimdb, tmp_path_factory):
    out = tmp_path_factory.mktemp("acl") / "ingest"
    summary = ingest(spark, str(extracted_aclimdb), str(out), conf)
    return summary, spark.read.parquet(str(out / C.REVIEWS_DIR))


def test_aclimdb_counts_split_and_zero_quarantine(aclimdb_ingested):
    from pyspark.sql import functions as F

    summary, reviews = aclimdb_ingested
    assert summary["rows_read"] == 75_000
    assert summary["rows_quarantined"] == 0 and summary["quarantined_by_reason"] == {}
    assert summary["written_by_split"] == {"train": 19_945, "val": 5_055, "unsup": 50_000}
    by_class = {r["cls"]: r["n"] for r in reviews.groupBy(F.split(C.REVIEW_ID, "/")[1].alias("cls"))
                .agg(F.count(F.lit(1)).alias("n")).collect()}
    assert by_class == {"pos": 12_500, "neg": 12_500, "unsup": 50_000}
    assert reviews.select(C.REVIEW_ID).distinct().count() == 75_000
    assert reviews.agg(F.min(C.ORDINAL), F.max(C.ORDINAL)).first() == (0, 74_999)
    first = reviews.filter(F.col(C.ORDINAL) == 0).first()
    assert (first[C.REVIEW_ID], first[C.LABEL], first[C.RATING]) == ("train/pos/0_9", 1, 9)


def test_imdb_csv_counts(spark, conf, tmp_path):
    path = require(IMDB_CSV)
    summary = ingest(spark, str(path), str(tmp_path / "ingest"), conf)
    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (25_000, 25_000, 0)
    assert summary["written_by_split"] == {"train": 20_030, "val": 4_970}
    reviews = spark.read.parquet(str(tmp_path / "ingest" / C.REVIEWS_DIR))
    labels = {r[C.LABEL]: r["count"] for r in reviews.groupBy(C.LABEL).count().collect()}
    assert labels == {1: 12_500, 0: 12_500}
    assert reviews.select(C.REVIEW_ID).distinct().count() == 25_000
