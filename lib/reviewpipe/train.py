"""The trainer: encoded shards (streamed) -> a model run folder.

:func:`train` reads top to bottom in phases: :func:`plan_run` (checks, no TensorFlow),
:func:`start_hardware`, :func:`make_data`, :func:`make_model`, :func:`fit`, :func:`export_run`.

Run folder ``RUNS_DIR/<run_id>/`` (DESIGN: model run)::

    model.keras          the best epoch's Keras model (restored by early stopping)
    serving/             SavedModel taking raw strings: ``serve`` -> probability, ``encode`` -> ids
    vocab/               a copy of the vocabulary artifact the run was trained with
    history.csv          one row per epoch (Keras CSVLogger)
    metrics.json         validation accuracy/AUC/loss, epochs, wall time, throughput, hardware
    curves.png           training vs validation accuracy and loss
    vectors.tsv, metadata.tsv   the embedding matrix in TensorBoard projector form (row i = id i)
    tensorboard/         TensorBoard events (train/, validation/: per-epoch scalars, the learning
                         rate) and projector_config.pbtxt pointing at vectors.tsv/metadata.tsv
    conf.json            the full resolved conf
    run.json             run id, status, vocabulary fingerprint, shards, sequence settings
    checkpoints/         while running: the last epoch (model + optimizer) and early-stopping state

A run killed mid-way (SIGTERM, SIGKILL, a crash) keeps ``checkpoints/`` from its last finished
epoch; ``--resume`` continues from there and finishes the folder.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from reviewpipe import constants as C
from reviewpipe import shards
from reviewpipe.cli import JobError
from reviewpipe.config import PipelineConf
from reviewpipe.vocab import Vocabulary, load_vocab

log = logging.getLogger(__name__)

RUNNING, COMPLETE = "running", "complete"


class TrainError(JobError):
    """Training cannot start or continue; the message says why."""


class Interrupted(Exception):
    """SIGTERM arrived: stop, keeping the last finished epoch's checkpoint."""


# ---------------------------------------------------------------------------------------
# hardware

@dataclass
class Hardware:
    strategy: object
    strategy_name: str
    device: str
    gpus: int
    precision: str
    worker_index: int = 0
    num_workers: int = 1


def detect_hardware(precision: str = "auto") -> Hardware:
    """One GPU: mixed precision; several: MirroredStrategy; TF_CONFIG: multi-worker; else the CPU."""
    import tensorflow as tf
    import keras

    gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        tf.config.experimental.set_memory_growth(g, True)
    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task = tf_config.get("task", {})
        workers = len(tf_config.get("cluster", {}).get("worker", [])) or 1
        name, index = "MultiWorkerMirroredStrategy", int(task.get("index", 0))
    elif len(gpus) > 1:
        strategy, name, index, workers = tf.distribute.MirroredStrategy(), "MirroredStrategy", 0, 1
    else:
        strategy, name, index, workers = tf.distribute.get_strategy(), "default (one device)", 0, 1
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"{len(gpus)} GPU ({details.get('device_name', 'GPU')})"
    else:
        device = f"CPU ({os.cpu_count()} cores)"
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    keras.mixed_precision.set_global_policy(precision)
    return Hardware(strategy, name, device, len(gpus), precision, index, workers)


# ---------------------------------------------------------------------------------------
# run folder

def new_run_id(conf: PipelineConf) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    bi = "bi" if conf.model.bidirectional else ""
    return f"{stamp}-{conf.model.preset}-{bi}{conf.model.cell}"


def latest_unfinished(runs_dir: Path) -> Path | None:
    found = []
    for run in runs_dir.glob("*/run.json"):
        meta = json.loads(run.read_text(encoding="utf-8"))
        if meta.get("status") != COMPLETE and (run.parent / C.RUN_CHECKPOINTS / "state.json").is_file():
            found.append(run.parent)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def latest_complete(runs_dir: str | Path) -> Path | None:
    """The complete run that finished last (run.json ``finished``), or None."""
    done = []
    for meta_path in Path(runs_dir).glob(f"*/{C.RUN_META}"):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("status") == COMPLETE:
            done.append((meta.get("finished", ""), meta_path.parent))
    return max(done)[1] if done else None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# callbacks

def _make_checkpointer(ckpt: Path, patience: int, state: dict):
    import keras

    class Checkpointer(keras.callbacks.Callback):
        """Each epoch: save the model + optimizer (atomically), the best weights and the
        early-stopping state, so ``--resume`` continues exactly where the run stopped."""

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()
            self._steps_t0 = self._steps_t1 = None

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:  # the training steps' time, without the first (it traces) or val
                self._steps_t0 = time.perf_counter()

        # SIGTERM only sets a flag (a signal handler that raises can land inside TF's own
        # Python code and come out as an unrelated error); it is acted on here, between batches.
        def on_train_batch_end(self, batch, logs=None):
            self._steps_t1, self._steps = time.perf_counter(), batch
            _raise_if_terminated()

        def on_test_batch_end(self, batch, logs=None):
            _raise_if_terminated()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            state["epoch_seconds"].append(round(time.perf_counter() - self._t0, 3))
            if self._steps_t0 is not None:  # batches 1 .. self._steps
                state.setdefault("step_seconds", []).append(
                    round((self._steps_t1 - self._steps_t0) / self._steps, 5))
            val_loss = float(logs.get("val_loss", math.inf))
            if val_loss < state["best_val_loss"]:
                state.update(best_val_loss=val_loss, best_epoch=epoch + 1, wait=0)
                self.model.save_weights(ckpt / "best.weights.h5")
            else:
                state["wait"] += 1
            state["epochs_done"] = epoch + 1
            tmp = ckpt / "last.tmp.keras"  # the checkpoint and its state are written as a pair
            self.model.save(tmp)
            os.replace(tmp, ckpt / "last.keras")
            _write_json(ckpt / "state.json", state)
            _raise_if_terminated()
            if patience and state["wait"] >= patience:
                log.info("early stopping: val_loss has not improved for %d epochs (best %.4f at epoch %d)",
                         state["wait"], state["best_val_loss"], state["best_epoch"])
                self.model.stop_training = True

    return Checkpointer()


_TERMINATED = {"flag": False}


def _on_sigterm(signum, frame):
    """First SIGTERM: finish the current batch (or checkpoint) and stop cleanly. A second
    one while still running kills the process with the default action."""
    if _TERMINATED["flag"]:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    _TERMINATED["flag"] = True


def _raise_if_terminated() -> None:
    if _TERMINATED["flag"]:
        raise Interrupted()


def _trim_history(path: Path, epochs_done: int) -> None:
    """Drop history rows of epochs after the checkpoint (a kill between the CSV row and the
    checkpoint), so a resumed run's history has each epoch once."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < epochs_done]
    if len(keep) != len(rows):
        log.warning("--resume: dropping %d history row(s) past the checkpoint (epoch %d)",
                    len(rows) - len(keep), epochs_done)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, path)


def _run_folder(runs: Path, run_id: str | None, resume: bool, fingerprint: str,
                conf: PipelineConf) -> tuple[str, Path]:
    """(run id, folder) of a new run, or of the run ``--resume`` continues (checked)."""
    if resume and not run_id:
        found = latest_unfinished(runs)
        if found is None:
            raise TrainError(f"--resume: no unfinished run with a checkpoint in {runs}")
        run_id = found.name
    run_id = run_id or new_run_id(conf)
    run_dir = runs / run_id
    if not resume:
        if run_dir.exists():
            raise TrainError(f"run folder {run_dir} already exists; pick another --run-id or pass --resume")
        return run_id, run_dir
    meta_path = run_dir / C.RUN_META
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    if meta.get("status") == COMPLETE:
        raise TrainError(f"run {run_dir} is already complete; nothing to resume")
    if not (run_dir / C.RUN_CHECKPOINTS / "state.json").is_file():
        raise TrainError(f"--resume: {run_dir} has no checkpoint (it stopped before its first epoch "
                         f"ended); start a new run")
    if meta.get("vocab_fingerprint") != fingerprint:
        raise TrainError(f"--resume: {run_dir} was trained with vocabulary "
                         f"{str(meta.get('vocab_fingerprint'))[:12]}…, not {fingerprint[:12]}…")
    if json.loads((run_dir / C.RUN_CONF).read_text(encoding="utf-8")) != conf.to_dict():
        log.warning("--resume: the conf differs from the run's conf.json; continuing with the run's "
                    "model (the checkpoint) and the new training settings")
    return run_id, run_dir


# ---------------------------------------------------------------------------------------
# the job, in phases: plan -> data -> model -> fit -> export

@dataclass
class RunPlan:
    """What the run trains on, checked before TensorFlow starts."""

    shards_dir: str
    vocab_dir: str
    vocab: Vocabulary
    manifest: dict
    maxlen: int
    src_len: int
    padding: str
    truncating: str
    pretrained: np.ndarray | None = None  # the embedding's initial matrix, if any
    w2v_spec: dict | None = None
    encoder: dict | None = None  # a language model's embedding + first recurrent layer
    lm_spec: dict | None = None


@dataclass
class RunData:
    train_ds: object
    val_ds: object
    steps: int
    explicit_steps: bool  # steps_per_epoch given to fit (repeating dataset)
    global_batch: int
    n_train: int
    n_val: int
    rows: dict
    files: list  # the train files this worker reads (all of them on one machine)


def plan_run(shards_dir: str, vocab_dir: str, conf: PipelineConf) -> RunPlan:
    """Check the shards against the vocabulary and the settings; load any pretrained init."""
    tc, mc = conf.train, conf.model
    vocab = load_vocab(None, vocab_dir)
    manifest = shards.load_manifest(shards_dir)
    shards.check_fingerprint(manifest, vocab.fingerprint, shards_dir)
    for split in (*tc.splits, C.VAL):
        if not shards.split_rows(manifest, split):
            hint = ("write them with make pseudo-label" if split == C.PSEUDO else
                    "ingest carves val from train with ingest.val_fraction > 0")
            raise TrainError(f"{shards_dir} has no {split!r} rows; training needs {' + '.join(tc.splits)} "
                             f"and val shards ({hint})")
    if tc.adversarial in ("vat", "at+vat") and not shards.split_rows(manifest, tc.vat_split):
        raise TrainError(f"train.adversarial={tc.adversarial} reads train.vat_split={tc.vat_split!r} rows, and "
                         f"{shards_dir} has none (make prepare writes the unsup reviews of aclImdb)")
    src_len = int(manifest["maxlen"])
    if tc.length_step and (manifest["padding"] != "post" or mc.mask == "off"):
        raise TrainError(f"train.length_step={tc.length_step} crops batches on the right, which leaves the loss as "
                         f"it is only for a masked model over post-padded shards (these are "
                         f"{manifest['padding']}-padded, model.mask={mc.mask}); set train.length_step=0")
    if tc.maxlen > src_len:
        raise TrainError(f"train.maxlen {tc.maxlen} is longer than the shards' maxlen {src_len}; re-encode "
                         f"with --set encode.maxlen={tc.maxlen}")
    plan = RunPlan(shards_dir, vocab_dir, vocab, manifest, tc.maxlen or src_len, src_len,
                   manifest["padding"], manifest["truncating"])
    if mc.encoder_init != "random":
        from reviewpipe.lm import load_encoder

        plan.encoder, plan.lm_spec = load_encoder(mc.encoder_init, vocab, mc.cell, mc.units)  # refuses a mismatch
        plan.pretrained = plan.encoder["embedding"]
        if mc.embedding_init != "random":
            log.info("model.encoder_init: the embedding comes from %s (which started from %s); "
                     "model.embedding_init %s is not loaded", mc.encoder_init, plan.lm_spec.get("embedding_init"),
                     mc.embedding_init)
    elif mc.embedding_init != "random":
        from reviewpipe.word2vec import load_pretrained

        plan.pretrained, plan.w2v_spec = load_pretrained(mc.embedding_init, vocab)  # refuses another vocabulary
    return plan


def start_hardware(tc) -> Hardware:
    """Pick the strategy and precision, seed everything, and make CPU runs deterministic."""
    import keras
    import tensorflow as tf

    hw = detect_hardware(tc.precision)
    keras.utils.set_random_seed(tc.seed)
    if tc.deterministic and not hw.gpus:
        tf.config.experimental.enable_op_determinism()
    return hw


def make_data(plan: RunPlan, tc, hw: Hardware) -> RunData:
    """Streaming train (each worker its own files) and val datasets, with their sizes."""
    import tensorflow as tf

    shards_dir, manifest, fp = plan.shards_dir, plan.manifest, plan.vocab.fingerprint
    rows = {s: shards.split_rows(manifest, s) for s in manifest["splits"]}
    train_files = shards.files_of(shards_dir, manifest, tc.splits)
    n_train = shards.labelled_rows(train_files)
    n_val = shards.labelled_rows(shards.split_files(shards_dir, manifest, C.VAL))
    global_batch = tc.batch_size * hw.strategy.num_replicas_in_sync
    worker_batch = global_batch // hw.num_workers  # each worker batches its own files
    steps = tc.steps_per_epoch or math.ceil(n_train / global_batch)
    # Several workers hold different row counts: repeat and count steps so none runs dry first.
    explicit_steps = bool(tc.steps_per_epoch) or hw.num_workers > 1
    if tc.length_step and hw.num_workers > 1:
        # Each worker would trace its own widths; the collective ops must match step for step.
        raise TrainError(f"train.length_step={tc.length_step} runs on one machine; set train.length_step=0 for "
                         f"{hw.num_workers} workers")
    train_ds = shards.make_dataset(shards_dir, list(tc.splits), batch_size=worker_batch, vocab_fingerprint=fp,
                                   shuffle=True, seed=tc.seed, shuffle_buffer=tc.shuffle_buffer, maxlen=plan.maxlen,
                                   repeat=explicit_steps, num_workers=hw.num_workers, worker_index=hw.worker_index,
                                   length_step=tc.length_step)
    if not explicit_steps:
        train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(steps))
    val_batch = max(global_batch, 256)
    val_ds = shards.make_dataset(shards_dir, C.VAL, batch_size=val_batch, shuffle=False, vocab_fingerprint=fp,
                                 maxlen=plan.maxlen, length_step=tc.length_step)
    val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n_val / val_batch)))
    if hw.num_workers > 1:
        # Each worker already reads its own train files, and evaluates the whole val split:
        # every worker then gets the same val_loss (early stopping stays in step) and none
        # runs out of val batches while another waits for it in an all-reduce.
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        train_ds, val_ds = train_ds.with_options(opts), val_ds.with_options(opts)
    share = shards.worker_share(train_files, hw.num_workers, hw.worker_index)
    return RunData(train_ds, val_ds, steps, explicit_steps, global_batch, n_train, n_val, rows, share)


def make_model(plan: RunPlan, conf: PipelineConf, hw: Hardware, data: RunData, ckpt: Path, resume: bool):
    """(model, layer plan, early-stopping state, cuDNN line): built and initialised, or the checkpoint."""
    import keras

    from reviewpipe import model as M

    mc = conf.model
    layers = M.plan(mc, plan.vocab.size, None if conf.train.length_step else plan.maxlen, plan.padding,
                    plan.pretrained.shape[1] if plan.pretrained is not None else 0)
    state = {"epochs_done": 0, "best_val_loss": math.inf, "best_epoch": 0, "wait": 0, "epoch_seconds": []}
    with hw.strategy.scope():
        if resume:
            model = keras.models.load_model(ckpt / "last.keras")
            state.update(json.loads((ckpt / "state.json").read_text(encoding="utf-8")))
        else:
            model = M.build_model(mc, layers)
            if plan.pretrained is not None:
                model.get_layer("embedding").set_weights([plan.pretrained])
            if plan.encoder is not None:
                from reviewpipe.lm import rnn_weights

                M.first_recurrent_layer(model).set_weights(rnn_weights(plan.encoder))
            if mc.wide_init == "nb":  # kept in the state, so a resumed run still reports it
                state["wide_init"] = init_wide(model, plan, conf)
            M.compile_model(model, conf.train, data.steps)
        if resume and mc.wide_nb_folds:  # not in the checkpoint: fitted again, the same on every run
            init_wide(model, plan, conf, folds_only=True)
        if hw.num_workers > 1:
            from reviewpipe.distributed import fit_keras_to_multi_worker

            fit_keras_to_multi_worker(model, hw.strategy, plan.maxlen)
    tc = conf.train
    if tc.adversarial != "off":
        attach_adversarial(model, plan, conf, hw, layers)
    blockers = {layer.name: M.cudnn_blockers(layer) for layer in M.recurrent_layers(model)}
    cudnn = "possible" if not any(blockers.values()) else f"NOT possible: {blockers}"
    return model, layers, state, cudnn


def init_wide(model, plan: RunPlan, conf: PipelineConf, folds_only: bool = False) -> dict:
    """model.wide_init=nb: the n-gram bag's weights and the output bias from an NB-weighted
    logistic regression on the labels of model.wide_nb_splits (never val), over the ids as the
    model reads them; returns what metrics.json records of it.

    With model.wide_nb_folds, the bag also gets the training-only fold tables
    (:func:`reviewpipe.ngram.fit_fold_bags`); ``folds_only`` fits those alone (a resumed run,
    whose full table is in its checkpoint).  The output bias stays the full fit's."""
    from reviewpipe.ngram import bag_features, fit_bag, fit_fold_bags

    mc, t0 = conf.model, time.perf_counter()
    bag = model.get_layer("ngram_bag")

    def rows(split):
        files = shards.split_files(plan.shards_dir, plan.manifest, split)
        parts = [shards.read_row_group(f, g, plan.src_len, crop_to=plan.maxlen, padding=plan.padding,
                                       truncating=plan.truncating)
                 for f, n in zip(files, shards.row_groups(files)) for g in range(n)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])) if parts else \
            (np.zeros((0, plan.maxlen), np.int32), np.zeros(0, np.float32))

    fitted = [rows(split) for split in mc.wide_nb_splits]
    ids, labels = np.concatenate([f[0] for f in fitted]), np.concatenate([f[1] for f in fitted])
    folds = {}
    if mc.wide_nb_folds:
        tables, biases, fold = fit_fold_bags(ids, labels, bag.orders, bag.buckets, mc.wide_nb_c, mc.wide_nb_folds)
        bag.set_fold_tables(tables)
        x = bag_features(ids, bag.orders, bag.buckets)
        oof = np.zeros(len(ids))
        for k in range(mc.wide_nb_folds):
            oof[fold == k] = x[fold == k] @ tables[k] + biases[k]
        folds = {"folds": mc.wide_nb_folds, "fold_rows": np.bincount(fold, minlength=mc.wide_nb_folds).tolist(),
                 "out_of_fold_accuracy": round(float(((oof >= 0) == (labels >= 0.5)).mean()), 5)}
        log.info("model.wide_nb_folds=%d: fold tables fitted in %.1f s; out of fold, the linear part scores %.4f "
                 "of the rows it was fitted on", mc.wide_nb_folds, time.perf_counter() - t0,
                 folds["out_of_fold_accuracy"])
        if folds_only:
            return folds
    weights, bias = fit_bag(ids, labels, bag.orders, bag.buckets, mc.wide_nb_c)
    bag.set_weights([weights])
    deep = model.get_layer("deep_logit")
    kernel, _ = deep.get_weights()
    deep.set_weights([kernel, np.full((1,), bias, np.float32)])
    val_ids, val_labels = rows(C.VAL)
    logit = bag_features(val_ids, bag.orders, bag.buckets) @ weights + bias
    out = {"source": "nb", "splits": list(mc.wide_nb_splits), "rows": int(len(ids)), "c": mc.wide_nb_c,
           "trainable": mc.wide_trainable, "nonzero_weights": int(np.count_nonzero(weights)),
           "linear_val_accuracy": round(float(((logit >= 0) == (val_labels >= 0.5)).mean()), 5),
           **folds, "seconds": round(time.perf_counter() - t0, 1)}
    log.info("model.wide_init=nb: fitted on %d %s rows in %.1f s; the linear part alone: val accuracy %.4f",
             out["rows"], "+".join(mc.wide_nb_splits), out["seconds"], out["linear_val_accuracy"])
    return out


def attach_adversarial(model, plan: RunPlan, conf: PipelineConf, hw: Hardware, layers) -> None:
    """train.adversarial: the classifier's train step gets the perturbed-embedding terms."""
    from reviewpipe import adversarial as A
    from reviewpipe import model as M

    tc = conf.train
    if hw.strategy.num_replicas_in_sync > 1 or hw.num_workers > 1:
        raise TrainError(f"train.adversarial={tc.adversarial} runs on one device only (got "
                         f"{hw.strategy.num_replicas_in_sync} replicas, {hw.num_workers} workers)")
    adv = A.Adversarial(tc.adversarial, tc.adversarial_epsilon)
    unlabelled = None
    if adv.vat:
        unlabelled = shards.make_dataset(plan.shards_dir, tc.vat_split, batch_size=tc.batch_size,
                                         vocab_fingerprint=plan.vocab.fingerprint, shuffle=True, seed=tc.seed + 1,
                                         shuffle_buffer=tc.shuffle_buffer, labelled=False, maxlen=plan.maxlen,
                                         repeat=True, length_step=tc.length_step)
    A.attach(model, M.embedded_head(model, conf.model, layers), adv, unlabelled)


def start_screen(run_dir: Path, resume: bool, state: dict, hw: Hardware, cudnn: str, layers, plan: RunPlan,
                 data: RunData, conf: PipelineConf, model) -> str:
    """The lines printed before the first epoch: where, on what, how much, and how long."""
    tc, mc = conf.train, conf.model
    return "\n".join([
        f"run        {run_dir}{'  (resumed after epoch %d)' % state['epochs_done'] if resume else ''}",
        f"device     {hw.device}; strategy {hw.strategy_name} ({hw.strategy.num_replicas_in_sync} replica(s)); "
        f"precision {hw.precision}",
        f"cuDNN      {cudnn}{' (used when a GPU runs the layer)' if not hw.gpus else ''}; {layers.cudnn_reason}",
        f"data       rows {data.rows}; training on {data.n_train} {'+'.join(tc.splits)} / {data.n_val} val; "
        f"maxlen {plan.maxlen} (shards {plan.src_len}, {plan.padding}-padded, {plan.truncating}-truncated)",
        f"schedule   {data.steps} steps/epoch x {tc.epochs} epochs, batch {data.global_batch}"
        f"{f' of rows of similar length cropped to a multiple of {tc.length_step} ids' if tc.length_step else ''}, "
        f"{tc.optimizer} "
        f"lr {tc.learning_rate}{' cosine decay' if tc.lr_schedule == 'cosine' else ''}, early stopping patience "
        f"{tc.early_stopping_patience or 'off'}",
        *([f"cluster    worker {hw.worker_index} of {hw.num_workers}{' (the chief: writes the run folder)' if not hw.worker_index else ''}; "
           f"global batch {data.global_batch} = {tc.batch_size} per replica x {hw.strategy.num_replicas_in_sync} "
           f"replicas; this worker reads {len(data.files)} train files; lr {tc.learning_rate} (not scaled "
           f"by the workers)"] if hw.num_workers > 1 else []),
        f"model      {model.name}: {model.count_params():,} parameters; embedding {layers.vocab_rows} x "
        f"{layers.embedding_dim}; {mc.layers} x {'bi' if mc.bidirectional else ''}{mc.cell.upper()}({mc.units}) "
        f"-> {mc.pooling} pooling",
        *([f"objective  binary cross-entropy + {' + '.join(_TERMS[t] for t in tc.adversarial.split('+'))}, "
           f"epsilon {tc.adversarial_epsilon} of each row's embedded norm"
           + (f"; VAT rows from {tc.vat_split}" if "vat" in tc.adversarial else "")
           + " (the logged loss is the sum; val_loss is the plain loss)"] if tc.adversarial != "off" else []),
    ])


_TERMS = {"at": "adversarial loss", "vat": "virtual adversarial KL"}


def fit(model, data: RunData, tc, run_dir: Path, state: dict, resume: bool, run_id: str,
        verbose: int | None) -> float:
    """Run the epochs left (checkpointing each, TensorBoard events, SIGTERM-safe); the seconds spent."""
    import keras

    ckpt = run_dir / C.RUN_CHECKPOINTS
    if resume:
        _trim_history(run_dir / C.RUN_HISTORY, state["epochs_done"])
    callbacks = [keras.callbacks.CSVLogger(str(run_dir / C.RUN_HISTORY), append=resume),
                 keras.callbacks.TensorBoard(str(run_dir / C.RUN_TENSORBOARD), write_graph=False,
                                             update_freq="epoch", profile_batch=0),
                 _make_checkpointer(ckpt, tc.early_stopping_patience, state)]
    _TERMINATED["flag"] = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t_fit = time.perf_counter()
    try:
        if state["epochs_done"] < tc.epochs and not (
                tc.early_stopping_patience and state["wait"] >= tc.early_stopping_patience):
            model.fit(data.train_ds, validation_data=data.val_ds, epochs=tc.epochs, initial_epoch=state["epochs_done"],
                      steps_per_epoch=data.steps if data.explicit_steps else None, callbacks=callbacks,
                      verbose=verbose, shuffle=False)
        _raise_if_terminated()  # arrived after the last batch callback
    except Interrupted:
        raise TrainError(f"interrupted by SIGTERM after epoch {state['epochs_done']}; continue with --resume "
                         f"--run-id {run_id}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return time.perf_counter() - t_fit


def export_onnx(model, run_dir: Path) -> None:
    """``model.onnx`` beside ``model.keras``, for the scoring workers (score.engine=onnx); a
    model the graph does not reproduce gets none, and scoring keeps TensorFlow for it."""
    from reviewpipe import fused, onnxmodel

    try:
        onnxmodel.export(model, run_dir / C.RUN_ONNX, source=onnxmodel.file_sha256(run_dir / C.RUN_MODEL))
    except fused.Unsupported as e:
        log.info("no %s: %s (scoring keeps TensorFlow)", C.RUN_ONNX, e)


def export_run(model, plan: RunPlan, data: RunData, conf: PipelineConf, hw: Hardware, run_dir: Path,
               state: dict, cudnn: str, fit_seconds: float) -> dict:
    """The best epoch's model, the serving model, curves, projector files and metrics.json."""
    from reviewpipe.embeddings import export_projector, intrinsic_report, write_projector_config
    from reviewpipe.plots import plot_curves, read_history
    from reviewpipe.serving import export_serving

    tc, mc, vocab = conf.train, conf.model, plan.vocab
    if state["best_epoch"]:
        model.load_weights(run_dir / C.RUN_CHECKPOINTS / "best.weights.h5")
    results = model.evaluate(data.val_ds, verbose=0, return_dict=True)
    model.save(run_dir / C.RUN_MODEL)
    export_onnx(model, run_dir)
    export_serving(model, vocab.tokens, vocab.tokenizer, plan.maxlen, plan.padding, plan.truncating,
                   run_dir / C.RUN_SERVING)
    history = read_history(run_dir / C.RUN_HISTORY)
    plot_curves(history, run_dir / C.RUN_CURVES, f"{'Bi' if mc.bidirectional else ''}{mc.cell.upper()}")
    trained = model.get_layer("embedding").get_weights()[0]
    if tc.embeddings_export:
        export_projector(trained, vocab, run_dir)
        write_projector_config(run_dir, run_dir / C.RUN_TENSORBOARD)

    secs = state["epoch_seconds"]
    epoch_s = float(np.mean(secs)) if secs else 0.0
    metrics = {
        "run_id": run_dir.name,
        "val_accuracy": round(float(results["accuracy"]), 5),
        "val_auc": round(float(results["auc"]), 5),
        "val_loss": round(float(results["loss"]), 5),
        "best_epoch": state["best_epoch"],
        "epochs": state["epochs_done"],
        "train_rows": data.n_train, "val_rows": data.n_val,
        "parameters": int(model.count_params()),
        "seconds_per_epoch": round(epoch_s, 2),
        "examples_per_second": round(min(data.n_train, data.steps * data.global_batch) / epoch_s, 1) if epoch_s else None,
        "fit_seconds_this_process": round(fit_seconds, 2),
        "wall_seconds": round(sum(secs), 2),
        # the last epoch's training steps (from its second to its last), without val
        "step_seconds": state.get("step_seconds", [None])[-1],
        "train_examples_per_second": (round(data.global_batch / state["step_seconds"][-1], 1)
                                      if state.get("step_seconds") else None),
        "device": hw.device, "strategy": hw.strategy_name, "precision": hw.precision, "cudnn": cudnn,
        "workers": hw.num_workers, "replicas": hw.strategy.num_replicas_in_sync, "global_batch": data.global_batch,
        "vocab_fingerprint": vocab.fingerprint, "preset": mc.preset, "cell": mc.cell,
        "bidirectional": mc.bidirectional, "maxlen": plan.maxlen, "length_step": tc.length_step,
        "adversarial": ({"mode": tc.adversarial, "epsilon": tc.adversarial_epsilon,
                         **({"vat_split": tc.vat_split} if "vat" in tc.adversarial else {})}
                        if tc.adversarial != "off" else None),
    }
    if plan.w2v_spec is not None:
        metrics["embedding_init"] = {"source": mc.embedding_init, "trainable": mc.embedding_trainable,
                                     "coverage": plan.w2v_spec.get("coverage"), "dim": plan.w2v_spec.get("dim")}
    if plan.lm_spec is not None:
        metrics["encoder_init"] = {"source": mc.encoder_init, "lm_epochs": plan.lm_spec.get("epochs"),
                                   "lm_val_perplexity": plan.lm_spec.get("val_perplexity"),
                                   "lm_embedding_init": plan.lm_spec.get("embedding_init")}
    if mc.wide_ngrams:
        metrics["wide"] = {"ngrams": mc.wide_ngrams, "hash_bits": mc.wide_hash_bits,
                           **state.get("wide_init", {"source": mc.wide_init, "trainable": mc.wide_trainable})}
    metrics["data_profile"] = data_profile(plan, tc, run_dir / C.RUN_MODEL, data.val_ds, conf.score.threshold)
    if tc.word_pairs:
        metrics["intrinsic"] = intrinsic_report(tc.word_pairs, vocab, trained, plan.pretrained, tc.seed,
                                                "language_model" if plan.lm_spec is not None else "word2vec")
    _write_json(run_dir / C.RUN_METRICS, metrics)
    return metrics


def data_profile(plan: RunPlan, tc, model_path: Path, val_ds, threshold: float) -> dict:
    """What the model learnt from, for the scoring job's drift figures (reviewpipe.drift): the
    training rows' lengths and OOV counts (from the shards' columns) and the saved model's
    probabilities on val."""
    import keras
    import pyarrow.parquet as pq

    from reviewpipe import drift

    parts = [pq.read_table(f, columns=[C.LENGTH, C.OOV]) for f in shards.files_of(plan.shards_dir, plan.manifest,
                                                                                tc.splits)]
    lengths = np.concatenate([t.column(C.LENGTH).to_numpy() for t in parts])
    oov = np.concatenate([t.column(C.OOV).to_numpy() for t in parts])
    from reviewpipe import model as M

    model = keras.models.load_model(model_path, compile=False)  # a plain copy, outside any strategy
    masked = json.loads((model_path.parent / C.RUN_META).read_text(encoding="utf-8")).get("masked")
    if plan.padding == "post" and masked:
        free = M.free_width(model)  # length-aware: batches sorted and cropped, the same probabilities
        probs = np.concatenate([M.predict_length_aware(free, np.asarray(x), 256) for x, _ in val_ds] or [np.zeros(0)])
    else:
        probs = np.concatenate([np.asarray(model.predict_on_batch(x)).reshape(-1) for x, _ in val_ds]
                               or [np.zeros(0)])
    return drift.training_profile(lengths, oov, probs, threshold)


def train(shards_dir: str, vocab_dir: str, runs_dir: str, conf: PipelineConf, *, run_id: str | None = None,
          resume: bool = False, verbose: int | None = None, mirror: str | None = None) -> dict:
    """Train one model into ``runs_dir/<run_id>`` and return its metrics.

    ``mirror`` is for the non-chief workers of a multi-worker run (reviewpipe.barrier): they
    run every step the chief runs (saving takes part in the collectives) but write into
    ``mirror/<run_id>``, a folder nobody reads; resuming, they start from a copy of the
    chief's run folder.
    """
    t_start = time.perf_counter()
    plan = plan_run(shards_dir, vocab_dir, conf)
    if mirror is None:
        run_id, run_dir = _run_folder(Path(runs_dir), run_id, resume, plan.vocab.fingerprint, conf)
    else:
        if not run_id:
            raise TrainError("a mirroring worker needs the chief's run id")
        run_dir = Path(mirror) / run_id
        if resume:
            shutil.copytree(Path(runs_dir) / run_id, run_dir)
    ckpt = run_dir / C.RUN_CHECKPOINTS

    hw = start_hardware(conf.train)
    data = make_data(plan, conf.train, hw)
    model, layers, state, cudnn = make_model(plan, conf, hw, data, ckpt, resume)

    if not resume:
        run_dir.mkdir(parents=True)
        ckpt.mkdir()
        shutil.copytree(vocab_dir, run_dir / C.RUN_VOCAB)
        _write_json(run_dir / C.RUN_CONF, conf.to_dict())
    meta = {"run_id": run_id, "status": RUNNING, "vocab_fingerprint": plan.vocab.fingerprint,
            "shards": str(Path(shards_dir).resolve()), "vocab": str(Path(vocab_dir).resolve()),
            "maxlen": plan.maxlen, "padding": plan.padding, "truncating": plan.truncating, "masked": layers.masked,
            "tokenizer": plan.vocab.tokenizer.to_dict(), "vocab_size": plan.vocab.size, "workers": hw.num_workers,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_json(run_dir / C.RUN_META, meta)
    print(start_screen(run_dir, resume, state, hw, cudnn, layers, plan, data, conf, model), flush=True)

    fit_seconds = fit(model, data, conf.train, run_dir, state, resume, run_id, verbose)
    if conf.model.wide_nb_folds:
        model.get_layer("ngram_bag").set_fold_tables(None)  # training only: the exports serve the full table
    metrics = export_run(model, plan, data, conf, hw, run_dir, state, cudnn, fit_seconds)
    shutil.rmtree(ckpt)
    _write_json(run_dir / C.RUN_META, {**meta, "status": COMPLETE,
                                        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    print(f"done       val_accuracy {metrics['val_accuracy']:.4f}  val_auc {metrics['val_auc']:.4f}  "
          f"val_loss {metrics['val_loss']:.4f}  best epoch {state['best_epoch']}/{state['epochs_done']}  "
          f"{metrics['seconds_per_epoch']:.1f} s/epoch  {metrics['examples_per_second']} examples/s  "
          f"total {time.perf_counter() - t_start:.0f} s\n           {run_dir}", flush=True)
    return metrics


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
