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
    # val is carved by movie (urls_*.txt): 733 of the 3,456 titles, 5,240 reviews (0.2096 of 25,000)
    assert summary["written_by_split"] == {"train": 19_760, "val": 5_240, "unsup": 50_000}
    assert summary["val_split"] == {"rule": "title", "fraction": 0.2, "rows_by_title": 25_000, "rows_by_review_id": 0,
                                    "train_titles": 2_723, "val_titles": 733, "titles_on_both_sides": 0}
    titles = reviews.filter(F.col(C.SPLIT).isin("train", "val")).groupBy(C.TITLE).agg(
        F.count_distinct(C.SPLIT).alias("sides"), F.count(F.lit(1)).alias("n"))
    assert titles.agg(F.max("sides"), F.max("n"), F.count(F.lit(1))).first() == (1, 30, 3_456)
    assert reviews.filter(F.col(C.TITLE).isNull()).count() == 0
    val_labels = {r[C.LABEL]: r["count"] for r in reviews.filter(F.col(C.SPLIT) == "val").groupBy(C.LABEL).count().collect()}
    assert val_labels == {1: 2_737, 0: 2_503}
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
    assert summary["val_split"]["rule"] == "review_id"  # a CSV names no movie: the review-id hash
    reviews = spark.read.parquet(str(tmp_path / "ingest" / C.REVIEWS_DIR))
    labels = {r[C.LABEL]: r["count"] for r in reviews.groupBy(C.LABEL).count().collect()}
    assert labels == {1: 12_500, 0: 12_500}
    assert reviews.select(C.REVIEW_ID).distinct().count() == 25_000
