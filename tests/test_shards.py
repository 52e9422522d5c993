"""The streaming tf.data reader over encoded shards (no Spark: shards are written here)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reviewpipe import constants as C
from reviewpipe.shards import ShardsError, length_batches, make_dataset

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


def write_ragged(root, lengths, maxlen, padding="post", files=2):
    """Row r: ``lengths[r]`` ids equal to r + 2, padded to ``maxlen``; its label is r (int8)."""
    n, cut = len(lengths), np.array_split(np.arange(len(lengths)), files)
    (root / "split=train").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, rows in enumerate(cut):
        ids = np.zeros((len(rows), maxlen), np.int32)
        for j, r in enumerate(rows):
            k = lengths[r]
            if padding == "post":
                ids[j, :k] = r + 2
            elif k:
                ids[j, -k:] = r + 2
        t = pa.table({C.REVIEW_ID: [f"r{r}" for r in rows], C.LABEL: pa.array(rows.tolist(), pa.int8()),
                      C.IDS: pa.array(ids.tolist(), pa.list_(pa.int32())),
                      C.LENGTH: pa.array([lengths[r] for r in rows], pa.int32()), C.OOV: pa.array([0] * len(rows), pa.int32())})
        path = f"split=train/part-{i:05d}.parquet"
        pq.write_table(t, root / path, row_group_size=16)
        entries.append({"path": path, "rows": len(rows)})
    (root / C.MANIFEST).write_text(json.dumps({"vocab_fingerprint": "f" * 64, "maxlen": maxlen, "row_group_rows": 16,
                                               "padding": padding, "truncating": "pre",
                                               "splits": {"train": {"rows": n, "files": entries}}}))


def test_length_step_batches_similar_lengths_cropped_with_every_row_and_label(tmp_path):
    lengths = np.random.default_rng(3).integers(0, 21, 100)
    lengths[:3] = (0, 20, 1)
    write_ragged(tmp_path, lengths, 20)
    make = lambda seed, **kw: list(make_dataset(tmp_path, "train", batch_size=5, vocab_fingerprint="f" * 64,
                                                seed=seed, shuffle_buffer=32, length_step=4, **kw))
    batches = make(1)
    assert len(batches) == 20  # as many as ds.batch(5): 100 rows in windows of 16 x 5
    seen, width_sum = [], 0
    for ids, labels in batches:
        ids, rows = ids.numpy(), labels.numpy().astype(int)
        n = (ids != 0).sum(axis=1)
        np.testing.assert_array_equal(n, lengths[rows])  # every id kept, each row with its own label
        assert ((ids == 0) | (ids == rows[:, None] + 2)).all()
        assert ids.shape[1] == min(20, max(1, -(-n.max() // 4) * 4))  # a batch of empty rows: 1 step
        seen += rows.tolist()
        width_sum += ids.shape[1]
    assert sorted(seen) == list(range(100))
    assert width_sum <= 0.75 * 20 * len(batches)  # sorted windows: most batches are narrower than maxlen
    again = [b[1].numpy().tolist() for b in make(1)]
    assert again == [b[1].numpy().tolist() for b in batches] and again != [b[1].numpy().tolist() for b in make(2)]
    # val: no shuffle, the same rows in one deterministic order
    flat = [int(r) for _, labels in make(0, shuffle=False) for r in labels.numpy()]
    assert sorted(flat) == list(range(100)) and flat == [int(r) for _, labels in make(9, shuffle=False)
                                                          for r in labels.numpy()]


def test_length_step_crops_a_cropped_maxlen_and_refuses_left_padding(tmp_path):
    lengths = np.arange(40) % 13
    write_ragged(tmp_path / "post", lengths, 12)
    widths = {b[0].shape[1] for b in make_dataset(tmp_path / "post", "train", batch_size=4, vocab_fingerprint="f" * 64,
                                                  maxlen=10, length_step=4)}
    assert widths == {1, 4, 8, 10}  # never wider than train.maxlen; 1 for the batch of the 4 empty rows
    write_ragged(tmp_path / "pre", lengths, 12, padding="pre")
    with pytest.raises(ShardsError, match="length-sorted batches crop on the right and need post-padded shards "
                                          r"\(these are pre-padded\)"):
        make_dataset(tmp_path / "pre", "train", batch_size=4, vocab_fingerprint="f" * 64, length_step=4)


def test_length_batches_keep_every_token_and_crop_to_the_step():
    import tensorflow as tf

    lengths = [0, 12, 3, 7, 1, 11, 5, 9, 2, 12, 4]
    ids = np.zeros((len(lengths), 12), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = np.random.default_rng(i).integers(2, 50, n)
    src = tf.data.Dataset.from_tensors((ids, np.arange(len(ids), dtype=np.float32)))  # one window of 11 rows
    batches = [(b.numpy(), y.numpy().astype(int)) for b, y in length_batches(src, batch_size=3, step=4, maxlen=12,
                                                                                 min_width=2)]
    assert sorted(len(b) for b, _ in batches) == [2, 3, 3, 3]
    widths = {}
    for b, rows in batches:
        np.testing.assert_array_equal(b, ids[rows, :b.shape[1]])  # each row with its own label
        n = (b != 0).sum(axis=1)
        assert b.shape[1] % 4 == 0 and b.shape[1] >= max(n.max(), 2)  # never cuts a token
        widths[tuple(sorted(n))] = b.shape[1]
    # sorted by length, then cut: each batch holds neighbouring lengths
    assert widths == {(0, 1, 2): 4, (3, 4, 5): 8, (7, 9, 11): 12, (12, 12): 12}
    assert sorted(r for _, rows in batches for r in rows) == list(range(11))
    one = tf.data.Dataset.from_tensors((np.zeros((2, 12), np.int32), np.zeros(2, np.float32)))
    assert [b.shape[1] for b, _ in length_batches(one, 3, 4, 12)] == [1]  # empty rows: one padding step
