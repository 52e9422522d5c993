from __future__ import annotations

import pytest

from reviewpipe.splits import id_hash, is_val, val_threshold


def test_hash_is_sha256_prefix():
    # `printf train/pos/0_9 | sha256sum` begins 44f46ae9d0e4b71: its first 60 bits are the hash.
    assert id_hash("train/pos/0_9") == int("44f46ae9d0e4b71", 16)
    assert val_threshold(0.2) == 230584300921369408  # int(0.2 * 2**60), 0.2 rounded to a double


@pytest.mark.parametrize("rid, expected", [
    ("train/pos/0_9", False), ("train/pos/1_7", False), ("train/neg/1_1", False),
    ("train/neg/0_1", True), ("train/neg/3_1", True), ("imdb_train_reviews/0", False),
])
def test_known_assignments(rid, expected):
    assert is_val(rid, 0.2) is expected


def test_fraction_bounds_and_stability():
    ids = [f"train/pos/{i}_9" for i in range(10_000)]
    assert sum(is_val(r, 0.0) for r in ids) == 0
    n = sum(is_val(r, 0.2) for r in ids)
    assert n == 2003
    assert n == sum(is_val(r, 0.2) for r in ids)  # deterministic
