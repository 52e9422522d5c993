"""Pseudo-labels: the confidence rule, the new shards folder, and a student trained on it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import N_TRAIN, small_conf
from reviewpipe import constants as C


def test_choose_keeps_confident_rows_and_balances_the_labels():
    from reviewpipe.pseudo import choose

    probs = np.array([0.95, 0.5, 0.05, 0.99, 0.02, 0.9, 0.1, 0.92], np.float32)
    keep, labels = choose(probs, 0.9, balance=False)
    assert np.flatnonzero(keep).tolist() == [0, 2, 3, 4, 5, 6, 7]
    assert labels.tolist() == [1, 1, 0, 1, 0, 1, 0, 1]
    keep, _ = choose(probs, 0.9, balance=True)  # 4 positive, 3 negative: drop the least confident positive
    assert np.flatnonzero(keep).tolist() == [0, 2, 3, 4, 6, 7]
    keep, _ = choose(np.array([0.97, 0.96, 0.97, 0.01]), 0.9, balance=True)  # a tie: source order wins
    assert np.flatnonzero(keep).tolist() == [0, 3]
    keep, _ = choose(np.array([0.97, 0.96]), 0.9, balance=True)  # one label only: nothing to balance with
    assert not keep.any()


def test_choose_max_rows_samples_half_of_each_label():
    from reviewpipe.pseudo import choose

    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, 1000)
    full, labels = choose(probs, 0.5, balance=True)
    keep, _ = choose(probs, 0.5, balance=True, max_rows=100, seed=7)
    assert keep.sum() == 100 and labels[keep].sum() == 50
    assert not (keep & ~full).any()  # a subset of the balanced choice
    assert (keep == choose(probs, 0.5, balance=True, max_rows=100, seed=7)[0]).all()  # seeded
    assert (keep != choose(probs, 0.5, balance=True, max_rows=100, seed=8)[0]).any()
    # the sample is uniform, not the most confident rows: it reaches the unsure middle
    assert (np.abs(probs[keep] - 0.5) < 0.1).any()
    keep, _ = choose(probs, 0.9, balance=False, max_rows=50, seed=7)
    assert keep.sum() == 50 and (np.abs(probs[keep] - 0.5) >= 0.4).all()
    assert (choose(probs, 0.5, balance=True, max_rows=5000)[0] == full).all()  # fewer rows than the cap



def _read(folder, manifest, split):
    return pq.read_table([str(folder / f["path"]) for f in manifest["splits"][split]["files"]]).to_pydict()


@pytest.mark.spark
@pytest.mark.integration
def test_pseudo_labels_become_a_split_a_student_trains_on(run, data, tmp_path):
    import keras

    from reviewpipe.pseudo import PseudoLabelError, pseudo_label
    from reviewpipe.shards import crop, read_row_group
    from reviewpipe.train import TrainError, train

    run_dir, teacher = run
    root = data["root"]
    src = root / "shards"
    # the fixture has no unsup rows: label the train rows as if they had none
    conf = small_conf(data["conf"], "pseudo.split=train", "pseudo.threshold=0.8", "pseudo.balance=false",
                      "pseudo.batch_size=100")
    record = pseudo_label(str(run_dir), str(src), str(tmp_path / "pl"), conf)

    manifest = json.loads((tmp_path / "pl" / C.MANIFEST).read_text())
    source = json.loads((src / C.MANIFEST).read_text())
    assert set(manifest["splits"]) == {C.TRAIN, C.VAL, C.PSEUDO}
    assert {s: manifest["splits"][s] for s in (C.TRAIN, C.VAL)} == source["splits"]
    for f in source["splits"][C.TRAIN]["files"]:  # the source files, linked (or copied) unchanged
        assert (tmp_path / "pl" / f["path"]).read_bytes() == (src / f["path"]).read_bytes()
    assert manifest["pseudo_label"] == record and manifest["vocab_fingerprint"] == source["vocab_fingerprint"]

    # recompute the teacher's probabilities independently
    rows = _read(src, source, C.TRAIN)
    ids = np.array(rows[C.IDS], np.int32)
    cropped = crop(ids, np.array(rows[C.LENGTH]), 120, "post", "pre")
    p = keras.models.load_model(run_dir / C.RUN_MODEL).predict(cropped, verbose=0).ravel()
    sure = (p >= 0.8) | (p <= 0.2)
    got = _read(tmp_path / "pl", manifest, C.PSEUDO)
    assert got[C.REVIEW_ID] == [r for r, s in zip(rows[C.REVIEW_ID], sure) if s]  # source order
    assert got[C.LABEL] == [int(x >= 0.5) for x in p[sure]]
    assert np.array_equal(np.array(got[C.IDS]), ids[sure]) and got[C.LENGTH] == np.array(rows[C.LENGTH])[sure].tolist()
    assert record["rows_in"] == N_TRAIN and record["rows_kept"] == int(sure.sum()) == manifest["splits"][C.PSEUDO]["rows"]
    assert record["positive"] == int((p[sure] >= 0.5).sum())
    assert record["teachers"] == [{"run": str(run_dir.resolve()), "kind": "keras",
                                   "val_accuracy": teacher["val_accuracy"]}]
    assert record["ngram_share"] is None
    val = record["val_report"]
    assert val["rows"] == 400 and val["accuracy"] == pytest.approx(teacher["val_accuracy"], abs=1e-4)
    assert 0 < val["kept_fraction"] <= 1 and val["kept_accuracy"] >= val["accuracy"]

    with pytest.raises(TrainError, match=r"has no 'pseudo' rows; training needs train \+ pseudo and val shards "
                                         r"\(write them with make pseudo-label\)"):
        train(str(src), str(root / "vocab"), str(tmp_path / "runs"), small_conf(data["conf"], "train.splits=train,pseudo"))
    student = train(str(tmp_path / "pl"), str(root / "vocab"), str(tmp_path / "runs"),
                    small_conf(data["conf"], "train.splits=train,pseudo", "train.epochs=1"), run_id="s", verbose=0)
    assert student["train_rows"] == N_TRAIN + record["rows_kept"]

    # two runs on the same vocabulary: one teacher, the mean of their probabilities
    both = pseudo_label([str(run_dir), str(tmp_path / "runs" / "s")], str(src), str(tmp_path / "ens"), conf)
    p2 = (p + keras.models.load_model(tmp_path / "runs" / "s" / C.RUN_MODEL).predict(cropped, verbose=0).ravel()) / 2
    sure2 = (p2 >= 0.8) | (p2 <= 0.2)
    got2 = _read(tmp_path / "ens", json.loads((tmp_path / "ens" / C.MANIFEST).read_text()), C.PSEUDO)
    assert got2[C.LABEL] == [int(x >= 0.5) for x in p2[sure2]] and both["rows_kept"] == int(sure2.sum())
    assert [t["run"] for t in both["teachers"]] == [str(run_dir.resolve()), str((tmp_path / "runs" / "s").resolve())]

    # an n-gram teacher joins: its probabilities, looked up by review id, weigh pseudo.ngram_share
    from reviewpipe.ngram import NgramError, train_teacher

    val_rows = _read(src, source, C.VAL)
    all_ids = rows[C.REVIEW_ID] + val_rows[C.REVIEW_ID]
    q = np.random.default_rng(7).uniform(0, 1, len(all_ids)).astype(np.float32)
    ng = tmp_path / "ngram"
    ng.mkdir()
    pq.write_table(pa.table({C.REVIEW_ID: all_ids[::-1], C.PROBABILITY: q[::-1]}), ng / C.NGRAM_PREDICTIONS)
    (ng / C.NGRAM_META).write_text(json.dumps({"status": "complete", "kind": "ngram", "reviews": "r",
                                               "ngram": {"splits": ["unsup"]}, "metrics": {"val_accuracy": 0.5}}))
    p_val = keras.models.load_model(run_dir / C.RUN_MODEL).predict(
        crop(np.array(val_rows[C.IDS], np.int32), np.array(val_rows[C.LENGTH]), 120, "post", "pre"), verbose=0).ravel()
    y_val = np.array(val_rows[C.LABEL])
    for share in (0.5, 1.0):
        mixed = pseudo_label([str(run_dir), str(ng)], str(src), str(tmp_path / "mix"),
                             small_conf(data["conf"], "pseudo.split=train", "pseudo.threshold=0.8",
                                        "pseudo.balance=false", f"pseudo.ngram_share={share}"))
        pm = ((1 - share) * p.astype(np.float64) + share * q[:N_TRAIN].astype(np.float64)).astype(np.float32)
        sure_m = (pm >= 0.8) | (pm <= 0.2)
        got_m = _read(tmp_path / "mix", json.loads((tmp_path / "mix" / C.MANIFEST).read_text()), C.PSEUDO)
        assert got_m[C.REVIEW_ID] == [r for r, s in zip(rows[C.REVIEW_ID], sure_m) if s]
        assert got_m[C.LABEL] == [int(x >= 0.5) for x in pm[sure_m]]
        pv = (1 - share) * p_val.astype(np.float64) + share * q[N_TRAIN:].astype(np.float64)
        assert mixed["val_report"]["accuracy"] == round(float(((pv >= 0.5) == (y_val == 1)).mean()), 5)
        assert mixed["ngram_share"] == share
        assert [(t["kind"], t["val_accuracy"]) for t in mixed["teachers"]] == [("keras", teacher["val_accuracy"]),
                                                                                ("ngram", 0.5)]
    alone = pseudo_label(str(ng), str(src), str(tmp_path / "mix"), conf)  # share 1.0 above gave the same rows
    assert alone["rows_kept"] == mixed["rows_kept"] and alone["ngram_share"] is None
    # a real n-gram teacher predicts only the reviews it was not fitted on (here: val)
    train_teacher(str(root / "reviews"), str(tmp_path / "ngram_real"), small_conf(data["conf"], "ngram.hash_bits=16"))
    with pytest.raises(NgramError, match=r"has no prediction for 128 of 128 rows \(first: 'csv/"):
        pseudo_label([str(run_dir), str(tmp_path / "ngram_real")], str(src), str(tmp_path / "mix2"), conf)

    # soft labels: every row at threshold 0.5, with the teacher's probability as the target
    soft_conf = small_conf(data["conf"], "pseudo.split=train", "pseudo.threshold=0.5", "pseudo.balance=false",
                           "pseudo.soft=true")
    soft = pseudo_label(str(run_dir), str(src), str(tmp_path / "soft"), soft_conf)
    soft_manifest = json.loads((tmp_path / "soft" / C.MANIFEST).read_text())
    got3 = _read(tmp_path / "soft", soft_manifest, C.PSEUDO)
    assert soft["soft"] and soft["rows_kept"] == N_TRAIN and got3[C.REVIEW_ID] == rows[C.REVIEW_ID]
    np.testing.assert_allclose(got3[C.TARGET], p, atol=1e-6)
    assert got3[C.LABEL] == [int(x >= 0.5) for x in p]
    assert soft_manifest["schema"][-1] == {"name": C.TARGET, "type": "float32", "splits": [C.PSEUDO]}
    assert C.TARGET not in [c["name"] for c in manifest["schema"]]
    pseudo_file = str(tmp_path / "soft" / soft_manifest["splits"][C.PSEUDO]["files"][0]["path"])
    _, y = read_row_group(pseudo_file, 0, 160)  # the trainer reads the target where there is one ...
    np.testing.assert_allclose(y, p[:len(y)], atol=1e-6)
    _, y = read_row_group(str(src / source["splits"][C.TRAIN]["files"][0]["path"]), 0, 160)
    assert set(np.unique(y)) == {0.0, 1.0}  # ... and the 0/1 label elsewhere
    distilled = train(str(tmp_path / "soft"), str(root / "vocab"), str(tmp_path / "runs"),
                      small_conf(data["conf"], "train.splits=train,pseudo", "train.epochs=1"), run_id="d", verbose=0)
    assert distilled["train_rows"] == 2 * N_TRAIN and 0.5 < distilled["val_accuracy"] <= 1

    again = pseudo_label(str(run_dir), str(src), str(tmp_path / "pl"), conf)  # re-runnable: replaces its own output
    assert again["rows_kept"] == record["rows_kept"]
    with pytest.raises(PseudoLabelError, match="not the source shards folder"):
        pseudo_label(str(run_dir), str(src), str(src), conf)
    with pytest.raises(PseudoLabelError, match="exists and is not a pseudo-labelled shards folder"):
        pseudo_label(str(run_dir), str(src), str(root / "vocab"), conf)
    with pytest.raises(PseudoLabelError, match=r"has no 'unsup' rows to label"):
        pseudo_label(str(run_dir), str(src), str(tmp_path / "pl2"), data["conf"])
