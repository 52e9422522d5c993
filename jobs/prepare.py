"""spark-submit entry point: reviews -> vocabulary + padded int32 Parquet shards, tokenizing
each review once (the fused form of build_vocab followed by encode; same artifacts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe.prepare import prepare  # noqa: E402
from reviewpipe.session import spark_session  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "prepare", __doc__,
        "spark-submit --py-files dist/reviewpipe.zip jobs/prepare.py --reviews data/work/ingest/reviews "
        "--vocab data/work/vocab --shards data/work/shards --set vocab.num_words=20000")
    parser.add_argument("--reviews", required=True, help="the ingest job's reviews/ folder")
    parser.add_argument("--vocab", required=True, help="vocabulary artifact folder to write")
    parser.add_argument("--shards", required=True,
                        help="shards folder to write (refused if it holds another vocabulary's shards)")
    parser.add_argument("--vocab-splits", default=None,
                        help="comma-separated splits the vocabulary counts (default: vocab.splits; never val/test)")
    parser.add_argument("--splits", default=None, help="comma-separated splits to encode (default: all)")
    args = parser.parse_args(argv)
    if args.vocab_splits:  # validated with the rest of the conf, before Spark starts
        args.overrides.append(f"vocab.splits={args.vocab_splits}")
    conf = cli.load_job_conf(args)
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    with spark_session(conf, master=args.master) as spark:
        out = prepare(spark, args.reviews, args.vocab, args.shards, conf, splits=splits)
    v, m = out["vocab"], out["shards"]
    print(json.dumps({"vocab_fingerprint": v["fingerprint"], "vocabulary": v["vocabulary_after_cut"],
                      "token_coverage": v["token_coverage"], "val_oov_rate": v["val_oov_rate"],
                      "maxlen": m["maxlen"], "rows": {s: x["rows"] for s, x in m["splits"].items()},
                      "seconds": m["seconds"]}))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
