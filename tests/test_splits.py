from __future__ import annotations

import pytest

from reviewpipe.splits import id_hash, is_val, rule, split_key, val_threshold


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


def test_title_is_the_key_where_known():
    assert split_key("train/pos/0_9", "tt0453418") == "tt0453418"
    assert split_key("train/pos/0_9", None) == split_key("train/pos/0_9", "") == "train/pos/0_9"
    # every review of one movie lands on the same side, whatever its id
    sides = {is_val(f"train/pos/{i}_9", 0.2, "tt0000002") for i in range(50)}
    assert sides == {is_val("anything", 0.2, "tt0000002")}
    assert is_val("train/pos/0_9", 0.5, "tt0000002") is True and is_val("train/pos/0_9", 0.5) is True
    assert is_val("train/pos/1_8", 0.5, "tt0000002") is True and is_val("train/pos/1_8", 0.5) is False


def test_rule_names():
    assert (rule(5, 0), rule(0, 5), rule(5, 2), rule(0, 0)) == ("title", "review_id", "title+review_id", "review_id")
