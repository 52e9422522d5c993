"""The classifier as an ONNX graph (reviewpipe.onnxmodel) against Keras's own predict (no Spark)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from reviewpipe import fused as F  # noqa: E402
from reviewpipe import onnxmodel as O  # noqa: E402
from test_fused import MAXLEN, VOCAB, WIDE, _ids, _model, _wide  # noqa: E402


def _classifier(model, tmp_path, threads=1):
    return O.Classifier(O.export(model, tmp_path / "model.onnx"), threads)


@pytest.mark.parametrize("overrides", [
    [], ["model.cell=gru"], ["model.pooling=last"], ["model.pooling=mean"], ["model.pooling=maxmean"],
    ["model.cell=gru", "model.pooling=last"], ["model.bidirectional=true"],
    ["model.bidirectional=true", "model.cell=gru", "model.pooling=mean"],
    ["model.bidirectional=true", "model.pooling=last"],
    ["model.layers=2"], ["model.layers=2", "model.bidirectional=true", "model.pooling=last"],
    ["model.layers=3", "model.cell=gru", "model.pooling=maxmean"],
])
def test_masked_post_padded_models_give_keras_probabilities(overrides, tmp_path):
    model, ids = _model(overrides), _ids()
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    run = _classifier(model, tmp_path)
    assert run.masked
    got = run(ids)
    assert got.shape == (len(ids),) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    assert np.ptp(want) > 0.02  # the rows differ: the check compares real outputs
    # an empty review: Keras's recurrent layers give zeros for it, so the output is sigmoid(bias)
    bias = float(model.get_layer("sentiment").bias.numpy()[0])
    assert got[0] == got[6] == pytest.approx(1 / (1 + np.exp(-bias)), abs=1e-7)
    # alone, or in a batch of empty reviews only (every row of length 0)
    np.testing.assert_allclose(run(ids[[0, 6]]), want[[0, 6]], atol=1e-7, rtol=0)
    np.testing.assert_allclose(run(ids[[4]]), want[[4]], atol=2e-6, rtol=0)


def test_a_masked_batch_is_cropped_to_its_longest_row(tmp_path, monkeypatch):
    model, ids = _model([]), _ids()
    run = _classifier(model, tmp_path)
    widths = []
    real = run.session.run
    monkeypatch.setattr(run.session, "run", lambda out, feed: widths.append(feed[O.IDS].shape) or real(out, feed))
    short = ids[[1, 2, 3, 8]]  # 1, 2, 5 and 3 ids
    want = np.asarray(model.predict_on_batch(short), np.float64).reshape(-1)
    np.testing.assert_allclose(run(short), want, atol=2e-6, rtol=0)
    assert widths == [(4, 5)]


@pytest.mark.parametrize("overrides", [["model.mask=off"], ["model.mask=off", "model.cell=gru", "model.pooling=mean"],
                                       ["model.mask=off", "model.pooling=last", "model.bidirectional=true"]])
def test_unmasked_pre_padded_models_read_every_column(overrides, tmp_path):
    model, ids = _model(overrides, "pre"), _ids("pre")
    run = _classifier(model, tmp_path)
    assert not run.masked
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    np.testing.assert_allclose(run(ids), want, atol=2e-6, rtol=0)


def test_it_refuses_what_the_fused_loop_refuses(tmp_path):
    ids = keras.Input((MAXLEN,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 4)(ids)
    relu = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(3, activation="relu")(x)))
    with pytest.raises(F.Unsupported, match="activations other than tanh/sigmoid"):
        O.export(relu, tmp_path / "relu.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_weights_past_one_onnx_file_are_refused(tmp_path, monkeypatch):
    model = _model([])
    weights = F.describe(model)["embedding"].nbytes + sum(w.nbytes for w in model.get_weights()[1:4])
    monkeypatch.setattr(O, "MAX_BYTES", weights - 1)
    with pytest.raises(F.Unsupported, match=r"GiB of weights \(one ONNX file holds at most 2 GiB\)"):
        O.export(model, tmp_path / "big.onnx")
    monkeypatch.setattr(O, "MAX_BYTES", weights)
    assert O.export(model, tmp_path / "big.onnx").exists()


def test_the_export_is_atomic_and_replaces_an_older_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    O.export(_model([]), path)
    assert path.read_bytes()[:2] != b"ol" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert len(_classifier(_model([]), tmp_path)(_ids())) == len(_ids())


@pytest.mark.parametrize("overrides,padding", WIDE)
def test_wide_and_deep_models_give_keras_probabilities(overrides, padding, tmp_path):
    (model, deep_only), ids = _wide(overrides, padding), _ids(padding)
    run = _classifier(model, tmp_path)
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    np.testing.assert_allclose(run(ids), want, atol=2e-6, rtol=0)
    assert np.abs(want - deep_only)[ids.any(axis=1)].min() > 1e-3
    if padding == "post":  # cropped to the longest row: the n-grams past it were padding
        short = ids[[1, 2, 3, 8]]
        np.testing.assert_allclose(run(short), want[[1, 2, 3, 8]], atol=2e-6, rtol=0)
