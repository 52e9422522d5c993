"""The XLA-compiled inference loop (reviewpipe.fused) against Keras's own predict (no Spark)."""

from __future__ import annotations

import numpy as np
import pytest

from reviewpipe.config import load_conf

keras = pytest.importorskip("keras")
from reviewpipe import fused as F  # noqa: E402
from reviewpipe import model as M  # noqa: E402

MAXLEN, VOCAB, BATCH = 24, 40, 8


def _model(overrides, padding="post"):
    conf = load_conf(None, ["model.units=8", "model.embedding_dim=6", *overrides])
    keras.utils.set_random_seed(7)
    model = M.build_model(conf.model, M.plan(conf.model, VOCAB, MAXLEN, padding))
    # weights large enough that every gate and every step moves the output
    model.set_weights([w * 2.5 for w in model.get_weights()])
    return model


def _ids(padding="post"):
    """Rows of every length from empty to maxlen (and one that fills it), padded as told."""
    rng = np.random.default_rng(3)
    lengths = [0, 1, 2, 5, MAXLEN, 11, 0, 17, 3, MAXLEN - 1, 8, 1]
    ids = np.zeros((len(lengths), MAXLEN), np.int32)
    for r, n in enumerate(lengths):
        row = rng.integers(1, VOCAB, n)
        if padding == "post":
            ids[r, :n] = row
        else:
            ids[r, MAXLEN - n:] = row
    return ids


def _fused(model, ids, batch_size=BATCH):
    run = F.compile_classifier(model, MAXLEN, batch_size)
    return np.concatenate([run(ids[s:s + batch_size]) for s in range(0, len(ids), batch_size)])


@pytest.mark.parametrize("overrides", [
    [], ["model.cell=gru"], ["model.pooling=last"], ["model.pooling=mean"], ["model.pooling=maxmean"],
    ["model.cell=gru", "model.pooling=last"], ["model.bidirectional=true"],
    ["model.bidirectional=true", "model.cell=gru", "model.pooling=mean"],
    ["model.layers=2"], ["model.layers=2", "model.bidirectional=true", "model.pooling=last"],
    ["model.layers=3", "model.cell=gru", "model.pooling=maxmean"],
])
def test_masked_post_padded_models_give_keras_probabilities(overrides):
    model, ids = _model(overrides), _ids()
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    got = _fused(model, ids)
    assert got.shape == (len(ids),) and got.dtype == np.float64
    # float32 in another order (XLA fuses the gates); these weights saturate more than trained ones
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    assert np.ptp(want) > 0.02  # the rows differ: the check compares real outputs
    # an empty review: Keras's recurrent layers give zeros for it, so the output is sigmoid(bias)
    bias = float(model.get_layer("sentiment").bias.numpy()[0])
    assert got[0] == got[6] == pytest.approx(1 / (1 + np.exp(-bias)), abs=1e-7)


def test_cropped_batches_give_the_full_width_probabilities():
    """The caller may hand a batch already cut to its longest row (score's length-aware order)."""
    model, ids = _model([]), _ids()
    rows = np.argsort(np.count_nonzero(ids, axis=1), kind="stable")[:BATCH]
    narrow = ids[rows][:, :int(np.count_nonzero(ids[rows], axis=1).max())]
    run = F.compile_classifier(model, MAXLEN, BATCH)
    want = np.asarray(model.predict_on_batch(ids[rows]), np.float64).reshape(-1)
    np.testing.assert_allclose(run(narrow), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("overrides", [[], ["model.cell=gru", "model.bidirectional=true", "model.pooling=mean"],
                                       ["model.layers=2", "model.pooling=last"]])
def test_a_vocabulary_too_large_for_the_projection_table_multiplies_in_the_loop(overrides, monkeypatch):
    """Past PROJECTION_MAX_BYTES the first layer reads the embedding and multiplies by its
    kernel each step, as the later layers do: the same probabilities as the gathered table."""
    model, ids = _model(overrides), _ids()
    plan = F.describe(model)
    first = plan["recurrent"][0]
    table = F.projection(plan["embedding"], first.kind, first.weights[0])
    assert table.shape == (VOCAB, (4 if "model.cell=gru" not in overrides else 3) * 8)
    made = []
    real = F.projection
    monkeypatch.setattr(F, "projection", lambda *a: made.append(a) or real(*a))
    gathered = _fused(model, ids)
    assert len(made) == len(first.weights)  # one table per direction
    monkeypatch.setattr(F, "PROJECTION_MAX_BYTES", table.nbytes - 1)
    made.clear()
    multiplied = _fused(model, ids)
    assert made == []
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    np.testing.assert_allclose(multiplied, want, atol=2e-6, rtol=0)
    np.testing.assert_allclose(gathered, multiplied, atol=2e-6, rtol=0)


@pytest.mark.parametrize("overrides", [["model.mask=off"], ["model.mask=off", "model.cell=gru", "model.pooling=mean"]])
def test_unmasked_pre_padded_models_read_every_column(overrides):
    model, ids = _model(overrides, "pre"), _ids("pre")
    assert not F.describe(model)["masked"]
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    np.testing.assert_allclose(_fused(model, ids), want, atol=1e-6, rtol=0)


def test_a_batch_larger_than_compiled_is_refused():
    run = F.compile_classifier(_model([]), MAXLEN, 4)
    with pytest.raises(ValueError, match=r"does not fit the compiled \[4, 24\]"):
        run(np.ones((5, MAXLEN), np.int32))
    with pytest.raises(ValueError, match=r"does not fit"):
        run(np.ones((2, MAXLEN + 1), np.int32))


def test_what_it_does_not_reproduce_is_named():
    ids = keras.Input((MAXLEN,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 4)(ids)
    relu = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(3, activation="relu")(x)))
    with pytest.raises(F.Unsupported, match="activations other than tanh/sigmoid"):
        F.describe(relu)
    conv = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalMaxPooling1D()(keras.layers.Conv1D(2, 3)(x))))
    with pytest.raises(F.Unsupported, match=r"Conv1D"):
        F.describe(conv)
    two = keras.Model(ids, keras.layers.Dense(2, activation="softmax")(keras.layers.GRU(3)(x)))
    with pytest.raises(F.Unsupported, match=r"not Dense\(1, sigmoid\)"):
        F.describe(two)
    zero = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.LSTM(3)(keras.layers.Embedding(VOCAB, 4, mask_zero=True)(ids))))
    with pytest.raises(F.Unsupported, match="mask_zero"):
        F.describe(zero)
    old_gru = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GRU(3, reset_after=False)(x)))
    with pytest.raises(F.Unsupported, match="reset_after=False"):
        F.describe(old_gru)


def test_a_mixed_precision_model_is_left_to_keras():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model([])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(F.Unsupported, match="float16"):
        F.describe(model)


WIDE = [(["model.wide_ngrams=3", "model.wide_hash_bits=8"], "post"),  # 256 weights: n-grams share them
        (["model.wide_ngrams=2", "model.wide_hash_bits=12", "model.cell=gru", "model.bidirectional=true",
          "model.pooling=mean"], "post"),
        (["model.wide_ngrams=1", "model.mask=off"], "pre")]


def _wide(overrides, padding):
    """A wide & deep model whose n-gram weights are not zero (as they start), and its output
    with them zeroed: the deep half alone."""
    model = _model(overrides, padding)
    bag = model.get_layer("ngram_bag")
    deep_only = np.asarray(model.predict_on_batch(_ids(padding)), np.float64).reshape(-1)
    bag.table.assign(np.random.default_rng(11).normal(0, 1.5, bag.buckets).astype(np.float32))
    return model, deep_only


@pytest.mark.parametrize("overrides,padding", WIDE)
def test_wide_and_deep_models_give_keras_probabilities(overrides, padding):
    (model, deep_only), ids = _wide(overrides, padding), _ids(padding)
    plan = F.describe(model)
    assert plan["wide"][:2] == (model.get_layer("ngram_bag").orders, model.get_layer("ngram_bag").buckets)
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    np.testing.assert_allclose(_fused(model, ids), want, atol=2e-6, rtol=0)
    nonempty = ids.any(axis=1)
    assert np.abs(want - deep_only)[nonempty].min() > 1e-3  # the n-grams move every non-empty row
    np.testing.assert_allclose(want[~nonempty], deep_only[~nonempty], atol=1e-7, rtol=0)


def test_a_linear_output_without_the_ngram_bag_is_refused():
    ids = keras.Input((MAXLEN,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 4)(ids)
    linear = keras.Model(ids, keras.layers.Dense(1)(keras.layers.LSTM(3)(x)))
    with pytest.raises(F.Unsupported, match="nor its wide & deep form"):
        F.describe(linear)
