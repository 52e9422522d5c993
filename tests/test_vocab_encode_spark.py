from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import IMDB_CSV, require
from reviewpipe import constants as C
from reviewpipe.config import load_conf
from reviewpipe.encode import EncodeError, encode
from reviewpipe.tokenizer import TokenizerSpec, tokenize
from reviewpipe.vocab import VocabError, build_vocab, load_vocab

pytestmark = pytest.mark.spark


def conf_for(conf, *overrides):
    return load_conf(None, [f"spark.defaults_file={conf.spark.defaults_file}", *overrides])


def write_reviews(spark, path, texts, split="train", labels=None, start=0):
    rows = [(f"{split}/{start + i}", split, (labels[i] if labels else i % 2), None, t, "test", start + i)
            for i, t in enumerate(texts)]
    (spark.createDataFrame(rows, "review_id string, split string, label tinyint, rating tinyint, text string, "
                                 "source string, ordinal long")
     .write.mode("append").partitionBy(C.SPLIT).parquet(str(path)))
    return str(path)


def shards(spark, path):
    df = spark.read.parquet(str(path)).orderBy(C.REVIEW_ID)
    return {r[C.REVIEW_ID]: r.asDict() for r in df.collect()}


def test_exact_ids_on_a_tiny_corpus_keras_mode(spark, conf, tmp_path):
    texts = ["the cat sat", "The dog sat!", "a cat, a dog"]
    reviews = write_reviews(spark, tmp_path / "r", texts)
    c = conf_for(conf, "tokenizer.mode=keras", "tokenizer.oov_token=", "vocab.num_words=0", "encode.maxlen=4",
                 "encode.padding=pre", "encode.truncating=pre")
    build_vocab(spark, reviews, str(tmp_path / "v"), c)
    vocab = load_vocab(spark, str(tmp_path / "v"))
    # counts: the 2, cat 2, sat 2, dog 2, a 2 -> all tied; first seen order breaks ties
    assert vocab.word_index() == {"the": 1, "cat": 2, "sat": 3, "dog": 4, "a": 5}
    assert vocab.spec["size"] == 6 and vocab.spec["reserved"] == {"padding": 0}
    encode(spark, reviews, str(tmp_path / "v"), str(tmp_path / "s"), c)
    got = {k: (v[C.IDS], v[C.LENGTH], v[C.OOV]) for k, v in shards(spark, tmp_path / "s").items()}
    assert got == {"train/0": ([0, 1, 2, 3], 3, 0), "train/1": ([0, 1, 4, 3], 3, 0), "train/2": ([5, 2, 5, 4], 4, 0)}


def test_tie_breaks_oov_and_num_words(spark, conf, tmp_path):
    texts = ["b a c", "c b", "d d e"]  # counts b2 c2 d2 a1 e1; first seen: b, a, c, d, e
    reviews = write_reviews(spark, tmp_path / "r", texts)
    c = conf_for(conf, "tokenizer.oov_token=[UNK]", "vocab.num_words=5", "encode.maxlen=3")
    build_vocab(spark, reviews, str(tmp_path / "v"), c)
    vocab = load_vocab(spark, str(tmp_path / "v"))
    # OOV takes 1, words from 2, and only ids < num_words=5 are kept: b c d
    assert vocab.word_index() == {"[UNK]": 1, "b": 2, "c": 3, "d": 4}
    assert vocab.counts == [2, 2, 2] and vocab.doc_counts == [2, 2, 1]
    encode(spark, reviews, str(tmp_path / "v"), str(tmp_path / "s"), c)
    got = {k: (v[C.IDS], v[C.LENGTH], v[C.OOV]) for k, v in shards(spark, tmp_path / "s").items()}
    assert got == {"train/0": ([2, 1, 3], 3, 1), "train/1": ([3, 2, 0], 2, 0), "train/2": ([4, 4, 1], 3, 1)}
    c2 = conf_for(conf, "vocab.tie_break=token", "vocab.num_words=0")
    build_vocab(spark, reviews, str(tmp_path / "v2"), c2)
    assert load_vocab(spark, str(tmp_path / "v2")).tokens == ["b", "c", "d", "a", "e"]


def test_artifact_is_byte_identical_and_manifest_round_trips(spark, conf, tmp_path):
    texts = ["one two three", "two three", "three"]
    reviews = write_reviews(spark, tmp_path / "r", texts)
    write_reviews(spark, tmp_path / "r", ["held out words"], split="val", start=10)
    c = conf_for(conf, "encode.maxlen=5", "encode.rows_per_file=64")
    s1 = build_vocab(spark, reviews, str(tmp_path / "v1"), c)
    s2 = build_vocab(spark, reviews, str(tmp_path / "v2"), c)
    for name in (C.VOCAB_TABLE, C.VOCAB_SPEC):
        assert (tmp_path / "v1" / name).read_bytes() == (tmp_path / "v2" / name).read_bytes()
    assert s1["fingerprint"] == s2["fingerprint"]
    assert (s1["vocabulary_before_cut"], s1["token_coverage"], s1["val_oov_rate"]) == (3, 1.0, 1.0)
    vocab = load_vocab(spark, str(tmp_path / "v1"))
    assert vocab.tokens == ["three", "two", "one"]  # val words never enter the vocabulary
    manifest = encode(spark, reviews, str(tmp_path / "v1"), str(tmp_path / "s"), c)
    on_disk = json.loads((tmp_path / "s" / C.MANIFEST).read_text())
    assert on_disk["vocab_fingerprint"] == vocab.fingerprint == manifest["vocab_fingerprint"]
    assert (on_disk["maxlen"], on_disk["padding"], on_disk["truncating"]) == (5, "post", "pre")
    assert {s: v["rows"] for s, v in on_disk["splits"].items()} == {"train": 3, "val": 1}
    for split, info in on_disk["splits"].items():
        for f in info["files"]:
            assert f["path"].startswith(f"split={split}/part-") and (tmp_path / "s" / f["path"]).is_file()
            assert pa.parquet.read_metadata(tmp_path / "s" / f["path"]).num_rows == f["rows"]
    table = pa.parquet.read_table(tmp_path / "s" / on_disk["splits"]["val"]["files"][0]["path"])
    assert table.column(C.IDS).to_pylist() == [[1, 1, 1, 0, 0]]
    assert table.schema.field(C.IDS).type.value_type == pa.int32()


def test_fingerprint_mismatch_is_refused_and_nothing_is_replaced(spark, conf, tmp_path):
    reviews = write_reviews(spark, tmp_path / "r", ["alpha beta", "beta gamma"])
    build_vocab(spark, reviews, str(tmp_path / "v1"), conf_for(conf))
    build_vocab(spark, reviews, str(tmp_path / "v2"), conf_for(conf, "tokenizer.mode=keras"))
    encode(spark, reviews, str(tmp_path / "v1"), str(tmp_path / "s"), conf_for(conf, "encode.maxlen=4"))
    before = (tmp_path / "s" / C.MANIFEST).read_bytes()
    with pytest.raises(EncodeError, match=r"holds shards encoded with vocabulary .* refusing to mix them"):
        encode(spark, reviews, str(tmp_path / "v2"), str(tmp_path / "s"), conf_for(conf, "encode.maxlen=4"))
    assert (tmp_path / "s" / C.MANIFEST).read_bytes() == before
    (tmp_path / "v1" / C.VOCAB_SPEC).write_text((tmp_path / "v1" / C.VOCAB_SPEC).read_text().replace('"min_count": 1', '"min_count": 2'))
    with pytest.raises(VocabError, match="fingerprint does not match its tokens"):
        load_vocab(spark, str(tmp_path / "v1"))
    with pytest.raises(VocabError, match="held out"):
        build_vocab(spark, reviews, str(tmp_path / "v3"), conf_for(conf), splits=["train", "val"])


@pytest.mark.parametrize("mode", ["binary", "count", "freq", "tfidf"])
def test_texts_to_matrix_parity(spark, conf, tmp_path, mode):
    from tf_keras.preprocessing.text import Tokenizer

    texts = ["the cat sat on the mat", "the dog ate the cat's food", "mat mat mat", "unseen words only"]
    reviews = write_reviews(spark, tmp_path / "r", texts[:3])
    write_reviews(spark, tmp_path / "r", texts[3:], split="val", start=3)
    c = conf_for(conf, "tokenizer.mode=keras", "tokenizer.oov_token=", "vocab.num_words=6",
                 f"encode.matrix_mode={mode}", "encode.maxlen=8")
    build_vocab(spark, reviews, str(tmp_path / "v"), c)
    encode(spark, reviews, str(tmp_path / "v"), str(tmp_path / "s"), c)
    rows = shards(spark, tmp_path / "s")
    got = np.zeros((4, 6))
    for i in range(4):
        m = rows[f"{'train' if i < 3 else 'val'}/{i}"][C.MATRIX]
        assert m["size"] == 6
        got[i, m["indices"]] = m["values"]
    tok = Tokenizer(num_words=6)
    tok.fit_on_texts(texts[:3])
    np.testing.assert_allclose(got, tok.texts_to_matrix(texts, mode=mode), rtol=1e-6)


def keras_parity(spark, conf, tmp_path, texts, oov, num_words, padding, truncating, maxlen=200):
    from tf_keras.preprocessing.sequence import pad_sequences
    from tf_keras.preprocessing.text import Tokenizer

    reviews = str(tmp_path / "r")
    if not (tmp_path / "r").exists():
        write_reviews(spark, tmp_path / "r", texts)
    tag = f"{'oov' if oov else 'none'}-{num_words}-{padding}-{truncating}"
    base = ["tokenizer.mode=keras", f"tokenizer.oov_token={oov or ''}", f"vocab.num_words={num_words or 0}"]
    build_vocab(spark, reviews, str(tmp_path / f"v{tag}"), conf_for(conf, *base))
    vocab = load_vocab(spark, str(tmp_path / f"v{tag}"))
    tok = Tokenizer(num_words=num_words, oov_token=oov)
    tok.fit_on_texts(texts)
    ranking = list(tok.word_index.items())
    ours = vocab.word_index()
    if num_words is None:
        assert ours == tok.word_index
    else:
        assert ours == {w: i for w, i in ranking if i < num_words}
    want = tok.texts_to_sequences(texts)
    longest = max(len(s) for s in want)
    encode(spark, reviews, str(tmp_path / f"v{tag}"), str(tmp_path / f"full{tag}"),
           conf_for(conf, *base, f"encode.maxlen={longest}", "encode.padding=post"))
    full = shards(spark, tmp_path / f"full{tag}")
    got = [full[f"train/{i}"] for i in range(len(texts))]
    assert [r[C.IDS][: r[C.LENGTH]] for r in got] == want
    encode(spark, reviews, str(tmp_path / f"v{tag}"), str(tmp_path / f"pad{tag}"),
           conf_for(conf, *base, f"encode.maxlen={maxlen}", f"encode.padding={padding}",
                    f"encode.truncating={truncating}"))
    padded = shards(spark, tmp_path / f"pad{tag}")
    np.testing.assert_array_equal(np.array([padded[f"train/{i}"][C.IDS] for i in range(len(texts))]),
                                  pad_sequences(want, maxlen=maxlen, padding=padding, truncating=truncating))


CASES = [(None, None, "pre", "pre"), ("[UNK]", None, "post", "pre"), (None, 10000, "pre", "post"),
         ("<OOV>", 10000, "post", "post")]


@pytest.mark.integration
@pytest.mark.parametrize("oov, num_words, padding, truncating", CASES)
def test_keras_parity_on_2000_real_reviews(spark, conf, tmp_path_factory, oov, num_words, padding, truncating):
    import pandas as pd

    texts = pd.read_csv(require(IMDB_CSV), nrows=2000)["review"].tolist()
    keras_parity(spark, conf, tmp_path_factory.mktemp("parity"), texts, oov, num_words, padding, truncating)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("oov, num_words, padding, truncating", CASES)
def test_keras_parity_on_all_25k_reviews(spark, conf, tmp_path_factory, oov, num_words, padding, truncating):
    import pandas as pd

    texts = pd.read_csv(require(IMDB_CSV))["review"].tolist()
    keras_parity(spark, conf, tmp_path_factory.mktemp("parity25k"), texts, oov, num_words, padding, truncating)


FUZZ = st.lists(st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                          st.sampled_from(["Ünïcödé", "İ", "ß", "ΟΔΟΣ", "😀", "שלום", "e\u0301", "\r\n", "\t",
                                           "<br />", "don't", " ", "’", "_"])), max_size=30).map("".join)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(FUZZ, min_size=1, max_size=12), mode=st.sampled_from(["default", "keras"]))
def test_spark_encode_equals_python_tokenizer_on_fuzzed_unicode(spark, conf, tmp_path_factory, texts, mode):
    """The Spark path (mapInArrow, Arrow kernels) gives the ids of the pure-Python path."""
    from reviewpipe.tokenizer import texts_to_ids

    tmp = tmp_path_factory.mktemp("fuzz")
    reviews = write_reviews(spark, tmp / "r", texts)
    c = conf_for(conf, f"tokenizer.mode={mode}", "vocab.num_words=0", "encode.maxlen=64")
    build_vocab(spark, reviews, str(tmp / "v"), c)
    vocab = load_vocab(spark, str(tmp / "v"))
    spec = TokenizerSpec.from_conf(c.tokenizer)
    expected_vocab = {t for text in texts for t in tokenize(text, spec)}
    assert set(vocab.tokens) == expected_vocab
    encode(spark, reviews, str(tmp / "v"), str(tmp / "s"), c)
    got = shards(spark, tmp / "s")
    for i, text in enumerate(texts):
        ids, _ = texts_to_ids(tokenize(text, spec), vocab.word_index(), spec)
        row = got[f"train/{i}"]
        assert row[C.IDS][: row[C.LENGTH]] == ids[-64:]


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 70), max_size=15), max_size=20), big=st.booleans(),
       first_row=st.sampled_from([0, 1 << 20]))
def test_doc_counts_equal_a_reference(rows, big, first_row):
    from reviewpipe.vocab import _doc_counts

    k = (1 << 16) + 5 if big else 71
    codes = np.array([c for r in rows for c in r], np.int64)
    # row numbers past 2**20 with a 17-bit code: the pairs no longer fit 32 bits (64-bit keys)
    parents = first_row + np.repeat(np.arange(len(rows)), [len(r) for r in rows]).astype(np.int64)
    want = np.zeros(k, np.int64)
    for r in rows:
        for c in set(r):
            want[c] += 1
    np.testing.assert_array_equal(_doc_counts(codes, parents, k), want)
