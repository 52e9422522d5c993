"""The one text -> tokens -> ids definition, used by encode (Spark), score and tests.

Two standardizations:

``keras``
    Exactly legacy ``keras.preprocessing.text.Tokenizer``: ``text.lower()``, every
    character of ``filters`` replaced by ``split``, split on ``split``, empty strings
    dropped.  ``<br />`` therefore yields the token ``br``, as Keras does.
``default``
    NFC normalization, HTML tags (``<br />`` and any ``</?letter...>``) become spaces,
    ``’`` becomes ``'``, Unicode-aware ``str.lower()``, then words of letters and digits
    (Python ``\\w`` minus ``_``, which may carry combining marks U+0300-036F) with inner
    apostrophes (``don't``); everything else is dropped.

:func:`tokenize` is the reference (pure Python).  :func:`tokenize_arrow` is the bulk
path used inside Spark tasks: pure-ASCII rows are tokenized with Arrow compute kernels,
whose ASCII behaviour is identical to the reference, and every other row goes through
:func:`tokenize` itself, so the two agree on every input by construction (and a
hypothesis test checks it).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reviewpipe import constants as C
from reviewpipe.config import KERAS_FILTERS, TokenizerConf

_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
# A word: letters/digits (\w minus _) that may carry combining marks (U+0300-036F, e.g. the
# dot that str.lower() leaves on "İ"), joined by inner apostrophes.
_WORD = re.compile(r"[^\W_](?:[^\W_]|[\u0300-\u036f])*(?:'[^\W_](?:[^\W_]|[\u0300-\u036f])*)*")
_ARROW_TAG = r"</?[A-Za-z][^<>]*>"


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything that determines tokens; stored in vocab.json and part of the fingerprint."""

    mode: str = "default"
    lower: bool = True
    filters: str = KERAS_FILTERS
    split: str = " "
    oov_token: str | None = "[UNK]"

    @classmethod
    def from_conf(cls, conf: TokenizerConf) -> "TokenizerSpec":
        return cls(mode=conf.mode, lower=conf.lower, filters=conf.filters, split=conf.split,
                   oov_token=conf.oov_token or None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenizerSpec":
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def first_word_index(self) -> int:
        """Index of the most frequent word: 1 without OOV, 2 with OOV at index 1."""
        return C.OOV_INDEX + 1 if self.oov_token else C.OOV_INDEX


def tokenize(text: str, spec: TokenizerSpec) -> list[str]:
    """Reference tokenizer (pure Python)."""
    if spec.mode == "keras":
        if spec.lower:
            text = text.lower()
        text = text.translate(_keras_table(spec.filters, spec.split))
        return [t for t in text.split(spec.split) if t]
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = _TAG.sub(" ", text).replace("\u2019", "'")
    if spec.lower:
        text = text.lower()
    return _WORD.findall(text)


_TABLES: dict[tuple[str, str], dict[int, str]] = {}


def _keras_table(filters: str, split: str) -> dict[int, str]:
    key = (filters, split)
    if key not in _TABLES:
        _TABLES[key] = str.maketrans({c: split for c in filters})
    return _TABLES[key]


# ---------------------------------------------------------------------------------------
# Arrow bulk path

def _regex_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


def _ascii_tokens(texts, spec: TokenizerSpec):
    """Tokens of pure-ASCII texts with Arrow kernels; returns a ListArray of strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if spec.mode == "keras":
        if spec.lower:
            texts = pc.ascii_lower(texts)
        if spec.filters:
            texts = pc.replace_substring_regex(texts, _regex_class(spec.filters), spec.split)
        pieces = pc.split_pattern(texts, spec.split)
        return _drop(pieces, pc.not_equal(pc.list_flatten(pieces), ""))
    texts = pc.replace_substring_regex(texts, _ARROW_TAG, " ")
    if spec.lower:
        texts = pc.ascii_lower(texts)
    # Characters outside [A-Za-z0-9'] always end a word, so splitting there first and
    # applying the reference regex only to pieces that contain an apostrophe is exact.
    pieces = pc.split_pattern_regex(texts, r"[^A-Za-z0-9']+")
    flat = pc.list_flatten(pieces)
    has_quote = pc.match_substring(flat, "'")
    if not pc.any(has_quote).as_py():
        return _drop(pieces, pc.not_equal(flat, ""))
    parents = pc.list_parent_indices(pieces).to_numpy()
    quote = has_quote.to_numpy(zero_copy_only=False)
    nonempty = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    q_idx = np.flatnonzero(quote)
    expanded = [_WORD.findall(p) for p in flat.take(pa.array(q_idx)).to_pylist()]
    k = np.fromiter((len(e) for e in expanded), np.int64, len(expanded))
    emitted = nonempty.astype(np.int64)  # tokens each piece contributes
    emitted[q_idx] = k
    start = np.cumsum(emitted) - emitted
    gather = np.empty(int(emitted.sum()), np.int64)
    plain = np.flatnonzero(nonempty & ~quote)
    gather[start[plain]] = plain
    within = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    gather[np.repeat(start[q_idx], k) + within] = len(flat) + np.arange(int(k.sum()))
    extra = pa.array([t for e in expanded for t in e], pa.string())
    values = pa.concat_arrays([flat, extra]).take(pa.array(gather))
    return _from_parents(values, np.repeat(parents, emitted), len(texts))


def _drop(lists, keep_flat):
    """Filter the flattened values of ``lists`` by ``keep_flat`` and regroup per row."""
    import pyarrow.compute as pc

    parents = pc.list_parent_indices(lists).to_numpy()
    keep = keep_flat.to_numpy(zero_copy_only=False)
    return _from_parents(pc.list_flatten(lists).filter(keep_flat), parents[keep], len(lists))


def _from_parents(values, parents: np.ndarray, n_rows: int):
    import pyarrow as pa

    counts = np.bincount(parents, minlength=n_rows) if len(parents) else np.zeros(n_rows, np.int64)
    offsets = np.zeros(n_rows + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def tokenize_arrow(texts, spec: TokenizerSpec):
    """Tokenize an Arrow string array; nulls give empty lists.  Same tokens as :func:`tokenize`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.fill_null(texts.cast(pa.string()), "")
    is_ascii = pc.string_is_ascii(texts).to_numpy(zero_copy_only=False)
    if is_ascii.all():
        return _ascii_tokens(texts, spec)
    ascii_idx = np.flatnonzero(is_ascii)
    other_idx = np.flatnonzero(~is_ascii)
    fast = _ascii_tokens(texts.take(pa.array(ascii_idx)), spec) if len(ascii_idx) else None
    slow = pa.array([tokenize(t, spec) for t in texts.take(pa.array(other_idx)).to_pylist()],
                    pa.list_(pa.string()))
    merged = pa.concat_arrays([fast, slow]) if fast is not None else slow
    order = np.empty(len(texts), np.int64)
    order[np.concatenate([ascii_idx, other_idx])] = np.arange(len(texts))
    return merged.take(pa.array(order))


# ---------------------------------------------------------------------------------------
# ids and padding (Keras texts_to_sequences + pad_sequences semantics)

def texts_to_ids(tokens: list[str], word_index: dict[str, int], spec: TokenizerSpec) -> tuple[list[int], int]:
    """Map tokens to ids: unknown -> OOV index (or dropped without OOV).  Returns (ids, n_oov)."""
    ids: list[int] = []
    oov = 0
    for t in tokens:
        i = word_index.get(t)
        if i is None:
            oov += 1
            if spec.oov_token:
                ids.append(C.OOV_INDEX)
        else:
            ids.append(i)
    return ids, oov


def pad(ids: list[int], maxlen: int, padding: str = "post", truncating: str = "pre") -> list[int]:
    """``pad_sequences`` for one sequence (value 0)."""
    kept = ids[-maxlen:] if truncating == "pre" else ids[:maxlen]
    fill = [C.PAD_INDEX] * (maxlen - len(kept))
    return fill + kept if padding == "pre" else kept + fill


def pad_flat(values: np.ndarray, lengths: np.ndarray, maxlen: int, padding: str, truncating: str) -> np.ndarray:
    """Vectorised ``pad_sequences`` over ragged rows given as flat values + row lengths."""
    n = len(lengths)
    out = np.zeros((n, maxlen), np.int32)
    if n == 0 or len(values) == 0:
        return out
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    rows = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(values)) - starts[rows]  # position within its row
    kept = np.minimum(lengths, maxlen)
    first = (lengths - kept) if truncating == "pre" else np.zeros(n, np.int64)
    keep = (pos >= first[rows]) & (pos < first[rows] + maxlen)
    shift = (maxlen - kept) if padding == "pre" else np.zeros(n, np.int64)
    cols = pos - first[rows] + shift[rows]
    out[rows[keep], cols[keep]] = values[keep]
    return out
