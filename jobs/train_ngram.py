"""Fit the n-gram teacher (NB-weighted logistic regression over word 1..3-grams) on the
labelled train reviews and predict every other review (val, unsup, test).

Mix it into the pseudo-label teacher: make pseudo-label MODEL="<runs...> <OUTPUT>".
Not a Spark job: run it with the project's Python (make train-ngram).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "train_ngram", __doc__,
        "python jobs/train_ngram.py --reviews data/work/ingest/reviews --output data/work/ngram "
        "--set ngram.c=1.0", spark=False)
    parser.add_argument("--reviews", required=True, help="the ingest job's reviews/ folder")
    parser.add_argument("--output", required=True, help="teacher folder: ngram.json, ngram.npz, predictions.parquet")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)  # validated before any work starts

    from reviewpipe.ngram import train_teacher

    meta = train_teacher(args.reviews, args.output, conf)
    print(json.dumps({"rows": meta["rows"], **meta["metrics"], "seconds": meta["seconds"]}))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
