"""Streaming input from the encoded Parquet shards into ``tf.data``.

A split is never loaded into memory: each file is read a record batch (row group) at a
time with pyarrow.  Files are shuffled with the seed, read ``cycle_length`` at a time
(interleaved), rows pass through a seeded shuffle buffer, and with several workers each
one reads its own share of the files.  The manifest's vocabulary fingerprint must match
the vocabulary the model is built for.

With ``length_step`` the rows are cut into batches of similar length (:func:`length_batches`),
each cropped on the right to a multiple of the step: a masked model over post-padded rows gives
the same loss on the cropped batch, and an LSTM's cost is proportional to the batch's width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from reviewpipe import constants as C


WINDOW_BATCHES = 16  # batches per length-sorted window


class ShardsError(ValueError):
    """The shards folder is missing, incomplete, or belongs to another vocabulary."""


def load_manifest(shards_dir: str | Path) -> dict:
    path = Path(shards_dir) / C.MANIFEST
    if not path.is_file():
        raise ShardsError(f"no {C.MANIFEST} in {shards_dir}; run `make encode` first (a folder without a "
                          f"manifest is an unfinished or foreign dataset)")
    return json.loads(path.read_text(encoding="utf-8"))


def check_fingerprint(manifest: dict, vocab_fingerprint: str, shards_dir: str | Path = "") -> None:
    got = manifest.get("vocab_fingerprint")
    if got != vocab_fingerprint:
        raise ShardsError(
            f"shards {shards_dir} were encoded with vocabulary {str(got)[:12]}…, but the given vocabulary is "
            f"{vocab_fingerprint[:12]}…; re-run `make encode` with this vocabulary or pass the matching --vocab")


def split_files(shards_dir: str | Path, manifest: dict, split: str) -> list[str]:
    info = manifest["splits"].get(split)
    if info is None:
        raise ShardsError(f"{shards_dir} has no split {split!r}; it has {sorted(manifest['splits'])}")
    return [str(Path(shards_dir) / f["path"]) for f in info["files"]]


def crop(ids: np.ndarray, lengths: np.ndarray, maxlen: int, padding: str, truncating: str) -> np.ndarray:
    """Re-pad rows padded to ``ids.shape[1]`` down to ``maxlen``, as encode would have.

    A row holds ``min(length, M)`` tokens, already truncated by ``truncating``; truncating
    again the same way and padding the same way gives exactly what encoding with ``maxlen``
    gives (``pad_sequences`` semantics).
    """
    m_src = ids.shape[1]
    if maxlen >= m_src:
        return ids
    n = np.minimum(lengths.astype(np.int64), m_src)[:, None]     # tokens held per row
    m = np.minimum(n, maxlen)                                      # tokens kept per row
    first = n - m if truncating == "pre" else np.zeros_like(n)   # first kept token
    k = np.arange(maxlen)[None, :] - ((maxlen - m) if padding == "pre" else 0)  # token slot
    valid = (k >= 0) & (k < m)
    j = first + k                                                  # token number in the row
    src = j + ((m_src - n) if padding == "pre" else 0)
    out = np.take_along_axis(ids, np.clip(src, 0, m_src - 1), axis=1)
    return np.where(valid, out, C.PAD_INDEX).astype(np.int32, copy=False)


def read_row_group(path: str, row_group: int, maxlen: int, labelled: bool = True, crop_to: int = 0,
                   padding: str = "post", truncating: str = "pre") -> tuple[np.ndarray, np.ndarray]:
    """(ids [n, maxlen or crop_to] int32, labels [n] float32) of one Parquet row group.

    The labels are the ``target`` column where the file has one (soft pseudo-labels: the
    teacher's probability), else ``label``."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    target = C.TARGET if C.TARGET in pf.schema_arrow.names else C.LABEL
    t = pf.read_row_group(row_group, columns=[C.IDS, target, C.LENGTH])
    ids = t.column(C.IDS).combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, maxlen)
    labels = t.column(target).fill_null(-1).to_numpy().astype(np.float32)
    if crop_to and crop_to < maxlen:
        ids = crop(ids, t.column(C.LENGTH).to_numpy(), crop_to, padding, truncating)
    if labelled:  # unlabelled rows (label null) cannot train a classifier
        keep = labels >= 0
        ids, labels = ids[keep], labels[keep]
    return np.ascontiguousarray(ids, dtype=np.int32), labels


def row_groups(files: list[str]) -> list[int]:
    """Row groups per file, from the footers."""
    import pyarrow.parquet as pq

    return [pq.ParquetFile(f).metadata.num_row_groups for f in files]


def make_dataset(shards_dir: str | Path, split: str | Sequence[str], *, batch_size: int, vocab_fingerprint: str,
                 shuffle: bool = True, seed: int = 0, shuffle_buffer: int = 10_000, cycle_length: int = 4,
                 num_workers: int = 1, worker_index: int = 0, labelled: bool = True, maxlen: int = 0,
                 repeat: bool = False, length_step: int = 0):
    """A batched, prefetched ``tf.data.Dataset`` of (ids, label) read from the shards of one
    split, or of several (``["train", "unsup"]``) mixed as one set of files.

    Each element of the source is one Parquet row group, read by ``tf.numpy_function`` in
    parallel; files are shuffled, then interleaved ``cycle_length`` at a time.  (Not
    ``from_generator``: its op lowers glibc's ``M_TRIM_THRESHOLD`` process-wide, which made
    CPU training steps ~40% slower in our benchmark.)  ``maxlen`` (0 = the shards') crops every
    row as encoding with that maxlen would.  ``length_step`` > 0 (post-padded shards only) gives
    batches of rows of similar length cropped to a multiple of it, as many batches as without.
    """
    import tensorflow as tf

    manifest = load_manifest(shards_dir)
    check_fingerprint(manifest, vocab_fingerprint, shards_dir)
    src_len = int(manifest["maxlen"])
    out_len = maxlen if 0 < maxlen < src_len else src_len
    padding, truncating = manifest.get("padding", "post"), manifest.get("truncating", "pre")
    if length_step and padding != "post":
        raise ShardsError(f"{shards_dir}: length-sorted batches crop on the right and need post-padded shards "
                          f"(these are {padding}-padded)")
    splits = [split] if isinstance(split, str) else list(split)
    files = worker_share(files_of(shards_dir, manifest, splits), num_workers, worker_index)

    def read(path, rg):
        return read_row_group(path.decode(), int(rg), src_len, labelled, out_len, padding, truncating)

    def read_op(path, rg):
        ids, labels = tf.numpy_function(read, [path, rg], [tf.int32, tf.float32], stateful=False)
        ids.set_shape((None, out_len))
        labels.set_shape((None,))
        return ids, labels

    def file_dataset(path, n_groups):
        return tf.data.Dataset.range(n_groups).map(lambda rg: read_op(path, rg))

    ds = tf.data.Dataset.from_tensor_slices((tf.constant(files), tf.constant(row_groups(files), tf.int64)))
    if repeat:
        ds = ds.repeat()
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(file_dataset, cycle_length=min(cycle_length, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.unbatch()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if not length_step:
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    # Windows of WINDOW_BATCHES batches re-cut by length: every window but the last is a whole
    # number of batches, so there are as many batches as ds.batch(batch_size) would make.
    ds = ds.batch(WINDOW_BATCHES * batch_size)
    return length_batches(ds, batch_size, length_step, out_len, seed, shuffle=shuffle).prefetch(tf.data.AUTOTUNE)


def length_batches(ds, batch_size: int, step: int, maxlen: int, seed: int = 0, *, shuffle: bool = True,
                   min_width: int = 1):
    """(ids, labels) windows from ``ds`` re-cut into batches of rows of similar length, each
    cropped on the right to a multiple of ``step`` (at least ``min_width``, at most ``maxlen``)
    that keeps every id; with ``shuffle`` the order of batches is shuffled (seeded) across a few
    windows, so a run does not see short rows first and long rows last."""
    import tensorflow as tf

    def cut(ids, labels):
        lengths = tf.reduce_sum(tf.cast(ids != C.PAD_INDEX, tf.int32), axis=1)
        order = tf.argsort(lengths, stable=True)
        ids, labels, lengths = tf.gather(ids, order), tf.gather(labels, order), tf.gather(lengths, order)
        n = tf.shape(ids)[0]

        def batch(start):
            end = tf.minimum(start + batch_size, n)
            width = tf.clip_by_value((lengths[end - 1] + step - 1) // step * step, min(min_width, maxlen), maxlen)
            return ids[start:end, :width], labels[start:end]

        return tf.data.Dataset.range(0, tf.cast(n, tf.int64), batch_size).map(lambda s: batch(tf.cast(s, tf.int32)))

    ds = ds.flat_map(cut)
    return ds.shuffle(4 * WINDOW_BATCHES, seed=seed) if shuffle else ds


def files_of(shards_dir: str | Path, manifest: dict, splits: Sequence[str]) -> list[str]:
    """The files of several splits, in manifest order, as one list."""
    return [f for s in splits for f in split_files(shards_dir, manifest, s)]


def worker_share(files: list[str], num_workers: int, worker_index: int) -> list[str]:
    """The files worker ``worker_index`` of ``num_workers`` reads: every num_workers-th one, so
    the shares are disjoint and together are all the files."""
    if num_workers <= 1:
        return list(files)
    if len(files) < num_workers:
        raise ShardsError(f"{len(files)} files cannot be shared by {num_workers} workers; re-encode with a "
                          f"smaller encode.rows_per_file")
    return files[worker_index::num_workers]


def split_rows(manifest: dict, split: str) -> int:
    info = manifest["splits"].get(split)
    return int(info["rows"]) if info else 0


def labelled_rows(files: list[str]) -> int:
    """Rows with a label, from the Parquet footers (row counts minus the label's null count)."""
    import pyarrow.parquet as pq

    total = 0
    for path in files:
        md = pq.ParquetFile(path).metadata
        col = md.schema.to_arrow_schema().get_field_index(C.LABEL)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            stats = rg.column(col).statistics
            if stats is None or not stats.has_null_count:
                raise ShardsError(f"{path}: no label null count in the footer; re-encode the shards")
            total += rg.num_rows - stats.null_count
    return total
