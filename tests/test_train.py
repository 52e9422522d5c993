"""The trainer end to end on a few hundred real reviews: artifacts, determinism, resume, serving."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import N_TRAIN, N_VAL, ROOT, SMALL, small_conf
from reviewpipe import constants as C
from reviewpipe.tokenizer import pad, texts_to_ids, tokenize

pytestmark = [pytest.mark.spark, pytest.mark.integration]

def test_training_beats_chance_and_writes_every_artifact(run, data):
    run_dir, metrics = run
    names = {p.name for p in run_dir.iterdir()}
    assert names == {C.RUN_MODEL, C.RUN_ONNX, C.RUN_SERVING, C.RUN_VOCAB, C.RUN_HISTORY, C.RUN_METRICS, C.RUN_CURVES,
                     C.RUN_VECTORS, C.RUN_METADATA, C.RUN_CONF, C.RUN_META, C.RUN_TENSORBOARD}
    assert metrics["val_accuracy"] > 0.6 and metrics["val_auc"] > 0.65  # chance is 0.5 on 400 reviews
    assert metrics["train_rows"] == N_TRAIN and metrics["val_rows"] == N_VAL and metrics["epochs"] == 3
    on_disk = json.loads((run_dir / C.RUN_METRICS).read_text())
    assert on_disk == metrics and set(on_disk) >= {"val_accuracy", "val_auc", "val_loss", "epochs", "wall_seconds",
                                                   "examples_per_second", "seconds_per_epoch", "parameters"}
    with open(run_dir / C.RUN_HISTORY, newline="") as f:
        hist = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in hist] == [0, 1, 2]
    assert set(hist[0]) == {"epoch", "accuracy", "auc", "loss", "val_accuracy", "val_auc", "val_loss"}
    meta = json.loads((run_dir / C.RUN_META).read_text())
    fp = json.loads((data["root"] / "vocab" / C.VOCAB_SPEC).read_text())["fingerprint"]
    assert meta["status"] == "complete" and meta["vocab_fingerprint"] == fp == metrics["vocab_fingerprint"]
    assert (meta["maxlen"], meta["padding"], meta["truncating"]) == (120, "post", "pre")
    assert json.loads((run_dir / C.RUN_CONF).read_text())["model"]["units"] == 16
    assert (run_dir / C.RUN_CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # projector files: row i of vectors.tsv is id i; metadata labels line up with the vocabulary
    vectors = np.loadtxt(run_dir / C.RUN_VECTORS, delimiter="\t")
    labels = (run_dir / C.RUN_METADATA).read_text(encoding="utf-8").split("\n")[:-1]
    tokens = pq.read_table(data["root"] / "vocab" / C.VOCAB_TABLE).column(C.TOKEN).to_pylist()
    assert vectors.shape == (len(tokens) + 2, 16) and len(labels) == len(tokens) + 2
    assert labels[:3] == [C.PAD_LABEL, "[UNK]", tokens[0]] and labels[-1] == tokens[-1]


def test_runs_are_reproducible_on_the_cpu(run, data):
    from reviewpipe.train import train

    metrics = train(str(data["root"] / "shards"), str(data["root"] / "vocab"), str(data["root"] / "runs"),
                    small_conf(data["conf"], "train.epochs=3"), run_id="r1-again", verbose=0)
    assert metrics["val_loss"] == run[1]["val_loss"] and metrics["val_accuracy"] == run[1]["val_accuracy"]


def test_serving_model_takes_raw_strings_with_the_same_ids(run, data):
    import keras

    from reviewpipe.serving import load_serving
    from reviewpipe.vocab import load_vocab

    run_dir, _ = run
    vocab = load_vocab(None, str(run_dir / C.RUN_VOCAB))
    texts = data["texts"][N_TRAIN:N_TRAIN + 200] + ["", "Ünïcödé 😀 <br />don't", "x " * 5000]
    serving = load_serving(run_dir / C.RUN_SERVING)
    got = serving.encode(texts).numpy()
    wi = vocab.word_index()
    want = np.array([pad(texts_to_ids(tokenize(t, vocab.tokenizer), wi, vocab.tokenizer)[0], 120, "post", "pre")
                     for t in texts], np.int32)
    np.testing.assert_array_equal(got, want)
    probs = serving.serve(texts).numpy()
    model = keras.models.load_model(run_dir / C.RUN_MODEL)
    np.testing.assert_allclose(probs, model.predict(want, verbose=0).ravel(), rtol=1e-5, atol=1e-6)
    assert probs.shape == (len(texts),) and ((probs >= 0) & (probs <= 1)).all()


def test_refusals(data, tmp_path):
    from reviewpipe.shards import ShardsError
    from reviewpipe.train import TrainError, train

    root = data["root"]
    with pytest.raises(TrainError, match="already exists; pick another --run-id or pass --resume"):
        (tmp_path / "runs" / "x").mkdir(parents=True)
        train(str(root / "shards"), str(root / "vocab"), str(tmp_path / "runs"), data["conf"], run_id="x")
    spec = json.loads((root / "vocab" / C.VOCAB_SPEC).read_text())
    manifest = json.loads((root / "shards" / C.MANIFEST).read_text())
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / C.MANIFEST).write_text(json.dumps({**manifest, "vocab_fingerprint": "0" * 64}))
    with pytest.raises(ShardsError, match=f"encoded with vocabulary 000000000000…, but the given vocabulary is "
                                          f"{spec['fingerprint'][:12]}…"):
        train(str(tmp_path / "shards"), str(root / "vocab"), str(tmp_path / "runs"), data["conf"])
    with pytest.raises(TrainError, match="no unfinished run with a checkpoint"):
        train(str(root / "shards"), str(root / "vocab"), str(tmp_path / "runs"), data["conf"], resume=True)


def test_length_step_trains_on_cropped_batches_and_is_refused_without_a_mask(data, run):
    from reviewpipe.train import TrainError, train

    root = data["root"]
    metrics = train(str(root / "shards"), str(root / "vocab"), str(root / "runs"),
                    small_conf(data["conf"], "train.epochs=3", "train.length_step=32"), run_id="r-length", verbose=0)
    assert metrics["length_step"] == 32 and run[1]["length_step"] == 0
    assert metrics["train_rows"] == N_TRAIN and metrics["epochs"] == 3 and metrics["val_rows"] == N_VAL
    assert metrics["val_accuracy"] > 0.6 and metrics["val_auc"] > 0.65  # learns as the full-width run does
    with open(root / "runs" / "r-length" / C.RUN_HISTORY, newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    with pytest.raises(TrainError, match=r"train.length_step=32 crops batches on the right, which leaves the loss "
                                         r"as it is only for a masked model over post-padded shards \(these are "
                                         r"post-padded, model.mask=off\); set train.length_step=0"):
        train(str(root / "shards"), str(root / "vocab"), str(root / "runs"),
              small_conf(data["conf"], "train.length_step=32", "model.mask=off"), run_id="r-refused")
    assert not (root / "runs" / "r-refused").exists()
    from reviewpipe.barrier import train_on_cluster

    with pytest.raises(TrainError, match=r"^train.length_step=32 and train.adversarial=at train on one machine only; "
                                         r"set train.length_step=0 and train.adversarial=off for 2 workers$"):
        train_on_cluster(None, str(root / "shards"), str(root / "vocab"), str(root / "runs"),  # before any Spark work
                         small_conf(data["conf"], "train.length_step=32", "train.adversarial=at"), 2)


def test_resume_after_sigterm_finishes_the_run(data):
    root = data["root"]
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py"), "--shards", str(root / "shards"), "--vocab",
           str(root / "vocab"), "--output", str(root / "runs"), "--run-id", "killed",
           *[a for s in SMALL + ["train.epochs=4"] for a in ("--set", s)]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = root / "runs" / "killed" / C.RUN_CHECKPOINTS / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < 4
    assert f"interrupted by SIGTERM after epoch {done}; continue with --resume --run-id killed" in err
    assert json.loads((root / "runs" / "killed" / C.RUN_META).read_text())["status"] == "running"

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(resumed after epoch {done})" in resumed.stdout
    run_dir = root / "runs" / "killed"
    with open(run_dir / C.RUN_HISTORY, newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    assert json.loads((run_dir / C.RUN_META).read_text())["status"] == "complete"
    assert json.loads((run_dir / C.RUN_METRICS).read_text())["epochs"] == 4
    assert not (run_dir / C.RUN_CHECKPOINTS).exists() and (run_dir / C.RUN_MODEL).is_file()


def test_resume_drops_history_rows_past_the_checkpoint(tmp_path):
    from reviewpipe.train import _trim_history

    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,loss\n0,0.6,0.7\n1,0.7,0.6\n2,0.8,0.5\n", encoding="utf-8")
    _trim_history(history, 2)  # killed after epoch 2's CSV row, before its checkpoint
    assert history.read_text(encoding="utf-8").splitlines() == ["epoch,accuracy,loss", "0,0.6,0.7", "1,0.7,0.6"]
    _trim_history(history, 2)
    assert len(history.read_text(encoding="utf-8").splitlines()) == 3


def test_sigterm_is_a_flag_acted_on_between_batches():
    from reviewpipe import train as T

    T._TERMINATED["flag"] = False
    T._raise_if_terminated()  # nothing pending: no-op
    T._on_sigterm(signal.SIGTERM, None)  # sets the flag, raises nothing inside the handler
    with pytest.raises(T.Interrupted):
        T._raise_if_terminated()
    T._TERMINATED["flag"] = False


def test_tensorboard_events_and_projector_config(run):
    """Per-epoch scalars for train and val, the learning rate, and a projector config that
    resolves to the run's vectors.tsv/metadata.tsv."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = run
    tb = run_dir / C.RUN_TENSORBOARD
    assert sorted(p.name for p in tb.iterdir()) == ["train", "validation"]
    steps = {}
    for side in ("train", "validation"):
        acc = EventAccumulator(str(tb / side), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            steps[f"{side}/{tag}"] = [e.step for e in acc.Tensors(tag)]
        config = (tb / side / C.PROJECTOR_CONFIG).read_text()
        assert 'tensor_path: "vectors.tsv"' in config and 'metadata_path: "metadata.tsv"' in config
        for name in (C.RUN_VECTORS, C.RUN_METADATA):  # inside the folder: the plugin refuses paths out of it
            assert (tb / side / name).read_bytes() == (run_dir / name).read_bytes()
    for tag in ("train/epoch_loss", "train/epoch_accuracy", "train/epoch_learning_rate", "validation/epoch_loss",
                "validation/epoch_accuracy", "validation/epoch_auc"):
        assert steps[tag] == [0, 1, 2], tag



def test_wide_init_nb_starts_the_bag_from_the_train_labels_and_frozen_keeps_it(data):
    import keras

    from reviewpipe import shards
    from reviewpipe.ngram import bag_features, fit_bag, fit_fold_bags
    from reviewpipe.train import init_wide, plan_run, train

    root = data["root"]
    conf = small_conf(data["conf"], "train.epochs=1", "model.wide_ngrams=2", "model.wide_hash_bits=12",
                      "model.wide_init=nb", "model.wide_nb_c=10.0", "model.wide_trainable=false",
                      "model.wide_nb_folds=2")
    metrics = train(str(root / "shards"), str(root / "vocab"), str(root / "runs"), conf, run_id="r-wide-nb", verbose=0)
    manifest = shards.load_manifest(root / "shards")

    def rows(split):
        files = shards.split_files(root / "shards", manifest, split)
        parts = [shards.read_row_group(f, g, manifest["maxlen"], crop_to=120, padding=manifest["padding"],
                                       truncating=manifest["truncating"])  # as the model reads them
                 for f, n in zip(files, shards.row_groups(files)) for g in range(n)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    (ids, labels), (val_ids, val_labels) = rows(C.TRAIN), rows(C.VAL)
    weights, bias = fit_bag(ids, labels, 2, 4096, 10.0)  # the train split's labels only, never val
    model = keras.saving.load_model(root / "runs" / "r-wide-nb" / C.RUN_MODEL)
    bag = model.get_layer("ngram_bag")
    assert not bag.trainable and (bag.orders, bag.buckets) == (2, 4096)
    np.testing.assert_array_equal(np.asarray(bag.table), weights)  # frozen through the epoch
    linear = float(((bag_features(val_ids, 2, 4096) @ weights + bias >= 0) == (val_labels >= 0.5)).mean())
    wide = metrics["wide"]
    assert (wide["source"], wide["ngrams"], wide["hash_bits"], wide["c"], wide["trainable"], wide["splits"]) == \
        ("nb", 2, 12, 10.0, False, [C.TRAIN])
    assert wide["rows"] == N_TRAIN and wide["linear_val_accuracy"] == round(linear, 5) and linear > 0.6
    assert wide["nonzero_weights"] == int(np.count_nonzero(weights))
    assert metrics["val_accuracy"] > 0.6
    # out of fold: each train row scored by the regression fitted on the other fold
    tables, biases, fold = fit_fold_bags(ids, labels, 2, 4096, 10.0, 2)
    x = bag_features(ids, 2, 4096)
    oof = np.concatenate([x[fold == k] @ tables[k] + biases[k] for k in (0, 1)])
    hit = (oof >= 0) == np.concatenate([labels[fold == k] >= 0.5 for k in (0, 1)])
    assert (wide["folds"], wide["fold_rows"]) == (2, np.bincount(fold).tolist()) and sum(wide["fold_rows"]) == N_TRAIN
    assert wide["out_of_fold_accuracy"] == round(float(hit.mean()), 5)
    assert bag.folds == 0  # the saved model holds the full table only
    # a resumed run fits the fold tables again and leaves the checkpoint's full table alone
    assert init_wide(model, plan_run(str(root / "shards"), str(root / "vocab"), conf), conf, folds_only=True) == \
        {k: wide[k] for k in ("folds", "fold_rows", "out_of_fold_accuracy")}
    assert bag.folds == 2
    np.testing.assert_array_equal(np.asarray(bag.table), weights)
