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
path used inside Spark tasks: pure-ASCII rows are tokenized on their bytes with NumPy
(for ASCII a byte is a character, so lookup tables reproduce ``lower``, the filters and
the word class exactly), and every other row goes through :func:`tokenize` itself, so
the two agree on every input by construction (a hypothesis test checks it).
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
        if len(spec.split) == 1:
            # Keras maps every filter to ``split``, splits on it and drops empty strings: the
            # tokens are the maximal runs of other characters (one C pass, no translate).
            return _keras_runs(spec.filters, spec.split).findall(text)
        text = text.translate(_keras_table(spec.filters, spec.split))
        return [t for t in text.split(spec.split) if t]
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = _TAG.sub(" ", text).replace("\u2019", "'")
    if spec.lower:
        text = text.lower()
    return _WORD.findall(text)


_TABLES: dict[tuple[str, str], dict[int, str]] = {}
_RUNS: dict[tuple[str, str], re.Pattern] = {}


def _keras_runs(filters: str, split: str) -> re.Pattern:
    key = (filters, split)
    if key not in _RUNS:
        _RUNS[key] = re.compile("[^" + "".join(re.escape(c) for c in sorted(set(filters + split))) + "]+")
    return _RUNS[key]


def _keras_table(filters: str, split: str) -> dict[int, str]:
    key = (filters, split)
    if key not in _TABLES:
        _TABLES[key] = str.maketrans({c: split for c in filters})
    return _TABLES[key]


# ---------------------------------------------------------------------------------------
# Arrow bulk path

_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[65:91] += 32
_WORD_BYTES = np.zeros(256, bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'":
    _WORD_BYTES[_c] = True
_LETTER = np.zeros(256, bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _LETTER[_c] = True


def _string_buffers(texts) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of all values, offsets starting at 0) of an Arrow string array."""
    offsets = np.frombuffer(texts.buffers()[1], np.int32)[texts.offset: texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    buf = (np.frombuffer(data, np.uint8)[offsets[0]: offsets[-1]] if data is not None and len(texts)
           else np.zeros(0, np.uint8))
    return buf, (offsets - offsets[0]).astype(np.int64)


def _tag_mask(buf: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Bytes inside an HTML tag ``</?[A-Za-z][^<>]*>`` (a tag never spans two rows)."""
    n = len(buf)
    brackets = np.flatnonzero((buf == 60) | (buf == 62))  # '<' '>'
    if len(brackets) < 2:
        return np.zeros(n, bool)
    opens = brackets[:-1][buf[brackets[:-1]] == 60]
    nxt = brackets[np.minimum(np.searchsorted(brackets, opens, side="right"), len(brackets) - 1)]
    row_end = offs[np.searchsorted(offs, opens, side="right")]
    c1 = np.where(opens + 1 < row_end, buf[np.minimum(opens + 1, n - 1)], 0)
    c2 = np.where(opens + 2 < row_end, buf[np.minimum(opens + 2, n - 1)], 0)
    starts_tag = _LETTER[c1] | ((c1 == 47) & _LETTER[c2])  # '/' then a letter
    ok = (nxt > opens) & (buf[nxt] == 62) & (nxt < row_end) & starts_tag
    diff = np.zeros(n + 1, np.int64)
    np.add.at(diff, opens[ok], 1)
    np.add.at(diff, nxt[ok] + 1, -1)
    return np.cumsum(diff[:-1]) > 0


def _ascii_lut(spec: TokenizerSpec) -> tuple[np.ndarray, str]:
    """(byte -> byte table, separator): the table lowercases (when ``lower``) and maps every
    separator byte to the separator, so tokens are the non-empty pieces between separators.
    Default mode: bytes outside ``[A-Za-z0-9']`` separate.  Keras mode: the ASCII filters and
    the split character do; a non-ASCII split character never occurs in an ASCII row, so the
    ASCII filters are mapped to the first of them (or, with none, rows are not split)."""
    key = (spec.mode, spec.lower, spec.filters, spec.split)
    if key not in _LUTS:
        if spec.mode == "keras":
            seps = [c for c in spec.filters + spec.split if ord(c) < 128]
            sep = spec.split if ord(spec.split) < 128 else (seps[0] if seps else spec.split)
        else:
            seps, sep = [chr(b) for b in range(128) if not _WORD_BYTES[b]], " "
        to_sep = np.arange(256, dtype=np.uint8)
        for c in seps:
            to_sep[ord(c)] = ord(sep)
        # Keras lowercases first and then filters, so an upper-case letter whose lower case is a
        # filter character separates too: the table is the composition filter(lower(byte)).
        lut = to_sep[_LOWER] if spec.lower else to_sep
        _LUTS[key] = (lut, sep)
    return _LUTS[key]


_LUTS: dict[tuple, tuple[np.ndarray, str]] = {}


def _ascii_split(texts, spec: TokenizerSpec):
    """Tokenize pure-ASCII rows on their bytes.  Returns (tokens StringArray, row offsets
    into the tokens: row i's tokens are ``[row_offsets[i], row_offsets[i + 1])``).

    One table lookup per byte turns every separator into one separator byte (and HTML tags,
    in default mode, into spaces); Arrow's ``split_pattern`` then cuts the rows, and the
    empty pieces (runs of separators) are dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    buf, offs = _string_buffers(texts)
    lut, sep = _ascii_lut(spec)
    b = lut[buf]
    if spec.mode != "keras":
        tags = _tag_mask(buf, offs)
        b[tags] = ord(" ")
    mapped = pa.StringArray.from_buffers(len(texts), pa.py_buffer(offs.astype(np.int32)), pa.py_buffer(b))
    pieces = pc.split_pattern(mapped, sep)
    flat = pieces.flatten()
    nonempty = pc.binary_length(flat).to_numpy(zero_copy_only=False) > 0
    kept = np.zeros(len(flat) + 1, np.int32)
    np.cumsum(nonempty, out=kept[1:])
    row_offsets = kept[pieces.offsets.to_numpy() - pieces.offsets[0].as_py()]
    return flat.filter(pa.array(nonempty)), row_offsets


def _ascii_tokens(texts, spec: TokenizerSpec):
    """Tokens of pure-ASCII texts, vectorised; returns a ListArray of strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    flat, row_offsets = _ascii_split(texts, spec)
    if spec.mode == "keras" or len(flat) == 0:
        return pa.ListArray.from_arrays(pa.array(row_offsets, pa.int32()), flat)
    # Characters outside [A-Za-z0-9'] always end a word, so applying the reference regex
    # only to the pieces that contain an apostrophe is exact.
    quote = pc.match_substring(flat, "'").to_numpy(zero_copy_only=False)
    if not quote.any():
        return pa.ListArray.from_arrays(pa.array(row_offsets, pa.int32()), flat)
    parents = np.repeat(np.arange(len(texts)), np.diff(row_offsets))
    q_idx = np.flatnonzero(quote)
    expanded = [_WORD.findall(p) for p in flat.take(pa.array(q_idx)).to_pylist()]
    k = np.fromiter((len(e) for e in expanded), np.int64, len(expanded))
    emitted = np.ones(len(flat), np.int64)  # tokens each piece contributes
    emitted[q_idx] = k
    start = np.cumsum(emitted) - emitted
    gather = np.empty(int(emitted.sum()), np.int64)
    plain = np.flatnonzero(~quote)
    gather[start[plain]] = plain
    within = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    gather[np.repeat(start[q_idx], k) + within] = len(flat) + np.arange(int(k.sum()))
    extra = pa.array([t for e in expanded for t in e], pa.string())
    values = pa.concat_arrays([flat, extra]).take(pa.array(gather))
    return _from_parents(values, np.repeat(parents, emitted), len(texts))


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
    n = len(texts)
    is_ascii = pc.string_is_ascii(texts).to_numpy(zero_copy_only=False)
    if is_ascii.all():
        return _ascii_tokens(texts, spec)
    ascii_idx = np.flatnonzero(is_ascii)
    other_idx = np.flatnonzero(~is_ascii)
    fast = _ascii_tokens(texts.take(pa.array(ascii_idx)), spec)
    slow_tokens = [tokenize(t, spec) for t in texts.take(pa.array(other_idx)).to_pylist()]
    slow_counts = np.fromiter((len(t) for t in slow_tokens), np.int64, len(slow_tokens))
    slow_values = pa.array([tok for toks in slow_tokens for tok in toks], pa.string())
    # Merge both parts back into row order with a counting sort on the row number.
    counts = np.zeros(n, np.int64)
    counts[ascii_idx] = np.diff(fast.offsets.to_numpy())
    counts[other_idx] = slow_counts
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    fast_rows = np.repeat(ascii_idx, counts[ascii_idx])
    slow_rows = np.repeat(other_idx, slow_counts)
    dest = np.empty(len(fast_rows) + len(slow_rows), np.int64)
    dest[: len(fast_rows)] = offsets[fast_rows] + (np.arange(len(fast_rows)) - np.repeat(
        fast.offsets.to_numpy()[:-1], counts[ascii_idx]))
    dest[len(fast_rows):] = offsets[slow_rows] + (np.arange(len(slow_rows)) - np.repeat(
        np.cumsum(slow_counts) - slow_counts, slow_counts))
    order = np.empty_like(dest)
    order[dest] = np.arange(len(dest))
    values = pa.concat_arrays([pc.list_flatten(fast), slow_values]).take(pa.array(order))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


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
    """Vectorised ``pad_sequences`` over ragged rows given as flat values + row lengths.

    The truncated tokens are dropped first; what is left fills, in row-major order, exactly
    the slots a row keeps (its first ``kept`` columns with post-padding, its last with
    pre-padding), so one boolean-mask assignment places every value.
    """
    n = len(lengths)
    out = np.zeros((n, maxlen), np.int32)
    if n == 0 or len(values) == 0:
        return out
    lengths = np.asarray(lengths, np.int64)
    kept = np.minimum(lengths, maxlen)
    cut = np.flatnonzero(lengths > maxlen)
    if len(cut):
        row_start = np.cumsum(lengths)[cut] - lengths[cut]
        n_drop = lengths[cut] - maxlen
        drop_start = row_start if truncating == "pre" else row_start + maxlen
        dropped = np.repeat(drop_start - (np.cumsum(n_drop) - n_drop), n_drop) + np.arange(int(n_drop.sum()))
        keep = np.ones(len(values), bool)
        keep[dropped] = False
        values = values[keep]
    cols = np.arange(maxlen)
    slots = cols[None, :] < kept[:, None] if padding == "post" else cols[None, :] >= (maxlen - kept)[:, None]
    out[slots] = values
    return out
