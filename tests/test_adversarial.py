"""Adversarial and virtual adversarial training: the terms as defined, on a fixed tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reviewpipe.config import load_conf

IDS = np.array([[5, 3, 9, 2, 0, 0], [7, 7, 1, 4, 8, 6], [2, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.int32)
Y = np.array([1.0, 0.0, 1.0, 0.0], np.float32)


def T(a):
    import tensorflow as tf

    return tf.constant(a)


def tiny(*extra):
    """A masked LSTM(3) over 4-wide embeddings of 12 ids, no dropout, fixed weights."""
    import keras

    from reviewpipe import model as M

    conf = load_conf(None, ["model.units=3", "model.embedding_dim=4", "model.embedding_dropout=0", "model.dropout=0",
                            "train.learning_rate=0.01", *extra])
    keras.utils.set_random_seed(3)
    p = M.plan(conf.model, 12, IDS.shape[1], "post")
    model = M.build_model(conf.model, p)
    M.compile_model(model, conf.train)
    return model, M.embedded_head(model, conf.model, p), conf


def embedded(model):
    import tensorflow as tf

    return tf.constant(model.get_layer("embedding")(IDS))


def adversarial_term(model, head, epsilon):
    """(embedded IDS, the clean loss, reviewpipe.adversarial's adversarial loss) on (IDS, Y)."""
    import tensorflow as tf

    from reviewpipe import adversarial as A

    e = embedded(model)
    with tf.GradientTape() as tape:
        tape.watch(e)
        clean = A.bce(Y, head([T(IDS), e], training=True))
    return e, clean, float(A.adversarial_loss(head, IDS, e, Y, clean, tape, epsilon))


@pytest.mark.parametrize("extra", [[], ["model.wide_ngrams=2", "model.wide_hash_bits=8"]])
def test_the_head_is_the_classifier_after_its_embedding(extra):
    model, head, _ = tiny(*extra)
    if extra:  # wide & deep: at any (perturbed) vectors the head adds the n-gram logit of the ids
        bag, moved = model.get_layer("ngram_bag"), embedded(model) + 0.5
        bag.table.assign(np.linspace(-2, 2, 256, dtype=np.float32))
        with_ngrams, ngram_logit = head([T(IDS), moved]).numpy(), np.asarray(bag(IDS))
        assert np.abs(ngram_logit[:3]).min() > 0.01 and ngram_logit[3, 0] == 0.0  # row 3 is empty
        bag.table.assign(np.zeros(256, np.float32))
        logit = lambda p: np.log(p / (1 - p))  # noqa: E731
        np.testing.assert_allclose(logit(with_ngrams) - logit(head([T(IDS), moved]).numpy()), ngram_logit,
                                   rtol=0, atol=2e-5)
        bag.table.assign(np.linspace(-2, 2, 256, dtype=np.float32))
    np.testing.assert_allclose(head([T(IDS), embedded(model)]).numpy(), model(IDS).numpy(), rtol=0, atol=1e-7)
    assert {w.path for w in head.weights} <= {w.path for w in model.weights}  # shared, not copied
    assert ("ngram_bag" in [layer.name for layer in head.layers]) == bool(extra)


def test_along_has_the_relative_size_and_leaves_padding_alone():
    import tensorflow as tf

    from reviewpipe import adversarial as A

    e = tf.constant(np.random.default_rng(0).normal(size=(4, 6, 4)), tf.float32)
    d = tf.constant(np.random.default_rng(1).normal(size=(4, 6, 4)), tf.float32)
    r = A.along(d, e, IDS, 0.1).numpy()
    mask = (IDS != 0)
    mask[:, 0] = True  # the first step is kept (PaddingMask)
    assert np.all(r[~mask] == 0)
    e_norm = np.sqrt((e.numpy() ** 2 * mask[:, :, None]).sum(axis=(1, 2)))
    np.testing.assert_allclose(np.sqrt((r ** 2).sum(axis=(1, 2))), 0.1 * e_norm, rtol=1e-5)
    dm = d.numpy() * mask[:, :, None]
    cos = (r * dm).sum(axis=(1, 2)) / np.sqrt((r ** 2).sum(axis=(1, 2)) * (dm ** 2).sum(axis=(1, 2)))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)


def test_the_adversarial_loss_is_the_loss_at_the_embedding_moved_along_the_normalised_gradient():
    import tensorflow as tf

    from reviewpipe import adversarial as A

    model, head, _ = tiny()
    e, clean, got = adversarial_term(model, head, 0.05)
    # by hand, in numpy: g / |g| over each row's unmasked steps, scaled to 0.05 of |e|
    with tf.GradientTape() as t2:
        t2.watch(e)
        loss = A.bce(Y, head([T(IDS), e]))
    g = t2.gradient(loss, e).numpy()
    mask = (IDS != 0)[:, :, None].astype(np.float32)
    mask[:, 0] = 1
    e_np = e.numpy()
    unit = g * mask / np.maximum(np.sqrt(((g * mask) ** 2).sum(axis=(1, 2), keepdims=True)), 1e-12)
    moved = e_np + 0.05 * np.sqrt(((e_np * mask) ** 2).sum(axis=(1, 2), keepdims=True)) * unit
    p = head([T(IDS), tf.constant(moved)]).numpy().reshape(-1)
    want = float(np.mean(-(Y * np.log(p) + (1 - Y) * np.log(1 - p))))
    assert got == pytest.approx(want, abs=1e-6)
    assert got > float(clean)  # uphill, by construction


def test_the_virtual_adversarial_term_is_zero_without_a_perturbation_and_positive_with_one():
    import tensorflow as tf

    from reviewpipe import adversarial as A

    model, head, _ = tiny()
    e = embedded(model)
    assert float(A.virtual_adversarial_loss(head, IDS, e, 0.0, seed=1)) == 0.0
    small, big = (float(A.virtual_adversarial_loss(head, IDS, e, eps, seed=1)) for eps in (0.05, 0.5))
    assert 0 < small < big
    # it is the KL at the embedding moved along the KL's own gradient: no random direction does as much
    p = head([T(IDS), e]).numpy()
    rnd = A.along(tf.random.normal(e.shape, seed=9), e, IDS, 0.5)
    assert big > float(A.binary_kl(p, head([T(IDS), e + rnd])))
    assert float(A.binary_kl([0.3, 0.9], [0.3, 0.9])) == 0.0
    want = np.mean([0.3 * np.log(0.3 / 0.6) + 0.7 * np.log(0.7 / 0.4), 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)])
    assert float(A.binary_kl([0.3, 0.9], [0.6, 0.5])) == pytest.approx(want, rel=1e-5)


def one_step_loss(model, conf, mode, unlabelled=None):
    """The loss fit logs for one step on (IDS, Y) after reviewpipe.adversarial.attach."""
    import tensorflow as tf

    from reviewpipe import adversarial as A
    from reviewpipe import model as M

    head = M.embedded_head(model, conf.model, M.plan(conf.model, 12, IDS.shape[1], "post"))
    A.attach(model, head, A.Adversarial(mode, 0.05), unlabelled)
    ds = tf.data.Dataset.from_tensors((IDS, Y))
    return model.fit(ds, epochs=1, verbose=0, shuffle=False).history["loss"][0]


def test_off_is_keras_own_step_and_the_plain_loss():
    from reviewpipe import adversarial as A

    model, head, conf = tiny()
    want = float(A.bce(Y, model(IDS)))
    assert one_step_loss(model, conf, "off") == pytest.approx(want, abs=1e-6)
    assert "train_step" not in vars(model)  # Keras's own train step


def test_at_logs_the_plain_plus_the_adversarial_loss():
    model, head, conf = tiny()
    _, clean, term = adversarial_term(model, head, 0.05)
    want = float(clean) + term
    before = [w.numpy().copy() for w in model.trainable_weights]
    assert one_step_loss(model, conf, "at") == pytest.approx(want, abs=1e-5)
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights))


def test_vat_reads_the_unlabelled_batches_and_the_model_stays_plain(tmp_path):
    import keras
    import tensorflow as tf

    from reviewpipe import model as M

    model, head, conf = tiny()
    unlabelled = tf.data.Dataset.from_tensors((IDS[::-1].copy(), Y)).repeat()
    loss = one_step_loss(model, conf, "at+vat", unlabelled)
    assert np.isfinite(loss) and loss > 0
    for layer in M.recurrent_layers(model):  # the cuDNN conditions are the layers' own, unchanged
        assert M.cudnn_blockers(layer) == []
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert type(loaded) is type(keras.models.clone_model(model)) and "train_step" not in vars(loaded)
    np.testing.assert_allclose(loaded(IDS).numpy(), model(IDS).numpy(), atol=1e-7)


@pytest.mark.spark
@pytest.mark.integration
def test_training_with_at_and_vat_records_it_and_serves_a_plain_model(data, tmp_path):
    from conftest import small_conf
    from reviewpipe import constants as C
    from reviewpipe.train import TrainError, train

    root = data["root"]
    conf = small_conf(data["conf"], "train.epochs=1", "train.steps_per_epoch=6", "train.adversarial=at+vat",
                      "train.vat_split=train", "train.adversarial_epsilon=0.05", "train.embeddings_export=false")
    m = train(str(root / "shards"), str(root / "vocab"), str(tmp_path), conf, run_id="adv", verbose=0)
    assert m["adversarial"] == {"mode": "at+vat", "epsilon": 0.05, "vat_split": "train"}
    assert m["cudnn"] == "possible" and 0 < m["val_loss"] < 1
    assert json.loads((tmp_path / "adv" / C.RUN_META).read_text())["status"] == "complete"
    with pytest.raises(TrainError, match=r"train.adversarial=vat reads train.vat_split='unsup' rows, and .* has none"):
        train(str(root / "shards"), str(root / "vocab"), str(tmp_path), small_conf(data["conf"], "train.adversarial=vat"))
