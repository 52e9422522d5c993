from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reviewpipe.tokenizer import TokenizerSpec, pad, pad_flat, texts_to_ids, tokenize, tokenize_arrow

KERAS = TokenizerSpec(mode="keras", oov_token=None)
DEFAULT = TokenizerSpec(mode="default")


def test_keras_mode_matches_legacy_rules():
    assert tokenize("A great film.<br /><br />Loved it!!", KERAS) == ["a", "great", "film", "br", "br", "loved", "it"]
    assert tokenize("don't\tstop\r\nnow", KERAS) == ["don't", "stop\r", "now"]  # \r is not a Keras filter
    assert tokenize("  ", KERAS) == []


def test_default_mode_words():
    text = "A great film.<br /><br />Loved it!! Don’t 'quote' rock''roll dogs' x_y 3D İstanbul STRASSE ß"
    assert tokenize(text, DEFAULT) == ["a", "great", "film", "loved", "it", "don't", "quote", "rock", "roll",
                                       "dogs", "x", "y", "3d", "i̇stanbul", "strasse", "ß"]
    assert tokenize("e\u0301te\u0301 <b>bold</b> a < b > c", DEFAULT) == ["été", "bold", "a", "b", "c"]


def test_ids_and_padding_semantics():
    index = {"good": 2, "film": 3}
    assert texts_to_ids(["good", "bad", "film"], index, TokenizerSpec(oov_token="[UNK]")) == ([2, 1, 3], 1)
    assert texts_to_ids(["good", "bad", "film"], index, TokenizerSpec(oov_token=None)) == ([2, 3], 1)
    assert pad([5, 6, 7], 5, "pre", "pre") == [0, 0, 5, 6, 7]
    assert pad([5, 6, 7], 5, "post", "pre") == [5, 6, 7, 0, 0]
    assert pad([5, 6, 7], 2, "post", "pre") == [6, 7]
    assert pad([5, 6, 7], 2, "post", "post") == [5, 6]
    assert pad([], 3) == [0, 0, 0]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_pad_flat_equals_keras_pad_sequences(padding, truncating):
    from tf_keras.preprocessing.sequence import pad_sequences

    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 50, size=n)) for n in [0, 1, 4, 5, 6, 12, 0, 3]]
    flat = np.array([v for s in seqs for v in s], np.int32)
    got = pad_flat(flat, np.array([len(s) for s in seqs]), 5, padding, truncating)
    want = pad_sequences(seqs, maxlen=5, padding=padding, truncating=truncating)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32


@settings(max_examples=300, deadline=None)
@given(seqs=st.lists(st.lists(st.integers(1, 2**31 - 1), max_size=30), max_size=12), maxlen=st.integers(1, 20),
       padding=st.sampled_from(["pre", "post"]), truncating=st.sampled_from(["pre", "post"]))
def test_pad_flat_equals_the_per_row_reference(seqs, maxlen, padding, truncating):
    flat = np.array([v for s in seqs for v in s], np.int32)
    got = pad_flat(flat, np.array([len(s) for s in seqs], np.int64), maxlen, padding, truncating)
    assert got.shape == (len(seqs), maxlen)
    assert got.tolist() == [pad(s, maxlen, padding, truncating) for s in seqs]


FRAGMENTS = list("Ünïcödé İß ΣΟΔΟΣ ς שלום مرحبا 😀👍🏽 \u0301\u0307 \r\n\t<>/'’_-.,!?\"aZ09") + [
    "<br />", "<BR/>", "don't", "<p>", "ΟΔΟΣ ", "e\u0301", "\u200f", "\ufeff", "ﬁ", "Σ."]
unicode_text = st.lists(st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                                  st.sampled_from(FRAGMENTS)), max_size=40).map("".join)


@pytest.mark.parametrize("spec", [DEFAULT, KERAS, TokenizerSpec(mode="default", lower=False),
                                  TokenizerSpec(mode="keras", filters="!.,", split="-")], ids=str)
@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(unicode_text, st.text(alphabet=st.characters(max_codepoint=127), max_size=80)),
                      max_size=8))
def test_arrow_path_equals_python_reference(spec, texts):
    got = tokenize_arrow(pa.array(texts, pa.string()), spec).to_pylist()
    assert got == [tokenize(t, spec) for t in texts]


def test_keras_mode_equals_tf_keras_text_to_word_sequence():
    from tf_keras.preprocessing.text import text_to_word_sequence

    for text in ["Hello, World! <br />New\tline", "Ünïcödé İSTANBUL ΣΟΦΟΣ", "a--b  c", ""]:
        assert tokenize(text, KERAS) == text_to_word_sequence(text)


def keras_reference(text: str, filters: str, split: str, lower: bool) -> list[str]:
    """legacy Keras text_to_word_sequence, verbatim."""
    if lower:
        text = text.lower()
    text = text.translate(str.maketrans({c: split for c in filters}))
    return [t for t in text.split(split) if t]


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(unicode_text, st.text(max_size=60)),
       filters=st.sampled_from([KERAS.filters, "!.,", "]^-\\[", "", "aé"]),
       split=st.sampled_from([" ", "-", "\n", "é", "ab"]), lower=st.booleans())
def test_keras_mode_equals_the_keras_algorithm_for_any_filters_and_split(text, filters, split, lower):
    spec = TokenizerSpec(mode="keras", filters=filters, split=split, lower=lower)
    assert tokenize(text, spec) == keras_reference(text, filters, split, lower)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(unicode_text, st.text(alphabet=st.characters(max_codepoint=127), max_size=60)),
                      max_size=6),
       filters=st.sampled_from([KERAS.filters, "!.,", "]^-\\[", "", "aé", "«»"]),
       split=st.sampled_from([" ", "-", "\n", "é", "·", "a"]), lower=st.booleans())
@example(texts=["A", "Ban"], filters="aé", split=" ", lower=True)  # lower first, then filter: [], [b, n]
def test_arrow_keras_path_equals_the_keras_algorithm_for_any_filters_and_split(texts, filters, split, lower):
    # ASCII rows take the byte-table path; a non-ASCII split (é, ·) never occurs in them.
    spec = TokenizerSpec(mode="keras", filters=filters, split=split, lower=lower)
    got = tokenize_arrow(pa.array(texts, pa.string()), spec).to_pylist()
    assert got == [keras_reference(t, filters, split, lower) for t in texts]
