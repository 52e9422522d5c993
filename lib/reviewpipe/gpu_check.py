"""``make gpu-check``: one short check of the GPU path, for the day a GPU machine is lent.

It refuses to run without a GPU (no silent CPU fallback), then on the real shards:
- trains the default and the seed preset for ``epochs`` epochs each with the trainer itself
  (mixed precision, the cuDNN conditions) and reads their examples/s and seconds per epoch,
  and the default once more on length-sorted batches (``train.length_step``, what the
  recipes train with): cuDNN over batches of varying width, and its speed-up on the GPU;
- looks for the fused cuDNN kernels among the ops of a traced training step
  (``CudnnRNN*``), which TensorFlow picks only on a GPU and only when the layer allows it;
- checks the mixed-precision policy: float16 compute, a float32 output;
- scores the val reviews from raw text with the scoring job's own predictor (tokenizer +
  model, as the Spark UDF runs it) and reports rows/s;
- compares the default run's val accuracy with a CPU run's (``--cpu-run``), within ``tolerance``.

Everything goes to one JSON file and is printed; the exit code is 0 only if every check held.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from reviewpipe import constants as C
from reviewpipe.cli import JobError
from reviewpipe.config import PipelineConf, load_conf


class GpuCheckError(JobError):
    """No GPU, or a check failed; the message says which."""


def require_gpu() -> dict:
    """The first GPU's details; raises when TensorFlow sees none."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise GpuCheckError("no GPU is visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty; "
                            f"built with CUDA: {tf.test.is_built_with_cuda()}). This check runs only on a GPU "
                            "machine and never falls back to the CPU.")
    details = tf.config.experimental.get_device_details(gpus[0])
    return {"gpus": len(gpus), "name": details.get("device_name"),
            "compute_capability": details.get("compute_capability"), "tensorflow": tf.__version__}


# (report key, model.preset, extra settings): the runs the check trains
RUNS = (("default", "default", ()), ("seed", "seed", ()),
        ("default_length_step", "default", ("train.length_step=32",)))


def cudnn_ops(model, maxlen: int | None) -> list[str]:
    """The CudnnRNN op types in one traced training step of ``model`` (empty: not fused)."""
    import tensorflow as tf

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.binary_crossentropy(y, model(x, training=True)))
        return tape.gradient(loss, model.trainable_variables)

    graph = step.get_concrete_function(tf.TensorSpec((None, maxlen), tf.int32),
                                       tf.TensorSpec((None, 1), tf.float32)).graph.as_graph_def()
    ops = {n.op for n in graph.node}
    for fn in graph.library.function:
        ops |= {n.op for n in fn.node_def}
    return sorted(op for op in ops if op.startswith("CudnnRNN"))


def run_check(shards: str, vocab: str, reviews: str, runs: str, conf: PipelineConf, cpu_run: str | None,
              out_path: str, epochs: int = 2, tolerance: float = 0.01) -> dict:
    """Run every check, write ``out_path`` (JSON), and raise if one failed."""
    import keras
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from reviewpipe.score import KerasPredictor, check_run, predict_batches
    from reviewpipe.train import train

    report: dict = {"device": require_gpu(), "checks": {}}
    failures = []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for preset, model_preset, extra in RUNS:
        c = load_conf(None, [*_overrides(conf), f"model.preset={model_preset}", f"train.epochs={epochs}",
                             "train.early_stopping_patience=0", *extra])
        metrics = train(shards, vocab, runs, c, run_id=f"gpu-check-{stamp}-{preset}", verbose=2)
        run_dir = Path(runs) / f"gpu-check-{stamp}-{preset}"
        model = keras.models.load_model(run_dir / C.RUN_MODEL)
        ops = cudnn_ops(model, None if metrics["length_step"] else metrics["maxlen"])
        report[preset] = {k: metrics[k] for k in ("val_accuracy", "val_auc", "seconds_per_epoch",
                                                  "examples_per_second", "precision", "cudnn", "parameters")}
        report[preset]["cudnn_ops"] = ops
        if not ops:
            failures.append(f"{preset}: no CudnnRNN op in the traced training step (cuDNN not used)")
        if metrics["precision"] != "mixed_float16":
            failures.append(f"{preset}: precision {metrics['precision']}, not mixed_float16")
        out_dtype = model.outputs[0].dtype
        report[preset]["output_dtype"] = str(out_dtype)
        if "float32" not in str(out_dtype):
            failures.append(f"{preset}: the output is {out_dtype}, not float32")

    full, cut = report["default"]["examples_per_second"], report["default_length_step"]["examples_per_second"]
    report["length_step_speedup"] = round(cut / full, 2) if full and cut else None
    default_run = Path(runs) / f"gpu-check-{stamp}-default"
    # scoring from raw text on the GPU: the scoring UDF's own body, in this process
    texts = pq.read_table(reviews, columns=[C.TEXT], filters=[(C.SPLIT, "=", C.VAL)]).column(C.TEXT).to_pandas()
    predictor = KerasPredictor(check_run(str(default_run)), 0)
    rows = conf.score.arrow_batch_rows
    batches = [texts.iloc[i:i + rows] for i in range(0, len(texts), rows)]
    next(predict_batches(iter(batches[:1]), predictor, conf.score.batch_size))  # warm-up: tracing, kernels
    t0 = time.perf_counter()
    probs = pd.concat(list(predict_batches(iter(batches), predictor, conf.score.batch_size)))[C.PROBABILITY]
    seconds = time.perf_counter() - t0
    report["scoring"] = {"rows": len(texts), "seconds": round(seconds, 2),
                         "rows_per_second": round(len(texts) / seconds, 1), "mean_probability": round(float(np.mean(probs)), 5)}
    if cpu_run:
        cpu = json.loads((Path(cpu_run) / C.RUN_METRICS).read_text())["val_accuracy"]
        gap = abs(report["default"]["val_accuracy"] - cpu)
        report["checks"]["val_accuracy_vs_cpu"] = {"cpu": cpu, "gpu": report["default"]["val_accuracy"],
                                                   "gap": round(gap, 5), "tolerance": tolerance}
        if gap > tolerance:
            failures.append(f"val accuracy {report['default']['val_accuracy']} on the GPU is {gap:.4f} from the "
                            f"CPU run's {cpu} (tolerance {tolerance})")
    report["failures"] = failures
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2, sort_keys=True))
    if failures:
        raise GpuCheckError("; ".join(failures))
    return report


def _overrides(conf: PipelineConf) -> list[str]:
    """The caller's conf as --set lines for the presets to start from (model/train keys left to the preset)."""
    d = conf.to_dict()
    return [f"{sec}.{k}={json.dumps(v)}" for sec in ("tokenizer", "score", "spark") for k, v in d[sec].items()]
