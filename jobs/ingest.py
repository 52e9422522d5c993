"""spark-submit entry point: raw reviews -> reviews (Parquet by split) + quarantine + summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe.ingest import FORMATS, ingest  # noqa: E402
from reviewpipe.session import spark_session  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "ingest", __doc__,
        "spark-submit --py-files dist/reviewpipe.zip jobs/ingest.py --input data/extracted/<sha>/aclImdb "
        "--output data/work/ingest --conf conf/pipeline.toml")
    parser.add_argument("--input", required=True, help="aclImdb folder or tarball, CSV, JSONL or Parquet")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--output", required=True, help="folder for reviews/, quarantine/, ingest_summary.json")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)
    with spark_session(conf, master=args.master) as spark:
        summary = ingest(spark, args.input, args.output, conf, fmt=args.format)
    print(json.dumps({k: summary[k] for k in ("rows_read", "rows_written", "rows_quarantined",
                                              "written_by_split", "quarantined_by_reason", "seconds")}))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
