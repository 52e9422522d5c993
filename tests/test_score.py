"""Batch scoring: the pandas-UDF contract, real scoring, idempotent dates, pending dates, refusals."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from conftest import N_TRAIN, small_conf
from reviewpipe import constants as C
from reviewpipe import score as S

pytestmark = [pytest.mark.spark]


class SumModel:
    """A fake predictor: ids = [n_chars, n_words]; probability = n_words / 1000."""

    def __init__(self, log_path, bad_shape=False):
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        self.bad_shape = bad_shape

    def encode(self, texts):
        py = texts.to_pylist()
        ids = np.array([[len(t), len(t.split())] for t in py], np.int64).reshape(-1, 2)
        return ids, ids[:, 1], np.zeros(len(py), np.int64)  # ids, length (words), oov

    def __call__(self, ids):
        if self.bad_shape:
            return np.zeros((len(ids), 2))
        return (ids[:, 1:2] / 1000.0).astype(np.float64)


@pytest.fixture(autouse=True, scope="module")
def _ship_this_module():
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.mark.integration
def test_udf_contract_one_load_per_worker_lengths_and_quarantine(spark, data, run, tmp_path):
    rows = [{"text": " ".join(["w"] * (i % 50 + 1)), "label": i % 2} for i in range(300)]
    rows += [{"text": "", "label": 1}, {"text": 42, "label": 0}, {"text": "   ", "label": 1}]
    src = write_jsonl(tmp_path / "in" / "reviews.jsonl", rows)
    log = tmp_path / "loads.txt"
    conf = small_conf(data["conf"], "score.arrow_batch_rows=16", "score.batch_size=7")
    summary = S.score(spark, src, str(run[0]), str(tmp_path / "out"), "2026-01-05", conf,
                      predictor_factory=lambda: SumModel(str(log)))
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (303, 300, 3)
    assert summary["quarantined_by_reason"] == {C.EMPTY_TEXT: 2, C.NON_TEXT: 1}
    got = spark.read.parquet(str(tmp_path / "out")).toPandas()
    assert len(got) == 300 and got[C.REVIEW_ID].is_unique
    words = {r: i % 50 + 1 for i, r in enumerate(sorted(got[C.REVIEW_ID], key=lambda s: int(s.rsplit("/", 1)[1])))}
    assert all(abs(p - words[r] / 1000) < 1e-12 for r, p in zip(got[C.REVIEW_ID], got[C.PROBABILITY]))
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) <= 2  # 19+ Arrow batches, one load per Python worker
    q = spark.read.parquet(str(tmp_path / "out" / C.SCORES_QUARANTINE)).toPandas()
    assert sorted(q[C.REASON]) == [C.EMPTY_TEXT, C.EMPTY_TEXT, C.NON_TEXT]
    # the same date again with nothing scorable: the partition is replaced by an empty one
    empty = write_jsonl(tmp_path / "in2" / "reviews.jsonl", [{"text": " ", "label": 1}])
    again = S.score(spark, empty, str(run[0]), str(tmp_path / "out"), "2026-01-05", conf,
                    predictor_factory=lambda: SumModel(str(log)))
    assert (again["rows_in"], again["rows_scored"], again["rows_quarantined"]) == (1, 0, 1)
    assert (tmp_path / "out" / "run_date=2026-01-05" / "_SUCCESS").is_file()
    assert not list((tmp_path / "out" / "run_date=2026-01-05").glob("*.parquet"))


@pytest.mark.integration
def test_duplicated_ids_across_files_are_quarantined_and_reconciled(spark, data, run, tmp_path):
    # a.jsonl holds ids 0-9, b.jsonl ids 5-14 and an empty text: ids 5-9 are seen first in a.jsonl
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": str(i), "text": f"w {i}", "label": 1} for i in range(10)])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"id": str(i), "text": f"x y {i}", "label": 0} for i in range(5, 15)]
                + [{"id": "99", "text": "", "label": 0}])
    conf = small_conf(data["conf"], "ingest.id_column=id")
    log = str(tmp_path / "loads.txt")
    s = S.score(spark, str(tmp_path / "in"), str(run[0]), str(tmp_path / "out"), "2026-01-06", conf,
                predictor_factory=lambda: SumModel(log))
    assert (s["rows_in"], s["rows_scored"], s["rows_quarantined"]) == (21, 15, 6)
    assert s["quarantined_by_reason"] == {C.DUPLICATE_ID: 5, C.EMPTY_TEXT: 1}
    got = spark.read.parquet(str(tmp_path / "out" / "run_date=2026-01-06")).toPandas()
    assert sorted(map(int, got[C.REVIEW_ID])) == list(range(15))
    # the first file's texts (2 words) won ids 5-9; the second file's (3 words) only 10-14
    assert {int(r): round(p * 1000) for r, p in zip(got[C.REVIEW_ID], got[C.PROBABILITY])} == \
        {i: 2 if i < 10 else 3 for i in range(15)}
    q = spark.read.parquet(str(tmp_path / "out" / C.SCORES_QUARANTINE / "run_date=2026-01-06")).toPandas()
    dup = q[q[C.REASON] == C.DUPLICATE_ID].sort_values(C.ORDINAL)
    assert list(dup[C.REVIEW_ID]) == [str(i) for i in range(5, 10)]
    assert list(dup[C.ORDINAL]) == list(range(10, 15))  # b.jsonl's rows 0-4, after a.jsonl's 10
    assert list(dup[C.DETAIL]) == [f"review_id first seen at a.jsonl:line {i + 1}" for i in range(5, 10)]
    # a split filter that selects nothing: zero rows in, an empty partition, still reconciled
    none = S.score(spark, str(tmp_path / "in"), str(run[0]), str(tmp_path / "out"), "2026-01-06", conf,
                   splits=[C.TEST], predictor_factory=lambda: SumModel(log))
    assert (none["rows_in"], none["rows_scored"], none["rows_quarantined"], none["quarantined_by_reason"]) == \
        (0, 0, 0, {})
    assert not list((tmp_path / "out" / "run_date=2026-01-06").glob("*.parquet"))
    # ids made from file stem and row repeat when two folders hold the same file name: checked too
    for sub in ("x", "y"):
        write_jsonl(tmp_path / "in2" / sub / "r.jsonl", [{"text": f"{sub} {i}", "label": 1} for i in range(2)])
    same = S.score(spark, str(tmp_path / "in2"), str(run[0]), str(tmp_path / "out"), "2026-01-07",
                   small_conf(data["conf"]), predictor_factory=lambda: SumModel(log))
    assert (same["rows_in"], same["rows_scored"], same["quarantined_by_reason"]) == (4, 2, {C.DUPLICATE_ID: 2})


@pytest.mark.integration
def test_a_reviews_table_is_checked_as_it_is_scored_and_a_date_quarantined_whole_is_emptied(
        spark, data, run, tmp_path):
    """A reviews table is counted from its files' metadata and checked by the scoring and the
    quarantine passes themselves: the texts over score.max_text_bytes are quarantined, the rest
    scored; scored again on the same date with every text over the limit, the partition that
    held the first run's rows is emptied, and the counts still reconcile."""
    reviews = str(data["root"] / "reviews")
    val = spark.read.parquet(reviews).filter(f"{C.SPLIT} = '{C.VAL}'").toPandas()
    nbytes = val[C.TEXT].str.encode("utf-8").str.len()
    limit = int(nbytes.median())
    out, log = tmp_path / "out", str(tmp_path / "loads.txt")
    s = S.score(spark, reviews, str(run[0]), str(out), "2026-04-01",
                small_conf(data["conf"], f"score.max_text_bytes={limit}"), splits=[C.VAL],
                predictor_factory=lambda: SumModel(log))
    big = set(val.loc[nbytes > limit, C.REVIEW_ID])
    assert (s["rows_in"], s["rows_scored"], s["quarantined_by_reason"]) == \
        (400, 400 - len(big), {C.TEXT_TOO_LARGE: len(big)})
    assert 100 < len(big) < 300
    scored = spark.read.parquet(str(out / "run_date=2026-04-01")).toPandas()
    assert set(scored[C.REVIEW_ID]) == set(val[C.REVIEW_ID]) - big
    q = spark.read.parquet(str(out / C.SCORES_QUARANTINE / "run_date=2026-04-01")).toPandas()
    assert set(q[C.REVIEW_ID]) == big and (q[C.RAW_BYTES] > limit).all()
    again = S.score(spark, reviews, str(run[0]), str(out), "2026-04-01",
                    small_conf(data["conf"], "score.max_text_bytes=1"), splits=[C.VAL],
                    predictor_factory=lambda: SumModel(log))
    assert (again["rows_in"], again["rows_scored"], again["quarantined_by_reason"]) == (400, 0, {C.TEXT_TOO_LARGE: 400})
    assert "metrics" not in again and (s["metrics"] or {}).get("accuracy") is not None
    assert not (out / C.SCORES_REPORTS / "run_date=2026-04-01" / C.SCORE_METRICS).exists()  # the first run's is gone
    assert not list((out / "run_date=2026-04-01").glob("*.parquet"))
    assert (out / "run_date=2026-04-01" / "_SUCCESS").is_file()


@pytest.mark.integration
def test_udf_rejects_a_model_with_the_wrong_output_shape(spark, data, run, tmp_path):
    src = write_jsonl(tmp_path / "in" / "r.jsonl", [{"text": "a b", "label": 1}] * 3)
    with pytest.raises(Exception, match=r"model returned shape \(\d, 2\) for a batch of \d; expected \(\d, 1\)"):
        S.score(spark, src, str(run[0]), str(tmp_path / "out"), "2026-01-05", data["conf"],
                predictor_factory=lambda: SumModel(str(tmp_path / "l"), bad_shape=True))


@pytest.mark.integration
def test_real_scoring_is_idempotent_per_date_and_evaluates(spark, data, run, tmp_path):
    from reviewpipe.serving import load_serving

    reviews = str(data["root"] / "reviews")
    out = str(tmp_path / "scores")
    conf = small_conf(data["conf"])
    # another date first: re-running 2026-02-02 must leave it alone
    S.score(spark, reviews, str(run[0]), out, "2026-02-01", conf, splits=[C.VAL])
    first = S.score(spark, reviews, str(run[0]), out, "2026-02-02", conf, splits=[C.VAL])
    a = spark.read.parquet(f"{out}/run_date=2026-02-02").toPandas().sort_values(C.REVIEW_ID, ignore_index=True)
    second = S.score(spark, reviews, str(run[0]), out, "2026-02-02", conf, splits=[C.VAL])
    b = spark.read.parquet(f"{out}/run_date=2026-02-02").toPandas().sort_values(C.REVIEW_ID, ignore_index=True)
    assert first["rows_scored"] == second["rows_scored"] == 400 and b[C.REVIEW_ID].is_unique
    cols = [C.REVIEW_ID, C.PROBABILITY, C.PREDICTED_LABEL, C.MODEL_RUN, C.VOCAB_FINGERPRINT]
    assert a[cols].equals(b[cols])
    everything = spark.read.parquet(out)
    assert [f.name for f in everything.schema.fields] == [*C.SCORE_COLUMNS, C.RUN_DATE]
    assert everything.count() == 800 and everything.select(C.RUN_DATE).distinct().count() == 2
    assert ((b[C.PROBABILITY] >= 0) & (b[C.PROBABILITY] <= 1)).all()
    assert (b[C.PREDICTED_LABEL] == (b[C.PROBABILITY] >= 0.5).astype(int)).all()
    assert set(b[C.MODEL_RUN]) == {"r1"} and set(b[C.VOCAB_FINGERPRINT]) == {run[1]["vocab_fingerprint"]}
    assert (tmp_path / "scores" / "run_date=2026-02-02" / "_SUCCESS").is_file()
    # a few hundred KB per core: auto picks onnx; the xla workers give the same probabilities
    assert first["engine"] == "onnx" and first["engine_reason"].startswith("auto: input 0.")
    assert first["engine_reason"].endswith(" MiB per core, at most 32.0 MiB")
    xla = S.score(spark, reviews, str(run[0]), out, "2026-02-03", small_conf(data["conf"], "score.engine=xla"),
                  splits=[C.VAL])
    assert (xla["engine"], xla["engine_reason"]) == ("xla", None)
    c = spark.read.parquet(f"{out}/run_date=2026-02-03").toPandas().sort_values(C.REVIEW_ID, ignore_index=True)
    assert c[C.REVIEW_ID].equals(b[C.REVIEW_ID])
    np.testing.assert_allclose(c[C.PROBABILITY].to_numpy(), b[C.PROBABILITY].to_numpy(), rtol=0, atol=1e-6)
    # the same probabilities as the raw-string serving model, and the trainer's val accuracy
    texts = data["texts"][N_TRAIN:]
    loaded = load_serving(run[0] / C.RUN_SERVING)  # keep a reference: its functions use its variables
    serving = loaded.serve(texts).numpy()
    order = np.argsort([int(r.split("/")[1]) for r in b[C.REVIEW_ID]])
    np.testing.assert_allclose(b[C.PROBABILITY].to_numpy()[order], serving, rtol=1e-5, atol=1e-6)
    metrics = json.loads((tmp_path / "scores" / C.SCORES_REPORTS / "run_date=2026-02-02" / C.SCORE_METRICS).read_text())
    assert metrics["rows"] == 400 and metrics["accuracy"] == pytest.approx(run[1]["val_accuracy"], abs=1e-4)
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 400 and 0.5 < metrics["roc_auc"] <= 1


@pytest.mark.integration
def test_a_5mb_review_is_truncated_and_a_too_large_one_quarantined(spark, data, run, tmp_path):
    big = "great movie " * 440_000  # 5.3 MB
    src = write_jsonl(tmp_path / "in" / "big.jsonl", [{"text": big, "label": 1}, {"text": big * 2, "label": 1},
                                                      {"text": "fine", "label": 0}])
    conf = small_conf(data["conf"], "score.max_text_bytes=6000000")
    s = S.score(spark, src, str(run[0]), str(tmp_path / "out"), "2026-03-01", conf)
    assert (s["rows_scored"], s["quarantined_by_reason"]) == (2, {C.TEXT_TOO_LARGE: 1})


def test_pending_dates_are_the_unscored_ones_in_order(tmp_path):
    for d in ("2026-01-03", "2026-01-01", "2026-01-02"):
        write_jsonl(tmp_path / "incoming" / f"date={d}" / "r.jsonl", [{"text": "x", "label": 1}])
    (tmp_path / "incoming" / "notes").mkdir()
    (tmp_path / "scores" / "run_date=2026-01-02").mkdir(parents=True)
    (tmp_path / "scores" / "run_date=2026-01-02" / "_SUCCESS").write_text("")
    (tmp_path / "scores" / "run_date=2026-01-03").mkdir(parents=True)  # started, never finished
    got = S.pending_dates(str(tmp_path / "incoming"), str(tmp_path / "scores"))
    # 01-02 has a _SUCCESS but no summary naming its input: it counts as changed, not as scored
    assert got.todo == [("2026-01-01", str(tmp_path / "incoming" / "date=2026-01-01")),
                        ("2026-01-03", str(tmp_path / "incoming" / "date=2026-01-03"))]
    assert (got.new, got.changed) == (["2026-01-01", "2026-01-03"], ["2026-01-02"])


@pytest.mark.integration
def test_refusals(spark, data, run, tmp_path):
    from reviewpipe.vocab import build_vocab

    with pytest.raises(S.ScoreError, match=r"model run '.*nope' does not exist; train one with make train"):
        S.check_run(str(tmp_path / "nope"))
    other = str(tmp_path / "other_vocab")
    build_vocab(spark, str(data["root"] / "reviews"), other, small_conf(data["conf"], "vocab.num_words=100"))
    with pytest.raises(S.ScoreError, match=rf"model run r1 was trained with vocabulary {run[1]['vocab_fingerprint'][:12]}…, "
                                           rf"but --vocab {other} is [0-9a-f]{{12}}…"):
        S.check_run(str(run[0]), other)
    with pytest.raises(S.ScoreError, match=r"--run-date '2026-13-01': month must be in 1..12"):
        S.check_date("2026-13-01")
    with pytest.raises(S.ScoreError, match=r"--run-date 'today': expected YYYY-MM-DD"):
        S.check_date("today")


@pytest.mark.integration
def test_unlabelled_inputs_are_scored_not_quarantined(spark, data, run, tmp_path):
    """A CSV with no sentiment column, a CSV with an unknown label and JSONL without labels: every
    row is scored; a known label still counts in the metrics."""
    texts = data["texts"][N_TRAIN:N_TRAIN + 3]
    csv = tmp_path / "in" / "new.csv"
    csv.parent.mkdir()
    csv.write_text("review\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}"\n' for t in texts), encoding="utf-8")
    summary = S.score(spark, str(csv), str(run[0]), str(tmp_path / "s1"), "2026-03-01", small_conf(data["conf"]))
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (3, 3, 0)
    assert summary.get("metrics") is None
    scored = spark.read.parquet(str(tmp_path / "s1" / "run_date=2026-03-01")).toPandas()
    assert sorted(scored[C.REVIEW_ID]) == ["new/0", "new/1", "new/2"]

    mixed = tmp_path / "in2" / "mixed.csv"
    mixed.parent.mkdir()
    mixed.write_text('review,sentiment\n"great film",positive\n"awful film",meh\n"fine",\n', encoding="utf-8")
    summary = S.score(spark, str(mixed), str(run[0]), str(tmp_path / "s2"), "2026-03-01", small_conf(data["conf"]))
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (3, 3, 0)
    metrics = json.loads((tmp_path / "s2" / C.SCORES_REPORTS / "run_date=2026-03-01" / C.SCORE_METRICS).read_text())
    assert metrics["rows"] == 1  # only the known label is evaluated

    jl = write_jsonl(tmp_path / "in3" / "new.jsonl", [{"text": t} for t in texts])
    summary = S.score(spark, jl, str(run[0]), str(tmp_path / "s3"), "2026-03-01", small_conf(data["conf"]))
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (3, 3, 0)


class _WidthSpy:
    """Wraps a Keras model and records the width of every batch it is asked to predict."""

    def __init__(self, model):
        self.model, self.widths = model, []

    def predict_on_batch(self, x):
        self.widths.append(x.shape[1])
        return self.model.predict_on_batch(x)


def _cropped_vs_full(run_dir, texts):
    import pandas as pd

    run = S.check_run(str(run_dir))
    cropped, full = S.KerasPredictor(run, 0), S.KerasPredictor(run, 0, crop=False)
    assert cropped.crop and not full.crop
    cropped.model = _WidthSpy(cropped.model)
    a = pd.concat(list(S.predict_batches(iter([texts]), cropped, 16)))[C.PROBABILITY]
    b = pd.concat(list(S.predict_batches(iter([texts]), full, 16)))[C.PROBABILITY]
    assert a.index.equals(texts.index) and b.index.equals(texts.index)  # row order kept
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-6)
    _xla_as_keras(run, texts, b)
    _onnx_as_keras(run, texts, b)
    return cropped.model.widths, run.maxlen


def _xla_as_keras(run, texts, want):
    """score.engine=xla gives Keras's full-width probabilities, in row order."""
    import pandas as pd

    xla = S.KerasPredictor(run, 0, engine="xla", batch_size=16)
    assert xla.engine == "xla"
    got = pd.concat(list(S.predict_batches(iter([texts]), xla, 16)))[C.PROBABILITY]
    assert got.index.equals(texts.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-6)


def _onnx_as_keras(run, texts, want):
    """score.engine=onnx (the model.onnx the trainer wrote) gives Keras's probabilities, in row order."""
    import pandas as pd

    from reviewpipe import onnxmodel

    assert onnxmodel.made_from(f"{run.path}/{C.RUN_ONNX}") == onnxmodel.file_sha256(f"{run.path}/{C.RUN_MODEL}")
    onnx = S.OnnxPredictor(run, 1)
    assert onnx.engine == "onnx" and onnx.classifier.masked == run.masked
    got = pd.concat(list(S.predict_batches(iter([texts]), onnx, 16)))[C.PROBABILITY]
    assert got.index.equals(texts.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.integration
def test_length_aware_inference_gives_the_same_probabilities(spark, data, run, tmp_path):
    """Rows sorted by length and cropped to a multiple of 32 ids score exactly as full rows (a
    masked, post-padded run), with an empty review and one longer than maxlen, in row order."""
    import pandas as pd

    from reviewpipe.encode import encode
    from reviewpipe.train import train

    rng = np.random.default_rng(0)
    texts = data["texts"][N_TRAIN:N_TRAIN + 300] + ["", "great " * 3000]
    texts = pd.Series([texts[i] for i in rng.permutation(len(texts))], index=rng.permutation(len(texts)) + 1000)
    widths, maxlen = _cropped_vs_full(run[0], texts)  # post-padded, masked
    assert maxlen == 120 and max(widths) == 120 and min(widths) < 120 and all(w % 32 == 0 or w == 120 for w in widths)

    # a pre-padded run is unmasked (the trainer masks post-padded shards only): its padding steps
    # change the state, so it is never cropped
    pre = small_conf(data["conf"], "encode.padding=pre", "train.epochs=1")
    encode(spark, str(data["root"] / "reviews"), str(data["root"] / "vocab"), str(tmp_path / "shards_pre"), pre)
    train(str(tmp_path / "shards_pre"), str(data["root"] / "vocab"), str(tmp_path / "runs"), pre, run_id="raw",
          verbose=0)
    raw = S.check_run(str(tmp_path / "runs" / "raw"))
    full = S.KerasPredictor(raw, 0)
    assert not full.crop
    want = pd.concat(list(S.predict_batches(iter([texts]), full, 16)))[C.PROBABILITY]
    _xla_as_keras(raw, texts, want)
    _onnx_as_keras(raw, texts, want)


@pytest.mark.integration
def test_the_engine_is_chosen_on_the_driver_and_model_onnx_made_when_missing(run, tmp_path, monkeypatch):
    import shutil

    from reviewpipe import fused, onnxmodel

    shutil.copytree(run[0], tmp_path / "run")
    r = S.check_run(str(tmp_path / "run"))
    path, mib = tmp_path / "run" / C.RUN_ONNX, 2**20
    assert S.resolve_engine(r, "auto", 3 * mib, 2, mib) == ("xla", "auto: input 1.5 MiB per core, over 1.0 MiB")
    assert S.resolve_engine(r, "auto", None, 2, mib) == ("xla", "auto: input of unknown size")
    assert S.resolve_engine(r, "keras", 10, 2, mib) == ("keras", "")
    path.unlink()
    assert S.resolve_engine(r, "auto", 2 * mib, 2, mib) == ("onnx", "auto: input 1.0 MiB per core, at most 1.0 MiB")
    digest = onnxmodel.file_sha256(tmp_path / "run" / C.RUN_MODEL)
    assert onnxmodel.made_from(path) == digest  # made from the run's model.keras
    path.write_bytes(b"not a model")  # a damaged or foreign file is made again
    assert S.resolve_engine(r, "onnx") == ("onnx", "") and onnxmodel.made_from(path) == digest
    made = path.stat().st_mtime_ns
    assert S.resolve_engine(r, "onnx") == ("onnx", "") and path.stat().st_mtime_ns == made  # up to date: kept

    path.unlink()
    monkeypatch.setattr(onnxmodel, "export", lambda *a, **k: (_ for _ in ()).throw(PermissionError("read-only")))
    assert S.resolve_engine(r, "onnx") == ("xla", f"cannot write {C.RUN_ONNX} into the run: read-only")

    monkeypatch.undo()  # export as it is, but a model the graph does not reproduce

    def refuse(model):
        raise fused.Unsupported("layer x (Conv1D)")
    monkeypatch.setattr(fused, "describe", refuse)
    assert S.resolve_engine(r, "onnx") == ("xla", "onnx does not reproduce layer x (Conv1D)")
    assert not path.exists()


ONNX_LOAD = """
import sys
import pyarrow as pa
from reviewpipe import score as S
p = S.OnnxPredictor(S.check_run(sys.argv[1]), 1)
print(len(p(p.encode(pa.array(["a fine film", "", "dull"]))[0])), p.engine,
      sorted(n for n in ("tensorflow", "keras", "jax", "torch") if n in sys.modules))
"""


@pytest.mark.integration
def test_an_onnx_scoring_worker_never_imports_tensorflow(run):
    import subprocess

    out = subprocess.run([sys.executable, "-c", ONNX_LOAD, str(run[0])], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.split("\n")[0] == "3 onnx []"
    assert f"{S.MODEL_LOADED} " in out.stderr and "engine onnx)" in out.stderr


LEAN_LOAD = """
import sys
from reviewpipe import score as S
p = S.KerasPredictor(S.check_run(sys.argv[1]), 1)
print(sorted(n for n in ("matplotlib", "sklearn") if n in sys.modules))
with S.imports_skipped(("json_nothere",)):
    try:
        import json_nothere
    except ModuleNotFoundError as e:
        print(e)
import sklearn, matplotlib  # after the load both import as usual
print(len(p(p.encode(__import__("pyarrow").array(["a fine film", ""]))[0])))
"""


@pytest.mark.integration
def test_a_scoring_worker_loads_the_model_without_keras_optional_imports(run):
    import subprocess

    got = subprocess.run([sys.executable, "-c", LEAN_LOAD, str(run[0])], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.splitlines()[-3:] == [
        "[]", "No module named 'json_nothere' (not imported while loading a scoring model)", "2"]


@pytest.mark.integration
def test_drift_figures_on_an_input_unlike_the_training_data(spark, data, run, tmp_path):
    """Reviews of unknown words, far longer than the training reviews: exact OOV rate and length
    quantiles, the training figures beside them, and the flag; the val reviews raise no flag."""
    training = json.loads((run[0] / C.RUN_METRICS).read_text())["data_profile"]
    assert training["rows"] == N_TRAIN and training["val_rows"] == 400
    lengths = [600 + 10 * i for i in range(20)]
    src = write_jsonl(tmp_path / "in" / "odd.jsonl", [{"text": " ".join(["zqxj"] * n)} for n in lengths])
    s = S.score(spark, src, str(run[0]), str(tmp_path / "out"), "2026-04-01", small_conf(data["conf"]))
    prof = s["profile"]
    assert prof["rows"] == 20 and prof["oov_rate"] == 1.0
    assert prof["length_quantiles"] == {f"p{int(q * 100)}": float(np.quantile(lengths, q)) for q in drift_q()}
    assert prof["length_histogram"][-1] == 1.0  # all past the training lengths' last decile
    assert s["training_profile"]["oov_rate"] == training["oov_rate"] < 0.2  # a 3,000-word vocabulary
    assert s["drift"]["drift"] is True and s["drift"]["psi_length"] > 1
    scored = spark.read.parquet(str(tmp_path / "out" / "run_date=2026-04-01")).toPandas()
    assert sorted(scored[C.LENGTH]) == lengths and (scored[C.OOV] == scored[C.LENGTH]).all()

    val = S.score(spark, str(data["root"] / "reviews"), str(run[0]), str(tmp_path / "out"), "2026-04-02",
                  small_conf(data["conf"]), splits=[C.VAL])
    assert val["profile"]["rows"] == 400 and val["drift"]["drift"] is False
    assert val["drift"]["psi_probability"] < 0.01  # the same model on the same val rows as the trainer


def drift_q():
    from reviewpipe.drift import QUANTILES

    return QUANTILES


@pytest.mark.integration
def test_a_date_is_scored_only_from_what_it_holds_now(spark, data, run, tmp_path):
    """An evaluation never counts as scheduled scoring; a late file makes a scored date changed,
    and it is scored again when asked."""
    incoming, scores, evals = tmp_path / "incoming", tmp_path / "scores", tmp_path / "evaluations"
    day = incoming / "date=2026-05-01"
    write_jsonl(day / "a.jsonl", [{"text": t} for t in data["texts"][:30]])
    conf = small_conf(data["conf"])
    # the evaluation of the same day writes elsewhere (make evaluate's EVAL_OUT)
    S.score(spark, str(data["root"] / "reviews"), str(run[0]), str(evals), "2026-05-01", conf, splits=[C.VAL])
    pending = S.pending_dates(str(incoming), str(scores))
    assert pending.todo == [("2026-05-01", str(day))] and pending.new == ["2026-05-01"]
    s = S.score(spark, str(day), str(run[0]), str(scores), "2026-05-01", conf)
    assert s["rows_scored"] == 30 and s["input_fingerprint"]["files"] == 1
    assert S.pending_dates(str(incoming), str(scores)) == S.Pending([], [], [])
    write_jsonl(day / "b.jsonl", [{"text": t} for t in data["texts"][30:40]])  # a late file
    late = S.pending_dates(str(incoming), str(scores))
    assert (late.todo, late.new, late.changed) == ([], [], ["2026-05-01"])
    again = S.pending_dates(str(incoming), str(scores), rescore_changed=True)
    assert again.todo == [("2026-05-01", str(day))]
    s = S.score(spark, str(day), str(run[0]), str(scores), "2026-05-01", conf)
    assert s["rows_scored"] == 40 and s["input_fingerprint"]["files"] == 2
    assert S.pending_dates(str(incoming), str(scores)).changed == []


def test_make_keeps_evaluations_apart_from_scheduled_scores():
    import subprocess

    from conftest import ROOT

    def dry(target):
        return subprocess.run(["make", "-n", target, "MODEL=artifacts/runs/x"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout

    assert "--output data/work/evaluations" in dry("evaluate") and "data/work/scores" not in dry("evaluate")
    assert "--pending --input data/incoming --output data/work/scores" in dry("score-pending")


@pytest.mark.integration
def test_predict_length_aware_is_full_width_predict_in_row_order(data, run):
    """The helper pseudo-labelling and the trainer's profile pass use: the same probabilities
    (<= 1e-6) and the rows' own order, on the real val shards of a masked, post-padded run."""
    import keras
    import pyarrow.parquet as pq

    from reviewpipe import model as M

    model = keras.models.load_model(run[0] / C.RUN_MODEL, compile=False)
    files = sorted((data["root"] / "shards" / "split=val").glob("*.parquet"))
    ids = np.concatenate([np.stack(pq.read_table(f, columns=[C.IDS]).column(C.IDS).to_numpy(zero_copy_only=False))
                          for f in files])[:, :120].astype(np.int32)
    ids = np.concatenate([ids, np.zeros((1, 120), np.int32)])  # an empty review too
    got = M.predict_length_aware(M.free_width(model), ids, 16)
    want = np.asarray(model.predict_on_batch(ids), np.float64).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    longest = int(np.count_nonzero(ids[:3], axis=1).max())
    assert len(got) == 401 and M.crop(ids[:3]).shape[1] == min(120, max(32, -(-longest // 32) * 32))
    assert M.crop(np.zeros((2, 120), np.int32)).shape == (2, 32)  # empty rows: one CROP_STEP


def test_evaluate_matches_sklearn_from_one_aggregation(spark):
    from sklearn.metrics import confusion_matrix, roc_auc_score

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 2000)
    # rounded to 3 decimals: many ties, between and within the classes
    probs = np.round(np.clip(0.3 * labels + rng.normal(0.35, 0.2, 2000), 0, 1), 3)
    probs[:5] = [0.0, 1.0, 0.5, 0.49999, 0.99999]
    pred = (probs >= 0.5).astype(int)
    df = spark.createDataFrame([(int(a), float(p), int(b)) for a, p, b in zip(labels, probs, pred)],
                               f"{C.LABEL} tinyint, {C.PROBABILITY} double, {C.PREDICTED_LABEL} tinyint")
    m = S.evaluate(df)
    assert m["rows"] == 2000
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-5)  # exact: ties on one bin count half
    assert m["confusion_matrix"]["matrix"] == confusion_matrix(labels, pred).tolist()
    assert m["accuracy"] == round(float((labels == pred).mean()), 5)
    one_class = S.evaluate(df.filter(f"{C.LABEL} = 1"))
    assert one_class["roc_auc"] is None and one_class["rows"] == int(labels.sum())
    assert S.evaluate(df.limit(0))["rows"] == 0


def test_scored_profile_is_the_numpy_profile(spark):
    from reviewpipe import drift

    rng = np.random.default_rng(3)
    lengths, oov = rng.integers(0, 900, 3000), rng.integers(0, 20, 3000)
    probs = rng.random(3000)
    training = drift.training_profile(rng.integers(5, 600, 5000), rng.integers(0, 9, 5000), rng.random(400), 0.5)
    df = spark.createDataFrame([(float(p), int(p >= 0.5), int(n), int(o)) for p, n, o in zip(probs, lengths, oov)],
                               "p double, y tinyint, n int, o int")
    got = drift.scored_profile(df, 3000, training, ("p", "y", "n", "o"))
    assert got["length_histogram"] == drift.histogram(lengths, training["length_edges"])
    assert got["probability_histogram"] == drift.histogram(probs, training["probability_edges"])
    assert got["length_quantiles"] == pytest.approx(drift.quantiles(lengths))
    assert got["oov_rate"] == round(float(oov.sum() / lengths.sum()), 6)
    assert got["share_positive"] == round(float((probs >= 0.5).mean()), 6)
    assert drift.scored_profile(df, None, training, ("p", "y", "n", "o")) == got  # counted in the same pass
    assert drift.scored_profile(df.limit(0), None, training, ("p", "y", "n", "o")) == {"rows": 0}


def test_concurrently_runs_spark_jobs_side_by_side_and_raises_the_first_error_after_all_end(spark):
    import threading
    import time

    ended, started = [], threading.Barrier(2, timeout=30)

    def job(n):
        def run():
            started.wait()  # both calls are running at once, or this times out
            got = spark.range(n).count()
            ended.append(n)
            return got
        return run

    done = S.concurrently(a=job(5), b=job(7))
    assert dict(done) == {"a": 5, "b": 7} and sorted(ended) == [5, 7]
    assert list(done.seconds) == ["a", "b"] and all(v >= 0 for v in done.seconds.values())

    def fails(msg):
        def run():
            raise ValueError(msg)
        return run

    ended.clear()
    with pytest.raises(ValueError, match="^first$"):  # in the order given, once every call has ended
        S.concurrently(x=fails("first"), y=lambda: time.sleep(0.5) or ended.append("slow"), z=fails("second"))
    assert ended == ["slow"]


def test_a_preloaded_predictor_is_built_once_and_a_failed_preload_is_retried_by_the_task():
    import threading

    calls, gate = [], threading.Event()

    def slow():
        gate.wait(5)
        calls.append(1)
        return object()

    key = ("test-preload", len(S._CACHE))
    S.preload(key, slow)
    S.preload(key, slow)  # already loading: no second thread
    gate.set()
    first = S.cached(key, slow)
    assert S.cached(key, slow) is first and len(calls) == 1

    def broken():
        raise MemoryError("no room")

    bad = ("test-preload-bad", len(S._CACHE))
    S.preload(bad, broken)
    with pytest.raises(MemoryError, match="no room"):  # the task loads again and raises it itself
        S.cached(bad, broken)
    assert S.cached(bad, lambda: "ok") == "ok"
