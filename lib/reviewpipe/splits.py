"""Deterministic train/val carving by a stable hash of a group key.

The key is the review's IMDB title (``tt0453418``) where the input says which movie a
review is about (aclImdb's ``urls_*.txt``), and its ``review_id`` otherwise.  Grouping by
title puts all of a movie's reviews on one side, as aclImdb's own train/test split does, so
the val figure predicts reviews of other movies instead of rewarding movie-specific words.

A record is in val when the first 60 bits of SHA-256(key) fall below ``fraction * 2**60``.
The comparison is done on integers, so Spark and Python agree exactly; the same input
always gives the same split.
"""

from __future__ import annotations

import hashlib

HASH_BITS = 60
# What ingest_summary.json's val_split.rule says was used.
RULE_TITLE = "title"            # every carved record had a title
RULE_REVIEW_ID = "review_id"    # none had one (CSV, JSONL, Parquet)
RULE_MIXED = "title+review_id"  # some had one: the title where known, else review_id


def val_threshold(fraction: float) -> int:
    return int(fraction * (1 << HASH_BITS))


def id_hash(key: str) -> int:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[: HASH_BITS // 4], 16)


def split_key(review_id: str, title: str | None = None) -> str:
    """The string hashed for the split: the title when known, else the review id."""
    return title if title else review_id


def is_val(review_id: str, fraction: float, title: str | None = None) -> bool:
    """Pure-Python twin of :func:`val_column`."""
    return id_hash(split_key(review_id, title)) < val_threshold(fraction)


def key_column(review_id_col, title_col):
    """Spark twin of :func:`split_key` (an empty title counts as unknown)."""
    from pyspark.sql import functions as F

    return F.coalesce(F.nullif(title_col, F.lit("")), review_id_col)


def val_column(key_col, fraction: float):
    """Spark column: True where the record with this key goes to val."""
    from pyspark.sql import functions as F

    h = F.conv(F.substring(F.sha2(key_col, 256), 1, HASH_BITS // 4), 16, 10).cast("long")
    return h < F.lit(val_threshold(fraction))


def rule(with_title: int, without_title: int) -> str:
    """Name the rule that carved a set of records, from how many had a title."""
    if with_title and without_title:
        return RULE_MIXED
    return RULE_TITLE if with_title else RULE_REVIEW_ID
