"""One-hot and multi-hot encodings: Keras ``texts_to_matrix`` / ``sequences_to_matrix`` modes.

``binary`` (1 where the word occurs), ``count``, ``freq`` (count / sequence length) and
``tfidf`` with Keras's own formula: ``(1 + log(count)) * log(1 + N / (1 + doc_count))``.
Column j is word id j; width = vocabulary size (ids < num_words), as in Keras.  Rows are
kept sparse (indices + values) because a dense 20,000-wide row per review is mostly zeros.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MODES = ("binary", "count", "freq", "tfidf")


def sparse_rows(values: np.ndarray, lengths: np.ndarray, mode: str, num_words: int,
                index_docs: dict[int, int] | None = None, document_count: int = 0):
    """Per-row (indices, values) of the Keras matrix, from flat ids + row lengths."""
    if mode not in MODES:
        raise ValueError(f"matrix mode {mode!r} is not one of {', '.join(MODES)}")
    n = len(lengths)
    rows = np.repeat(np.arange(n), lengths)
    keep = values < num_words
    key = rows[keep].astype(np.int64) * num_words + values[keep]
    uniq, counts = np.unique(key, return_counts=True)
    r, j = uniq // num_words, (uniq % num_words).astype(np.int32)
    if mode == "binary":
        v = np.ones(len(uniq))
    elif mode == "count":
        v = counts.astype(np.float64)
    elif mode == "freq":
        v = counts / lengths[r]
    else:
        docs = np.zeros(num_words, np.float64)
        for idx, d in (index_docs or {}).items():
            if idx < num_words:
                docs[idx] = d
        v = (1 + np.log(counts)) * np.log(1 + document_count / (1 + docs[j]))
    splits = np.searchsorted(r, np.arange(n + 1))
    return [(j[splits[i]:splits[i + 1]], v[splits[i]:splits[i + 1]]) for i in range(n)]


def sparse_rows_arrow(values: np.ndarray, lengths: np.ndarray, mode: str, num_words: int,
                      index_docs: dict[int, int] | None = None, document_count: int = 0):
    """The same as an Arrow struct<size, indices, values> column."""
    import pyarrow as pa

    rows = sparse_rows(values, lengths, mode, num_words, index_docs, document_count)
    return pa.array([{"size": num_words, "indices": idx.tolist(), "values": val.astype(np.float32).tolist()}
                     for idx, val in rows],
                    pa.struct([("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                               ("values", pa.list_(pa.float32()))]))


def to_dense(rows: Sequence[tuple[np.ndarray, np.ndarray]], num_words: int) -> np.ndarray:
    out = np.zeros((len(rows), num_words))
    for i, (idx, val) in enumerate(rows):
        out[i, idx] = val
    return out
