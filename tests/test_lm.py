"""Language-model pretraining: the encoder artifact, its refusals, the hand-over."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import small_conf
from reviewpipe import constants as C


def test_encoder_of_another_vocabulary_or_shape_is_refused(tmp_path):
    from reviewpipe.lm import LanguageModelError, load_encoder
    from reviewpipe.vocab import Vocabulary

    vocab = Vocabulary(["x"], [1], [1], {"tokenizer": {}, "size": 3, "fingerprint": "b" * 64})
    with pytest.raises(LanguageModelError, match=r"no lm.json in .*none; run make pretrain-lm first"):
        load_encoder(f"lm:{tmp_path / 'none'}", vocab, "lstm", 8)
    (tmp_path / "lm.json").write_text(json.dumps({"vocab_fingerprint": "a" * 64, "cell": "lstm", "units": 8}))
    with pytest.raises(LanguageModelError, match=r"trained on vocabulary aaaaaaaaaaaa…, but training uses bbbbbbbbbbbb…"):
        load_encoder(f"lm:{tmp_path}", vocab, "lstm", 8)
    (tmp_path / "lm.json").write_text(json.dumps({"vocab_fingerprint": "b" * 64, "cell": "lstm", "units": 8}))
    with pytest.raises(LanguageModelError, match=r"is LSTM\(8\), the classifier GRU\(8\); set model.cell and model.units"):
        load_encoder(f"lm:{tmp_path}", vocab, "gru", 8)
    np.savez(tmp_path / "encoder.npz", embedding=np.zeros((4, 2), np.float32))
    with pytest.raises(LanguageModelError, match=r"embedding has 4 rows, the vocabulary 3"):
        load_encoder(f"lm:{tmp_path}", vocab, "lstm", 8)


@pytest.mark.spark
@pytest.mark.integration
def test_language_model_pretrains_and_hands_its_encoder_to_the_classifier(data, tmp_path):
    import keras

    from reviewpipe.lm import LanguageModelError, pretrain
    from reviewpipe.model import first_recurrent_layer
    from reviewpipe.train import train
    from reviewpipe.vocab import load_vocab

    root = data["root"]
    shards, vocab_dir = str(root / "shards"), str(root / "vocab")
    with pytest.raises(LanguageModelError, match=r"has no unsup rows; encode those splits first"):
        pretrain(shards, vocab_dir, str(tmp_path / "lm"), data["conf"])  # lm.splits defaults to train+unsup
    conf = small_conf(data["conf"], "lm.splits=train", "lm.epochs=2", "lm.batch_size=32", "lm.sampled=64",
                      "lm.length_step=40", "lm.eval_rows=100", "lm.learning_rate=0.01")
    spec = pretrain(shards, vocab_dir, str(tmp_path / "lm"), conf, verbose=False)

    vocab = load_vocab(None, vocab_dir)
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == ["encoder.npz", "lm.json"]
    assert json.loads((tmp_path / "lm" / "lm.json").read_text()) == spec
    assert (spec["vocab_fingerprint"], spec["cell"], spec["units"], spec["dim"]) == (vocab.fingerprint, "lstm", 16, 16)
    assert spec["rows"] == {"train": 1200} and [h["epoch"] for h in spec["history"]] == [1, 2]
    assert spec["history"][1]["sampled_loss"] < spec["history"][0]["sampled_loss"]
    assert 1 < spec["val_perplexity"] < vocab.size  # better than a uniform guess over the vocabulary
    with np.load(tmp_path / "lm" / "encoder.npz") as z:
        enc = {k: z[k] for k in z.files}
    assert {k: v.shape for k, v in enc.items()} == {
        "embedding": (vocab.size, 16), "rnn_0": (16, 64), "rnn_1": (16, 64), "rnn_2": (64,)}

    # learning rate 0 and a frozen embedding: the finished model still holds the LM's weights
    run_conf = small_conf(data["conf"], f"model.encoder_init=lm:{tmp_path / 'lm'}", "model.embedding_trainable=false",
                          "train.learning_rate=0", "train.epochs=1")
    metrics = train(shards, vocab_dir, str(tmp_path / "runs"), run_conf, run_id="lm", verbose=0)
    model = keras.models.load_model(tmp_path / "runs" / "lm" / C.RUN_MODEL)
    np.testing.assert_array_equal(model.get_layer("embedding").get_weights()[0], enc["embedding"])
    for got, want in zip(first_recurrent_layer(model).get_weights(), [enc["rnn_0"], enc["rnn_1"], enc["rnn_2"]]):
        np.testing.assert_array_equal(got, want)
    assert metrics["encoder_init"]["lm_val_perplexity"] == spec["val_perplexity"]
    assert set(metrics["intrinsic"]) >= {"random_init", "language_model", "trained"}
    assert math.isfinite(metrics["val_loss"])

    with pytest.raises(LanguageModelError, match=r"is LSTM\(16\), the classifier LSTM\(32\)"):
        train(shards, vocab_dir, str(tmp_path / "runs"),
              small_conf(data["conf"], f"model.encoder_init=lm:{tmp_path / 'lm'}", "model.units=32"), run_id="lm32")

    manifest = json.loads((root / "shards" / C.MANIFEST).read_text())
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / C.MANIFEST).write_text(json.dumps({**manifest, "padding": "pre"}))
    with pytest.raises(LanguageModelError, match=r"is pre-padded; the language model needs post-padded shards"):
        pretrain(str(tmp_path / "pre"), vocab_dir, str(tmp_path / "lm2"), conf)
    assert not (tmp_path / "lm2").exists()


def test_the_first_recurrent_layer_of_a_bidirectional_model_is_the_forward_one():
    from reviewpipe.config import load_conf
    from reviewpipe.model import build_model, first_recurrent_layer, plan

    mc = load_conf(None, ["model.bidirectional=true", "model.layers=2", "model.units=4", "model.embedding_dim=8"]).model
    model = build_model(mc, plan(mc, 10, 6, "post"))
    layer = first_recurrent_layer(model)
    assert layer is model.get_layer("bi_lstm_1").forward_layer
    assert [w.shape for w in layer.get_weights()] == [(8, 16), (4, 16), (16,)]
