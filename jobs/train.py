"""Train Embedding -> LSTM/GRU on the encoded shards (streamed) into a model run folder.

Run with the project's Python (make train), it trains in this process.  With --workers N
(make train WORKERS=N MASTER=spark://...) it is a Spark job: N TensorFlow workers train one
model as a barrier stage on the cluster (MultiWorkerMirroredStrategy; reviewpipe.barrier).
A run stopped by SIGTERM, a kill or a lost worker continues with --resume (the latest
unfinished run, or --run-id's).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "train", __doc__,
        "python jobs/train.py --shards data/work/shards --vocab data/work/vocab --output artifacts/runs "
        "--set model.cell=gru   (on a cluster: spark-submit --master spark://host:7077 jobs/train.py "
        "--workers 2 ...)")
    parser.add_argument("--shards", required=True, help="encoded shards folder (with _manifest.json)")
    parser.add_argument("--vocab", required=True, help="vocabulary artifact the shards were encoded with")
    parser.add_argument("--output", required=True, help="runs folder; the run goes to OUTPUT/<run_id>/")
    parser.add_argument("--run-id", default=None, help="run folder name (default: UTC time, preset and cell)")
    parser.add_argument("--resume", action="store_true",
                        help="continue --run-id (or the latest unfinished run) from its last checkpoint")
    parser.add_argument("--workers", type=int, default=0,
                        help="N >= 1: train with N workers as one Spark barrier stage on --master / spark-submit's "
                             "master (default 0: in this process, no Spark)")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)  # validated before TensorFlow starts
    if args.workers < 0:
        raise cli.JobError(f"--workers must be 0 (this process) or a number of workers, got {args.workers}")
    if not args.workers:
        if args.master:
            raise cli.JobError("--master needs --workers N (without it the trainer does not use Spark)")
        from reviewpipe.train import train

        train(args.shards, args.vocab, args.output, conf, run_id=args.run_id, resume=args.resume)
        return 0

    from reviewpipe.barrier import SESSION_CONF, train_on_cluster
    from reviewpipe.session import spark_session

    with spark_session(conf, master=args.master, extra=SESSION_CONF) as spark:
        train_on_cluster(spark, args.shards, args.vocab, args.output, conf, args.workers, run_id=args.run_id,
                         resume=args.resume)
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
