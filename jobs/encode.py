"""spark-submit entry point: reviews + vocabulary -> padded int32 Parquet shards + _manifest.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe.encode import encode  # noqa: E402
from reviewpipe.session import spark_session  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "encode", __doc__,
        "spark-submit --py-files dist/reviewpipe.zip jobs/encode.py --reviews data/work/ingest/reviews "
        "--vocab data/work/vocab --output data/work/shards --set encode.maxlen=400")
    parser.add_argument("--reviews", required=True, help="the ingest job's reviews/ folder")
    parser.add_argument("--vocab", required=True, help="vocabulary artifact folder")
    parser.add_argument("--output", required=True, help="shards folder (refused if it holds another vocabulary's shards)")
    parser.add_argument("--splits", default=None, help="comma-separated splits to encode (default: all)")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    with spark_session(conf, master=args.master) as spark:
        manifest = encode(spark, args.reviews, args.vocab, args.output, conf, splits)
    print(json.dumps({"vocab_fingerprint": manifest["vocab_fingerprint"], "maxlen": manifest["maxlen"],
                      "rows": {s: v["rows"] for s, v in manifest["splits"].items()},
                      "seconds": manifest["seconds"]}))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
