"""Multi-worker training on a loopback cluster: steps/s and examples/s with 1 and 2 workers.

Each configuration is one ``jobs/train.py --workers N`` run on ``local-cluster[N,1,2048]``
(Spark's own cluster on 127.0.0.1: one executor process, one core, per worker) over the real
shards, for a fixed number of steps, one after the other in this run:

  1 worker,  batch 64                       the anchor (one core)
  no Spark,  batch 64                       make train: this process, all the cores
  2 workers, batch 64 per worker (128)      data parallel: ideally 2x the anchor's examples/s
  2 workers, batch 32 per worker (64)       the anchor's global batch, split in two

Step time is the last epoch's training steps without its first step or the val pass
(metrics.json ``step_seconds``).  The communication and synchronisation cost per step is
estimated as the 2-worker step time minus the anchor's at the same per-worker batch: on
2 cores the two workers also compete with each other and with the driver, so this is an
upper bound, and no speed-up can show here.

Writes bench/results/multiworker.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_results

CONFIGS = [  # (name, workers, batch per replica); 0 workers = make train: this process, all cores
    ("1 worker, batch 64 (anchor)", 1, 64),
    ("no Spark, all cores, batch 64 (make train)", 0, 64),
    ("2 workers, batch 64 each (global 128)", 2, 64),
    ("2 workers, batch 32 each (global 64)", 2, 32),
]


def run_one(args, workers: int, batch: int, runs: Path) -> dict:
    run_id = f"w{workers}-b{batch}"
    cluster = ["--workers", str(workers), "--master", f"local-cluster[{workers},1,2048]"] if workers else []
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py"), *cluster, "--shards", args.shards, "--vocab", args.vocab,
           "--output", str(runs), "--run-id", run_id, "--conf", args.conf,
           "--set", f"train.batch_size={batch}", "--set", f"train.steps_per_epoch={args.steps}",
           "--set", "train.epochs=2", "--set", "train.early_stopping_patience=0",
           "--set", "train.embeddings_export=false", "--set", "train.word_pairs="]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=runs, env={**os.environ, "PYSPARK_PYTHON": sys.executable},
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{run_id} failed:\n{proc.stderr[-3000:]}")
    m = json.loads((runs / run_id / "metrics.json").read_text())
    return {"workers": workers, "batch_per_replica": batch, "global_batch": m["global_batch"],
            "step_seconds": m["step_seconds"], "steps_per_second": round(1 / m["step_seconds"], 2),
            "examples_per_second": m["train_examples_per_second"], "val_accuracy": m["val_accuracy"],
            "job_wall_seconds": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--conf", default=str(ROOT / "conf" / "pipeline.toml"))
    ap.add_argument("--steps", type=int, default=60, help="training steps per epoch (2 epochs; the last is timed)")
    args = ap.parse_args()
    args.shards, args.vocab = str(Path(args.shards).resolve()), str(Path(args.vocab).resolve())
    args.conf = str(Path(args.conf).resolve())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as tmp:
        for name, workers, batch in CONFIGS:
            rows.append({"config": name, **run_one(args, workers, batch, Path(tmp))})
            print(f"{name:42s} {rows[-1]['step_seconds'] * 1000:7.1f} ms/step  {rows[-1]['steps_per_second']:6.2f} "
                  f"steps/s  {rows[-1]['examples_per_second']:7.1f} examples/s", flush=True)
    anchor = rows[0]
    for r in rows:
        r["examples_per_second_vs_anchor"] = round(r["examples_per_second"] / anchor["examples_per_second"], 3)
    same_batch = next(r for r in rows if r["workers"] == 2 and r["batch_per_replica"] == anchor["batch_per_replica"])
    comm = round((same_batch["step_seconds"] - anchor["step_seconds"]) * 1000, 1)
    print(f"\nexamples/s vs the anchor: " + ", ".join(f"{r['config']}: {r['examples_per_second_vs_anchor']}x"
                                                    for r in rows[1:]))
    print(f"communication + contention per step (2 workers at batch 64 minus 1 worker at batch 64): {comm} ms "
          f"({os.cpu_count()} cores on this machine{'; below its noise' if comm <= 0 else ''})")
    write_results("multiworker", {"configs": rows, "communication_ms_per_step_upper_bound": comm,
                                  "steps_per_epoch": args.steps, "cores": os.cpu_count()})


if __name__ == "__main__":
    main()
