"""Embedding inspection on a hand-made matrix with known answers; Word2Vec alignment and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reviewpipe import constants as C
from reviewpipe.embeddings import Embeddings, UnknownWord, intrinsic, load_pairs

WORDS = ["[PAD]", "[UNK]", "king", "queen", "man", "woman", "good", "great", "bad"]
VECS = np.array([
    [0, 0, 0], [9, 9, 9],            # padding and OOV: never answers
    [1, 1, 0], [1, 0, 1],            # king, queen
    [0, 1, 0], [0, 0, 1],            # man, woman
    [0, 3, 4], [0, 4, 3], [0, -1, 0],  # good, great, bad
], np.float32)


@pytest.fixture
def emb():
    return Embeddings(WORDS, VECS, reserved=2)


def test_neighbors_exact_order_and_scores(emb):
    got = emb.neighbors("good", 3)
    assert [w for w, _ in got] == ["great", "woman", "man"]
    np.testing.assert_allclose([s for _, s in got], [24 / 25, 0.8, 0.6], rtol=1e-6)
    assert "[UNK]" not in [w for w, _ in emb.neighbors("king", 8)] and len(emb.neighbors("king", 99)) == 6


def test_analogy_excludes_the_query_words(emb):
    got = emb.analogy("man", "king", "woman", 2)  # unit vectors: king - man + woman ≈ (.71, -.29, 1)
    t = np.array([1 / np.sqrt(2), 1 / np.sqrt(2) - 1, 1])
    assert got[0][0] == "queen" and got[0][1] == pytest.approx(t @ [1, 0, 1] / np.sqrt(2) / np.linalg.norm(t))
    assert {"man", "king", "woman"}.isdisjoint(w for w, _ in emb.analogy("man", "king", "woman", 6))


def test_similarity_and_unknown_word_message(emb):
    assert emb.similarity("good", "bad") == pytest.approx(-0.6)
    with pytest.raises(UnknownWord, match=r"'kinq' is not in the vocabulary \(7 words\); did you mean king\?"):
        emb.neighbors("kinq")
    with pytest.raises(UnknownWord, match=r"'zzz' is not in the vocabulary \(7 words\)$"):
        emb.similarity("zzz", "good")
    with pytest.raises(UnknownWord):
        emb.row("[UNK]")  # reserved rows are not words


def test_intrinsic_gap_and_projection(emb, tmp_path):
    pairs = {"related": [("good", "great"), ("king", "queen"), ("good", "nope")],
             "unrelated": [("good", "bad")], "version": 1}
    got = intrinsic(emb, pairs)
    assert got["related"] == pytest.approx((0.96 + 0.5) / 2, abs=1e-4) and got["unrelated"] == -0.6
    assert got["gap"] == pytest.approx(0.73 + 0.6, abs=1e-4) and got["pairs_skipped"] == 1
    xy = emb.project(["king", "queen", "good", "bad"], tmp_path / "p.png")
    assert xy.shape == (4, 2) and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    shipped = load_pairs(C.__file__.rsplit("/lib/", 1)[0] + "/conf/word_pairs.toml")
    assert len(shipped["related"]) == len(shipped["unrelated"]) >= 12 and shipped["version"] == 1


def test_load_projector_files(tmp_path):
    np.savetxt(tmp_path / C.RUN_VECTORS, VECS, delimiter="\t")
    (tmp_path / C.RUN_METADATA).write_text("\n".join(WORDS) + "\n")
    e = Embeddings.load(tmp_path / C.RUN_VECTORS)
    assert e.reserved == 2 and e.neighbors("good", 1)[0][0] == "great"


def test_word2vec_alignment():
    from reviewpipe.vocab import Vocabulary
    from reviewpipe.word2vec import align

    spec = {"tokenizer": {"mode": "default", "lower": True, "filters": "", "split": " ", "oov_token": "[UNK]"},
            "size": 5, "fingerprint": "f" * 64}
    vocab = Vocabulary(["good", "bad", "rare"], [3, 2, 1], [3, 2, 1], spec)
    words = ["bad", "zebra", "good", "yak"]
    vecs = np.array([[1, 0], [0, 2], [3, 3], [0, 4]], np.float32)
    m, cover = align(vocab, words, vecs, seed=0)
    assert m.shape == (5, 2) and m[0].tolist() == [0, 0]           # padding row
    assert m[1].tolist() == [0, 3]                                  # OOV = mean of zebra, yak
    assert m[2].tolist() == [3, 3] and m[3].tolist() == [1, 0]      # id 2 = good, id 3 = bad
    assert cover == {"coverage": round(2 / 3, 6), "vocab_words": 3, "with_vector": 2, "random_init": 1,
                     "oov_row": "mean of words outside the vocabulary", "outside_vocab_words": 2}


def test_pretrained_vectors_of_another_vocabulary_are_refused(tmp_path):
    from reviewpipe.vocab import Vocabulary
    from reviewpipe.word2vec import PretrainedError, load_pretrained

    (tmp_path / "word2vec.json").write_text(json.dumps({"vocab_fingerprint": "a" * 64}))
    vocab = Vocabulary(["x"], [1], [1], {"tokenizer": {}, "size": 3, "fingerprint": "b" * 64})
    with pytest.raises(PretrainedError, match=r"aligned to vocabulary aaaaaaaaaaaa…, but training uses bbbbbbbbbbbb…"):
        load_pretrained(f"word2vec:{tmp_path}", vocab)
    with pytest.raises(PretrainedError, match=r"no word2vec.json in .*run make pretrain first"):
        load_pretrained(f"word2vec:{tmp_path / 'none'}", vocab)


@pytest.mark.spark
@pytest.mark.integration
def test_spark_word2vec_on_real_reviews_feeds_a_frozen_embedding(spark, data, tmp_path):
    from conftest import small_conf
    from reviewpipe.train import train
    from reviewpipe.vocab import load_vocab
    from reviewpipe.word2vec import pretrain

    root = data["root"]
    conf = small_conf(data["conf"], "word2vec.splits=train", "word2vec.dim=12", "word2vec.min_count=2")
    spec = pretrain(spark, str(root / "reviews"), str(root / "vocab"), str(tmp_path / "w2v"), conf)
    vocab = load_vocab(None, str(root / "vocab"))
    m = np.load(tmp_path / "w2v" / "vectors.npy")
    assert m.shape == (vocab.size, 12) and not m[0].any() and m[1].any()
    assert spec["vocab_fingerprint"] == vocab.fingerprint and spec["documents"] == 1200
    assert 0.6 < spec["coverage"] <= 1 and spec["with_vector"] + spec["random_init"] == len(vocab.tokens)
    labels = (tmp_path / "w2v" / C.RUN_METADATA).read_text(encoding="utf-8").split("\n")
    assert labels[2] == vocab.tokens[0]

    run_conf = small_conf(data["conf"], f"model.embedding_init=word2vec:{tmp_path / 'w2v'}",
                          "model.embedding_trainable=false", "train.epochs=1")
    metrics = train(str(root / "shards"), str(root / "vocab"), str(tmp_path / "runs"), run_conf, run_id="w2v",
                    verbose=0)
    trained = np.loadtxt(tmp_path / "runs" / "w2v" / C.RUN_VECTORS, delimiter="\t", dtype=np.float32)
    np.testing.assert_allclose(trained, m, rtol=1e-5, atol=1e-6)  # frozen: still the Word2Vec vectors
    assert metrics["embedding_init"]["coverage"] == spec["coverage"]
    assert set(metrics["intrinsic"]) >= {"random_init", "word2vec", "trained"}
