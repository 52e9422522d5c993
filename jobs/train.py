"""Train Embedding -> LSTM/GRU on the encoded shards (streamed) into a model run folder.

Not a Spark job: run it with the project's Python (make train).  A run stopped by SIGTERM
or a kill continues with --resume (the latest unfinished run, or --run-id's).
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
        "--set model.cell=gru", spark=False)
    parser.add_argument("--shards", required=True, help="encoded shards folder (with _manifest.json)")
    parser.add_argument("--vocab", required=True, help="vocabulary artifact the shards were encoded with")
    parser.add_argument("--output", required=True, help="runs folder; the run goes to OUTPUT/<run_id>/")
    parser.add_argument("--run-id", default=None, help="run folder name (default: UTC time, preset and cell)")
    parser.add_argument("--resume", action="store_true",
                        help="continue --run-id (or the latest unfinished run) from its last checkpoint")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)  # validated before TensorFlow starts

    from reviewpipe.train import train

    train(args.shards, args.vocab, args.output, conf, run_id=args.run_id, resume=args.resume)
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
