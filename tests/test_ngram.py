"""The n-gram teacher: NB ratios, the folded weights, the teacher folder and its lookups."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import sparse

from reviewpipe import constants as C
from reviewpipe.config import ConfigError, load_conf
from reviewpipe.tokenizer import TokenizerSpec

POS = ["a great film, truly great", "wonderful acting and a great story", "i loved it, not bad at all",
       "superb, moving and wonderful", "great fun, loved every minute"]
NEG = ["an awful film, truly awful", "boring acting and a dull story", "i hated it, not good at all",
       "terrible, slow and boring", "awful mess, hated every minute"]


def _conf(*extra):
    return load_conf(None, ["ngram.hash_bits=12", "ngram.ngram_max=2", *extra])


def test_nb_ratio_is_the_smoothed_log_count_ratio():
    from reviewpipe.ngram import nb_ratio

    x = sparse.csr_matrix(np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32))
    r = nb_ratio(x, np.array([1, 0, 1]), alpha=1.0)
    # positive rows 0, 2: 1 + [1, 1, 2] = [2, 2, 3] (sum 7); negative row 1: 1 + [1, 1, 0] = [2, 2, 1] (sum 5)
    np.testing.assert_allclose(r, np.log([2 / 7, 2 / 7, 3 / 7]) - np.log([2 / 5, 2 / 5, 1 / 5]), rtol=1e-6)
    assert r.dtype == np.float32


def test_vectorizer_uses_the_pipeline_tokenizer_and_hashes_binary_ngrams():
    from reviewpipe.ngram import vectorizer

    v = vectorizer(TokenizerSpec(), 2, 12)
    x = v.transform(["Great<br />GREAT film", "great film"])
    assert x.shape == (2, 4096)
    # "great great film": great, film, "great great", "great film" -> 4 buckets, each 1 (binary)
    assert x[0].nnz == 4 and set(x[0].data.tolist()) == {1.0}
    assert x[1].nnz == 3  # great, film, "great film": all in row 0 too
    assert set(x[1].indices) < set(x[0].indices)


def test_fit_folds_the_ratio_into_one_weight_vector_exactly():
    from sklearn.linear_model import LogisticRegression

    from reviewpipe.ngram import fit, nb_ratio, vectorizer

    texts, y = POS + NEG, np.array([1] * 5 + [0] * 5)
    conf = _conf("ngram.c=3.0")
    m = fit(texts, y, TokenizerSpec(), conf)
    assert m.weights.shape == (4096,) and m.weights.dtype == np.float32 and m.ngram_max == 2
    x = vectorizer(TokenizerSpec(), 2, 12).transform(texts)
    r = nb_ratio(x, y, 1.0)
    ref = LogisticRegression(C=3.0, solver="liblinear", dual=True, max_iter=1000).fit(x @ sparse.diags(r), y)
    new = ["a great story", "a boring story", "not good", "truly wonderful"]
    xn = vectorizer(TokenizerSpec(), 2, 12).transform(new)
    np.testing.assert_allclose(m.predict(new), ref.predict_proba(xn @ sparse.diags(r))[:, 1], atol=1e-5)  # float32 weights
    assert (m.predict(new) >= 0.5).tolist() == [True, False, False, True]
    seen = np.asarray(x.sum(axis=0)).ravel() > 0
    assert not m.weights[~seen].any() and m.weights[seen].any()  # a bucket no training review has weighs 0


def test_fit_refuses_one_label():
    from reviewpipe.ngram import NgramError, fit

    with pytest.raises(NgramError, match=r"needs both labels among its training rows, got \[1\]"):
        fit(POS, np.ones(5), TokenizerSpec(), _conf())


def test_ngram_splits_never_name_held_out_reviews():
    with pytest.raises(ConfigError, match=r"ngram.splits: \['train', 'val'\] must name one or more of train, unsup"):
        load_conf(None, ["ngram.splits=train,val"])
    with pytest.raises(ConfigError, match="pseudo.ngram_share: 1.5 is above the maximum 1.0"):
        load_conf(None, ["pseudo.ngram_share=1.5"])


def _reviews(root):
    """A reviews table as ingest writes it: hive-partitioned by split, one unlabelled train row."""
    rows = {C.TRAIN: [(f"t{i}", 1, t) for i, t in enumerate(POS)] + [(f"t{i + 5}", 0, t) for i, t in enumerate(NEG)]
            + [("t-unlabelled", None, "great and awful")],
            C.VAL: [("v0", 1, "great acting, loved it"), ("v1", 0, "awful acting, hated it"),
                    ("v2", 0, "wonderful? no, boring")],
            C.UNSUP: [("u0", None, "a truly great film"), ("u1", None, "truly awful and boring")]}
    for split, rs in rows.items():
        (root / f"{C.SPLIT}={split}").mkdir(parents=True)
        pq.write_table(pa.table({C.REVIEW_ID: [r[0] for r in rs], C.LABEL: pa.array([r[1] for r in rs], pa.int8()),
                                 C.TEXT: [r[2] for r in rs]}), root / f"{C.SPLIT}={split}" / "part-0.parquet")
    return rows


def test_teacher_folder_predicts_every_review_outside_its_splits(tmp_path, monkeypatch):
    from reviewpipe import ngram
    from reviewpipe.ngram import NgramError, NgramModel, PredictionLookup, train_teacher

    monkeypatch.setattr(ngram, "PREDICT_ROWS", 2)  # 5 reviews to predict: 3 chunks
    rows = _reviews(tmp_path / "reviews")
    meta = train_teacher(str(tmp_path / "reviews"), str(tmp_path / "teacher"), _conf())
    assert meta["status"] == "complete" and meta["rows"] == {C.TRAIN: 11, C.UNSUP: 2, C.VAL: 3}
    assert meta["metrics"]["fit_rows"] == 10 and meta["metrics"]["unlabelled_fit_rows_skipped"] == 1
    assert json.loads((tmp_path / "teacher" / C.NGRAM_META).read_text()) == meta

    preds = pq.read_table(tmp_path / "teacher" / C.NGRAM_PREDICTIONS).to_pydict()
    assert sorted(zip(preds[C.REVIEW_ID], preds[C.SPLIT])) == [("u0", C.UNSUP), ("u1", C.UNSUP), ("v0", C.VAL),
                                                               ("v1", C.VAL), ("v2", C.VAL)]
    model = NgramModel.load(tmp_path / "teacher")  # the saved weights give the saved predictions
    texts = {r[0]: r[2] for rs in rows.values() for r in rs}
    np.testing.assert_allclose(preds[C.PROBABILITY], model.predict([texts[i] for i in preds[C.REVIEW_ID]]), atol=1e-6)
    p = dict(zip(preds[C.REVIEW_ID], preds[C.PROBABILITY]))
    assert p["u0"] > 0.5 > p["u1"] and p["v0"] > 0.5 > p["v1"]
    right = (p["v0"] >= 0.5) + (p["v1"] < 0.5) + (p["v2"] < 0.5)
    assert meta["metrics"]["val_rows"] == 3 and meta["metrics"]["val_accuracy"] == round(right / 3, 5)

    lookup = PredictionLookup(tmp_path / "teacher")
    np.testing.assert_allclose(lookup(["v2", "u0", "v2"]), [p["v2"], p["u0"], p["v2"]], rtol=1e-7)
    with pytest.raises(NgramError, match=r"has no prediction for 2 of 3 rows \(first: 't0'\); it predicts the "
                                         r"reviews outside \['train'\]"):
        lookup(["t0", "u1", "zz"])

    again = train_teacher(str(tmp_path / "reviews"), str(tmp_path / "teacher"), _conf())  # re-runnable
    assert again["metrics"]["val_accuracy"] == meta["metrics"]["val_accuracy"]


def test_teacher_refuses_missing_or_unlabelled_input(tmp_path):
    from reviewpipe.ngram import NgramError, read_meta, train_teacher

    with pytest.raises(NgramError, match="--reviews .*nowhere: no such folder"):
        train_teacher(str(tmp_path / "nowhere"), str(tmp_path / "t"), _conf())
    _reviews(tmp_path / "reviews")
    with pytest.raises(NgramError, match=r"has no labelled rows in ngram.splits \['unsup'\]"):
        train_teacher(str(tmp_path / "reviews"), str(tmp_path / "t"), _conf("ngram.splits=unsup"))
    with pytest.raises(NgramError, match="no ngram.json; give a folder written by make train-ngram"):
        read_meta(tmp_path)


def test_train_ngram_job_prints_its_summary_and_exits_2_on_bad_input(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    job = Path(__file__).resolve().parents[1] / "jobs" / "train_ngram.py"
    _reviews(tmp_path / "reviews")
    args = [sys.executable, str(job), "--reviews", str(tmp_path / "reviews"), "--output", str(tmp_path / "t"),
            "--set", "ngram.hash_bits=12"]
    ok = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    assert summary["rows"] == {C.TRAIN: 11, C.UNSUP: 2, C.VAL: 3} and summary["fit_rows"] == 10
    assert summary["val_rows"] == 3 and (tmp_path / "t" / C.NGRAM_PREDICTIONS).is_file()
    bad = subprocess.run(args[:3] + [str(tmp_path / "missing")] + args[4:], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("missing: no such folder (the ingest job's reviews/ output)")
    bad = subprocess.run(args[:-1] + ["ngram.splits=val"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error: ngram.splits: ['val'] must name one or more of train, unsup" in bad.stderr


def test_bag_features_are_what_the_ngram_bag_weighs():
    from reviewpipe.model import NgramBag
    from reviewpipe.ngram import bag_features

    ids = np.array([[7, 8, 7, 8, 0, 0], [4, 0, 0, 0, 0, 0], [0] * 6, [9, 9, 9, 9, 9, 9]], np.int32)
    x = bag_features(ids, 2, 64, batch_rows=3)  # two batches
    assert x.shape == (4, 64) and x.dtype == np.float32
    # row 0: unigrams 7, 8, 7, 8 and bigrams (7 8), (8 7), (7 8): 7 n-grams, each hash counted, over sqrt(7)
    assert sorted(np.round(x[0].data * np.sqrt(7), 5).tolist()) == [1.0, 2.0, 2.0, 2.0]
    assert x[2].nnz == 0 and np.allclose(x[1].data, [1.0]) and np.allclose(sorted(x[3].data * np.sqrt(11)), [5.0, 6.0])
    bag = NgramBag(2, 64)
    bag.build(ids.shape)
    table = np.random.default_rng(3).normal(size=64).astype(np.float32)
    bag.table.assign(table)
    np.testing.assert_allclose(np.asarray(bag(ids))[:, 0], x @ table, rtol=1e-5, atol=1e-6)


def test_fit_bag_gives_the_bag_the_regression_and_refuses_one_label():
    from reviewpipe.model import NgramBag
    from reviewpipe.ngram import NgramError, bag_features, fit_bag

    rng = np.random.default_rng(0)
    ids = rng.integers(10, 40, size=(60, 8)).astype(np.int32)
    labels = np.array([0.9, 0.1] * 30, np.float32)  # soft targets are cut at 0.5
    ids[labels >= 0.5, 0], ids[labels < 0.5, 0] = 5, 6  # id 5 opens every positive row, 6 every negative one
    ids[::7, 6:] = 0  # some rows are shorter
    weights, bias = fit_bag(ids, labels, 1, 128, 10.0)
    assert weights.shape == (128,) and weights.dtype == np.float32 and isinstance(bias, float)
    bag = NgramBag(1, 128)
    bag.build(ids.shape)
    bag.table.assign(weights)
    logit = np.asarray(bag(ids))[:, 0] + bias
    assert ((logit >= 0) == (labels >= 0.5)).all()
    h5, h6 = (((1 * 1_000_003 + i) % 128) for i in (5, 6))
    assert weights[h5] > 0 > weights[h6] and weights[h5] == weights.max() and weights[h6] == weights.min()
    seen = np.asarray((bag_features(ids, 1, 128) != 0).sum(axis=0)).ravel() > 0
    assert not weights[~seen].any()  # a bucket no training row has weighs 0
    with pytest.raises(NgramError, match=r"^model.wide_init=nb needs both labels among the training rows, got \[1\]$"):
        fit_bag(ids, np.ones(60, np.float32), 1, 128, 10.0)


def test_fit_fold_bags_fits_each_fold_table_without_its_rows():
    from reviewpipe.ngram import fit_bag, fit_fold_bags

    rng = np.random.default_rng(1)
    ids = rng.integers(10, 40, size=(90, 8)).astype(np.int32)
    labels = np.array([1.0, 0.0] * 45, np.float32)
    ids[labels == 1, 0], ids[labels == 0, 0] = 5, 6
    tables, biases, fold = fit_fold_bags(ids, labels, 2, 256, 10.0, 3)
    assert tables.shape == (3, 256) and tables.dtype == np.float32 and biases.shape == (3,)
    np.testing.assert_array_equal(fold, ids.astype(np.int64).sum(axis=1) % 3)
    assert sorted(set(fold.tolist())) == [0, 1, 2]
    for k in range(3):
        w, b = fit_bag(ids[fold != k], labels[fold != k], 2, 256, 10.0)
        np.testing.assert_array_equal(tables[k], w)
        assert biases[k] == np.float32(b)
    assert not np.array_equal(tables[0], tables[1])
