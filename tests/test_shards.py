"""The streaming tf.data reader over encoded shards (no Spark: shards are written here)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reviewpipe import constants as C
from reviewpipe.shards import ShardsError, make_dataset

MAXLEN = 6


def write_shards(root, files_rows: list[int], fingerprint="f" * 64, null_every=0):
    files, rid = [], 0
    for i, n in enumerate(files_rows):
        ids = np.arange(rid, rid + n, dtype=np.int32)[:, None] * 10 + np.arange(MAXLEN, dtype=np.int32)
        labels = [None if null_every and (rid + j) % null_every == 0 else (rid + j) % 2 for j in range(n)]
        t = pa.table({C.REVIEW_ID: [f"r{rid + j}" for j in range(n)], C.LABEL: pa.array(labels, pa.int8()),
                      C.IDS: pa.array(ids.tolist(), pa.list_(pa.int32())), C.LENGTH: pa.array([MAXLEN] * n, pa.int32()),
                      C.OOV: pa.array([0] * n, pa.int32())})
        path = f"split=train/part-{i:05d}.parquet"
        (root / "split=train").mkdir(parents=True, exist_ok=True)
        pq.write_table(t, root / path, row_group_size=7)
        files.append({"path": path, "rows": n})
        rid += n
    manifest = {"vocab_fingerprint": fingerprint, "maxlen": MAXLEN, "row_group_rows": 7,
                "splits": {"train": {"rows": rid, "files": files}}}
    (root / C.MANIFEST).write_text(json.dumps(manifest))
    return rid


def first_ids(ds):
    return [int(x) // 10 for ids, _ in ds for x in ids[:, 0].numpy()]


def test_yields_exactly_the_shard_rows(tmp_path):
    n = write_shards(tmp_path, [20, 13, 9])
    ds = make_dataset(tmp_path, "train", batch_size=8, vocab_fingerprint="f" * 64, shuffle=False)
    batches = list(ds)
    assert [b[0].shape[1] for b in batches] == [MAXLEN] * len(batches)
    got = first_ids(batches)
    assert sorted(got) == list(range(n)) and len(got) == 42
    ids, labels = batches[0]
    np.testing.assert_array_equal(ids.numpy()[1], np.arange(MAXLEN) + 10 * got[1])
    assert labels.numpy().tolist()[:2] == [float(got[0] % 2), float(got[1] % 2)]


def test_shuffle_is_deterministic_by_seed(tmp_path):
    write_shards(tmp_path, [20, 13, 9])
    order = lambda seed: first_ids(make_dataset(tmp_path, "train", batch_size=5, vocab_fingerprint="f" * 64,
                                                seed=seed, shuffle_buffer=16))
    a, b, c = order(1), order(1), order(2)
    assert a == b and a != c and sorted(a) == list(range(42))
    assert a != list(range(42))


def test_unlabelled_rows_are_skipped_and_workers_split_files(tmp_path):
    write_shards(tmp_path, [10, 10, 10, 10], null_every=5)
    all_rows = first_ids(make_dataset(tmp_path, "train", batch_size=64, vocab_fingerprint="f" * 64, shuffle=False))
    assert sorted(all_rows) == [i for i in range(40) if i % 5]
    shares = [first_ids(make_dataset(tmp_path, "train", batch_size=64, vocab_fingerprint="f" * 64, shuffle=False,
                                     num_workers=2, worker_index=w)) for w in (0, 1)]
    assert sorted(shares[0] + shares[1]) == sorted(all_rows) and not set(shares[0]) & set(shares[1])


def test_refusals(tmp_path):
    write_shards(tmp_path, [5])
    with pytest.raises(ShardsError, match=r"were encoded with vocabulary ffffffffffff…, but the given vocabulary is 000000000000…"):
        make_dataset(tmp_path, "train", batch_size=4, vocab_fingerprint="0" * 64)
    with pytest.raises(ShardsError, match=r"has no split 'val'"):
        make_dataset(tmp_path, "val", batch_size=4, vocab_fingerprint="f" * 64)
    with pytest.raises(ShardsError, match=r"no _manifest.json in .*run `make encode` first"):
        make_dataset(tmp_path / "nope", "train", batch_size=4, vocab_fingerprint="f" * 64)


def test_staged_local_swaps_in_on_success_and_keeps_the_old_folder_on_failure(tmp_path):
    from reviewpipe.storage import staged_local

    out = tmp_path / "out"
    with staged_local(out) as stage:
        (stage / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "a").read_text() == "1"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_local(out) as stage:
            (stage / "a").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "a").read_text() == "1"
    with staged_local(out) as stage:
        (stage / "b").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
