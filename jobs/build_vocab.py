"""spark-submit entry point: reviews -> vocabulary artifact (vocab.parquet, vocab.json, summary)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe.session import spark_session  # noqa: E402
from reviewpipe.vocab import build_vocab  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "build_vocab", __doc__,
        "spark-submit --py-files dist/reviewpipe.zip jobs/build_vocab.py --reviews data/work/ingest/reviews "
        "--output data/work/vocab --splits train,unsup --set vocab.num_words=20000")
    parser.add_argument("--reviews", required=True, help="the ingest job's reviews/ folder")
    parser.add_argument("--output", required=True, help="vocabulary artifact folder")
    parser.add_argument("--splits", default=None, help="comma-separated: train and/or unsup (default: vocab.splits)")
    args = parser.parse_args(argv)
    if args.splits:
        args.overrides.append(f"vocab.splits={args.splits}")
    conf = cli.load_job_conf(args)
    with spark_session(conf, master=args.master) as spark:
        summary = build_vocab(spark, args.reviews, args.output, conf)
    print(json.dumps(summary))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
