"""The tokenizer as TensorFlow ops, and the raw-string serving model built on it.

:func:`tf_encode` mirrors :func:`reviewpipe.tokenizer.tokenize` + ``texts_to_ids`` + ``pad``
with TF string ops (RE2 regular expressions, ICU lowercasing), so a SavedModel can take raw
review text.  It is built from the same :class:`TokenizerSpec` and vocabulary as the Spark
encode job.  Parity is tested on real reviews and fuzzed Unicode; the known gaps are listed
in :data:`PARITY_GAPS` (and the README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from reviewpipe import constants as C
from reviewpipe.tokenizer import TokenizerSpec

PARITY_GAPS = (
    "default mode: text that is not in Unicode NFC form (e.g. 'e' + U+0301): the Python tokenizer "
    "NFC-normalizes first; core TensorFlow has no normalization op, so such words map to other ids",
    "default mode: characters whose letter/digit status differs between Python's Unicode database "
    "and RE2's tables (characters assigned in newer Unicode versions)",
)

# A word: a letter or digit, then letters, digits or combining marks U+0300-036F, joined by
# inner apostrophes: the RE2 form of tokenizer._WORD ([^\W_] is \p{L}|\p{N} for str.isalnum).
_ALNUM = r"[\p{L}\p{N}]"
_PART = rf"{_ALNUM}(?:{_ALNUM}|[\x{{0300}}-\x{{036f}}])*"
_WORD = rf"{_PART}(?:'{_PART})*"
_TAG = r"</?[A-Za-z][^<>]*>"


def _re2_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


def _lower(t):
    """Unicode lowercasing (ICU full case mapping, as str.lower).  The op stops at the first
    NUL, so NUL is escaped to noncharacters first: U+FDD0 -> U+FDD0 U+FDD1, NUL -> U+FDD0 U+FDD2
    (lowercasing leaves noncharacters alone), then unescaped."""
    import tensorflow as tf

    t = tf.strings.regex_replace(t, "\uFDD0", "\uFDD0\uFDD1")
    t = tf.strings.regex_replace(t, "\\x00", "\uFDD0\uFDD2")
    t = tf.strings.lower(t, encoding="utf-8")
    t = tf.strings.regex_replace(t, "\uFDD0\uFDD2", "\x00")
    return tf.strings.regex_replace(t, "\uFDD0\uFDD1", "\uFDD0")


def tf_tokenize(texts, spec: TokenizerSpec):
    """[n] strings -> [n, (tokens)] RaggedTensor of strings, as ``tokenize`` does."""
    import tensorflow as tf

    t = tf.convert_to_tensor(texts, tf.string)
    if spec.mode == "keras":
        if spec.lower:
            t = _lower(t)
        if spec.filters:
            t = tf.strings.regex_replace(t, _re2_class(spec.filters), spec.split.replace("\\", "\\\\"))
        tokens = tf.strings.split(t, sep=spec.split)
        return tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
    t = tf.strings.regex_replace(t, _TAG, " ")
    t = tf.strings.regex_replace(t, "\u2019", "'")
    if spec.lower:
        t = _lower(t)
    # findall: keep each word followed by a space and turn every other character into one.
    t = tf.strings.regex_replace(t, rf"(?s)({_WORD})|.", r"\1 ")
    return tf.strings.split(t)


class Encoder:
    """Tokens -> ids -> padded [n, maxlen] int32, as TF ops over a static lookup table."""

    def __init__(self, tokens: Sequence[str], spec: TokenizerSpec, maxlen: int, padding: str, truncating: str):
        import tensorflow as tf

        self.spec, self.maxlen, self.padding, self.truncating = spec, maxlen, padding, truncating
        first = spec.first_word_index
        init = tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(tokens), tf.string), tf.range(first, first + len(tokens), dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(init, default_value=C.OOV_INDEX if spec.oov_token else -1)

    def __call__(self, texts):
        import tensorflow as tf

        tokens = tf_tokenize(texts, self.spec)
        ids = tf.ragged.map_flat_values(self.table.lookup, tokens)
        if not self.spec.oov_token:  # Keras drops unknown words when there is no OOV token
            ids = tf.ragged.boolean_mask(ids, ids >= 0)
        lengths = ids.row_lengths()
        kept = tf.minimum(lengths, self.maxlen)
        start = lengths - kept if self.truncating == "pre" else tf.zeros_like(lengths)
        # column c of the output holds token start + c - shift (shift > 0 only for pre-padding)
        shift = self.maxlen - kept if self.padding == "pre" else tf.zeros_like(kept)
        col = tf.range(self.maxlen, dtype=tf.int64)[None, :]
        tok = start[:, None] + col - shift[:, None]
        valid = (col >= shift[:, None]) & (col < shift[:, None] + kept[:, None])
        dense = ids.to_tensor(default_value=C.PAD_INDEX)
        width = tf.maximum(tf.shape(dense, out_type=tf.int64)[1], 1)
        dense = tf.pad(dense, [[0, 0], [0, 1]])  # a column to gather from for empty batches
        picked = tf.gather(dense, tf.clip_by_value(tok, 0, width - 1), batch_dims=1)
        return tf.cast(tf.where(valid, picked, C.PAD_INDEX), tf.int32)


def export_serving(model, tokens: Sequence[str], spec: TokenizerSpec, maxlen: int, padding: str,
                   truncating: str, path: str | Path) -> None:
    """Write a SavedModel with ``serve`` (texts -> probability) and ``encode`` (texts -> ids)."""
    import tensorflow as tf
    from keras.export import ExportArchive

    enc = Encoder(tokens, spec, maxlen, padding, truncating)
    archive = ExportArchive()
    archive.track(model)
    archive.track(enc.table)
    sig = [tf.TensorSpec([None], tf.string, name="texts")]

    def serve(texts):
        return tf.reshape(tf.cast(model(enc(texts), training=False), tf.float32), [-1])

    archive.add_endpoint("serve", serve, input_signature=sig)
    archive.add_endpoint("encode", enc, input_signature=sig)
    archive.write_out(str(path), verbose=False)


def load_serving(path: str | Path):
    """The SavedModel: ``m = load_serving(p); m.serve(tf.constant([...]))`` and ``m.encode(...)``.

    Keep ``m`` referenced while calling its functions; they use its variables.
    """
    import tensorflow as tf

    return tf.saved_model.load(str(path))
