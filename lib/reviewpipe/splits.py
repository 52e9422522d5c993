"""Deterministic train/val carving by a stable hash of ``review_id``.

A review is in val when the first 60 bits of SHA-256(review_id) fall below
``fraction * 2**60``.  The comparison is done on integers, so Spark and Python agree
exactly; the same input always gives the same split.
"""

from __future__ import annotations

import hashlib

HASH_BITS = 60


def val_threshold(fraction: float) -> int:
    return int(fraction * (1 << HASH_BITS))


def id_hash(review_id: str) -> int:
    return int(hashlib.sha256(review_id.encode("utf-8")).hexdigest()[: HASH_BITS // 4], 16)


def is_val(review_id: str, fraction: float) -> bool:
    """Pure-Python twin of :func:`val_column`."""
    return id_hash(review_id) < val_threshold(fraction)


def val_column(review_id_col, fraction: float):
    """Spark column: True where the review goes to val."""
    from pyspark.sql import functions as F

    h = F.conv(F.substring(F.sha2(review_id_col, 256), 1, HASH_BITS // 4), 16, 10).cast("long")
    return h < F.lit(val_threshold(fraction))
