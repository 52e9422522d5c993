"""spark-submit entry point: batch-score reviews with a trained run (Iterator pandas UDF).

Input: any ingest format (aclImdb folder/tarball, CSV, JSONL, Parquet) or a reviews table.
Output: SCORES_DIR/run_date=YYYY-MM-DD (replaced on re-run), _SUCCESS, and under
SCORES_DIR/_reports/run_date=.../ score_summary.json (+ metrics.json when labels exist).
With --pending, INPUT is a landing folder of date=YYYY-MM-DD partitions and every date
not yet scored from what it holds now is scored, in date order (a date whose files changed
after scoring is reported, and scored again with --rescore-changed).  Exit 0 on success; 2 with one line on a
known failure; 1 on a crash.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe.ingest import FORMATS  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "score", __doc__,
        "spark-submit --py-files dist/reviewpipe.zip jobs/score.py --input data/incoming/date=2026-11-24 "
        "--model artifacts/runs/<run_id> --output data/scores --run-date 2026-11-24")
    parser.add_argument("--input", required=True, help="reviews to score (any ingest format, or a reviews table)")
    parser.add_argument("--format", default="auto", choices=(*FORMATS, "reviews"))
    parser.add_argument("--model", required=True, help="a complete model run folder")
    parser.add_argument("--vocab", default=None, help="refuse unless the run was trained with this vocabulary")
    parser.add_argument("--output", required=True, help="scores folder (partitioned by run_date)")
    parser.add_argument("--run-date", default=None, help="YYYY-MM-DD partition to (re)write (default: today, UTC)")
    parser.add_argument("--splits", default=None, help="only these splits of the input (e.g. val)")
    parser.add_argument("--pending", action="store_true",
                        help="score every date=YYYY-MM-DD folder of --input not yet scored from what it holds "
                             "now (no _SUCCESS in --output); dates whose input changed since are reported")
    parser.add_argument("--rescore-changed", action="store_true",
                        help="with --pending: also score again the dates whose input changed since they were scored")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)

    from reviewpipe import score as S
    from reviewpipe.session import spark_session

    run = S.check_run(args.model, args.vocab)  # refuse before Spark starts
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    if args.pending:
        pending = S.pending_dates(args.input, args.output, args.rescore_changed)
        todo = pending.todo
        print(f"pending dates: {pending.new or 'none'}", flush=True)
        if pending.changed:
            print(f"changed since scored: {pending.changed} ("
                  f"{'scoring them again' if args.rescore_changed else 'score them again with --rescore-changed, make score-pending RESCORE=1'})",
                  flush=True)
    else:
        todo = [(S.check_date(args.run_date or datetime.now(timezone.utc).date().isoformat()), args.input)]
    if not todo:
        return 0
    with spark_session(conf, master=args.master) as spark:
        for run_date, path in todo:
            summary = S.score(spark, path, run.path, args.output, run_date, conf, fmt=args.format,
                              vocab_dir=args.vocab, splits=splits)
            print(json.dumps({k: summary.get(k) for k in ("run_date", "rows_in", "rows_scored", "rows_quarantined",
                                                          "quarantined_by_reason", "rows_per_second", "metrics",
                                                          "drift", "output")}), flush=True)
            d = summary.get("drift")
            if d:
                print(f"drift      {run_date}: {'DRIFT' if d['drift'] else 'none'} (PSI length {d['psi_length']:.3f}, "
                      f"probability {d['psi_probability']:.3f}; threshold {d['threshold']})", flush=True)
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
