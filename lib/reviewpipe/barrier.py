"""Training on a Spark cluster: N TensorFlow workers launched as one barrier stage.

This is how Spark's own ecosystem runs distributed TensorFlow (spark-tensorflow-distributor's
``MirroredStrategyRunner``, last released in 2020, does the same): a barrier stage of N tasks
starts together or not at all; each task learns the others' addresses with
``BarrierTaskContext.allGather``, sets ``TF_CONFIG`` and runs the ordinary trainer, which then
picks ``MultiWorkerMirroredStrategy`` (reviewpipe.train.detect_hardware) and reads its own
share of the shard files.

- Worker 0, the chief, writes the run folder; the others write a mirror in a scratch folder
  of their executor that is deleted when they finish (they must run the same saves, which
  take part in the collectives).
- The shards, the vocabulary and the runs folder must be on a filesystem every executor sees
  (the paths are made absolute on the driver).
- A lost worker (its process or its executor dies) fails the stage: Spark kills the other
  tasks, which are waiting for it in an all-reduce, and does not retry a barrier stage whose
  results go to the driver ("Could not recover from a failed barrier ResultStage").  The run
  keeps the checkpoint of its last finished epoch and the job says how to resume it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from reviewpipe import constants as C
from reviewpipe import shards
from reviewpipe.cli import _last_line
from reviewpipe.config import PipelineConf
from reviewpipe.train import TrainError, _run_folder, _write_json, plan_run

log = logging.getLogger(__name__)

# Spark waits this many checks (15 s apart) for enough free task slots before it fails a
# barrier stage that needs more than the cluster has; its default (40) is ten minutes.
SLOT_CHECKS = 4
SESSION_CONF = {"spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": str(SLOT_CHECKS)}


def _absolute_conf(conf: PipelineConf) -> PipelineConf:
    """The conf with the paths it names made absolute (executors run in their own folders)."""
    def absolute(value: str, prefix: str = "") -> str:
        if not value or not value.startswith(prefix):
            return value
        return prefix + str(Path(value[len(prefix):]).resolve())

    model = dataclasses.replace(conf.model, embedding_init=absolute(conf.model.embedding_init, "word2vec:"),
                                encoder_init=absolute(conf.model.encoder_init, "lm:"))
    train = dataclasses.replace(conf.train, word_pairs=absolute(conf.train.word_pairs))
    return dataclasses.replace(conf, model=model, train=train)


def train_on_cluster(spark, shards_dir: str, vocab_dir: str, runs_dir: str, conf: PipelineConf, workers: int, *,
                     run_id: str | None = None, resume: bool = False) -> dict:
    """Train one model with ``workers`` TensorFlow workers on ``spark``'s cluster; the chief's metrics."""
    if workers < 1:
        raise TrainError(f"--workers must be at least 1, got {workers}")
    shards_dir, vocab_dir = str(Path(shards_dir).resolve()), str(Path(vocab_dir).resolve())
    runs = Path(runs_dir).resolve()
    conf = _absolute_conf(conf)
    plan = plan_run(shards_dir, vocab_dir, conf)  # every check before a worker starts
    one_machine = [f"train.{k}={v}" for k, v in (("length_step", conf.train.length_step),
                                                   ("adversarial", conf.train.adversarial)) if v not in (0, "off")]
    if workers > 1 and one_machine:
        raise TrainError(f"{' and '.join(one_machine)} train on one machine only; set train.length_step=0 and "
                         f"train.adversarial=off for {workers} workers")
    files = shards.files_of(shards_dir, plan.manifest, conf.train.splits)
    shards.worker_share(files, workers, 0)  # refuses fewer files than workers
    run_id, run_dir = _run_folder(runs, run_id, resume, plan.vocab.fingerprint, conf)
    sc = spark.sparkContext
    print(f"cluster    {sc.master}: {workers} training worker(s) as one barrier stage; run {run_dir}\n"
          f"           global batch {conf.train.batch_size} per replica x the replicas of {workers} worker(s); "
          f"{len(files)} train files shared out round-robin", flush=True)

    job = _WorkerJob(shards_dir, vocab_dir, str(runs), conf, run_id, resume)
    printer = _EpochPrinter(run_dir / C.RUN_HISTORY)
    printer.start()
    sc.setJobDescription(f"train {run_id} on {workers} worker(s)")
    try:
        results = sc.parallelize(range(workers), workers).barrier().mapPartitions(job).collect()
    except Exception as e:  # py4j's error carries the worker's traceback; one line is enough here
        raise TrainError(_failure_message(str(e), run_dir, run_id, workers)) from None
    finally:
        printer.stop()
    reports = sorted((json.loads(r) for r in results), key=lambda r: r["index"])
    chief = reports[0]
    meta_path = run_dir / C.RUN_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["cluster"] = {"master": sc.master, "workers": workers,
                       "addresses": [r["address"] for r in reports],
                       "shares": [r["files"] for r in reports], "cpus_per_worker": [r["cpus"] for r in reports]}
    _write_json(meta_path, meta)
    print(chief["screen"], flush=True)
    return chief["metrics"]


def _failure_message(error: str, run_dir: Path, run_id: str, workers: int) -> str:
    if "SPARK-24819" in error or "requires more slots" in error:
        return (f"{workers} workers need {workers} free task slots at once and the cluster has fewer; "
                f"start more executors or pass a smaller --workers")
    found = re.search(r"Most recent failure reason: ([^\n]*)", error)
    reason = found.group(1).strip() if found else _last_line(error)
    cause = _last_line(error)
    if cause and "Error:" in cause and cause not in reason:  # the worker's own exception
        reason = f"{reason} {cause}"
    state_path = run_dir / C.RUN_CHECKPOINTS / "state.json"
    if state_path.is_file():
        epochs = json.loads(state_path.read_text(encoding="utf-8"))["epochs_done"]
        after = (f"the run keeps its checkpoint after epoch {epochs}; continue it with "
                 f"make resume WORKERS={workers} RUN_ID={run_id}")
    else:
        after = "no epoch had finished, so there is no checkpoint; start the run again"
    return (f"a training worker was lost and Spark stopped the barrier stage ({reason}); Spark does not "
            f"retry a barrier stage that returns to the driver: {after}")


class _EpochPrinter(threading.Thread):
    """Prints the chief's history rows on the driver as they land (the workers' own output
    goes to the executors' logs)."""

    def __init__(self, history: Path, every: float = 2.0):
        super().__init__(daemon=True, name="epoch-printer")
        self.history, self.every, self._done = history, every, threading.Event()
        self.seen = self._rows()

    def _rows(self) -> int:
        if not self.history.is_file():
            return 0
        with open(self.history, newline="", encoding="utf-8") as f:
            return max(0, sum(1 for _ in f) - 1)

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.flush()

    def flush(self) -> None:
        if not self.history.is_file():
            return
        with open(self.history, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows[self.seen:]:
            cols = "  ".join(f"{k} {float(v):.4f}" for k, v in row.items() if k != "epoch" and v)
            print(f"epoch {int(row['epoch']) + 1:<4} {cols}", flush=True)
        self.seen = max(self.seen, len(rows))

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)
        self.flush()


@dataclasses.dataclass
class _WorkerJob:
    """What each barrier task runs (pickled to the executors)."""

    shards_dir: str
    vocab_dir: str
    runs_dir: str
    conf: PipelineConf
    run_id: str
    resume: bool

    def __call__(self, _partition):
        from pyspark import BarrierTaskContext

        from reviewpipe import distributed

        ctx = BarrierTaskContext.get()
        index, count = ctx.partitionId(), len(ctx.getTaskInfos())
        host = ctx.getTaskInfos()[index].address.rsplit(":", 1)[0]
        address = f"{host}:{distributed.free_port()}"
        addresses = ctx.allGather(address)  # in partition order: index i is worker i
        if count > 1:  # one worker trains as on one machine
            os.environ["TF_CONFIG"] = distributed.tf_config(addresses, index)
        cpus = ctx.cpus()
        import tensorflow as tf

        try:  # before TensorFlow starts in this Python worker
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, cpus))
        except RuntimeError:
            log.warning("TensorFlow already started in this Python worker; its thread pools stay as they are")

        from reviewpipe.train import train

        scratch = tempfile.mkdtemp(prefix=f"reviewpipe-worker{index}-") if index else None
        try:
            screen = io.StringIO()  # the start screen and the done line, for the driver
            with contextlib.redirect_stdout(screen):
                metrics = train(self.shards_dir, self.vocab_dir, self.runs_dir, self.conf, run_id=self.run_id,
                                resume=self.resume, verbose=0, mirror=scratch)
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        print(screen.getvalue(), end="", flush=True)  # and for the executor's log
        manifest = shards.load_manifest(self.shards_dir)
        share = shards.worker_share(shards.files_of(self.shards_dir, manifest, self.conf.train.splits), count, index)
        if index == 0 and metrics.get("workers") != count:
            raise TrainError(f"worker 0 trained as {metrics.get('workers')} worker(s), not {count}")
        yield json.dumps({"index": index, "address": address, "cpus": cpus, "files": share,
                          "metrics": metrics if index == 0 else None, "screen": screen.getvalue().rstrip("\n")})
