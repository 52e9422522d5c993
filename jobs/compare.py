"""Train LSTM and GRU with the same settings; write the seed's curves side by side and a table.

Not a Spark job (make compare).  With --runs, only draws the report from finished runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "compare", __doc__,
        "python jobs/compare.py --shards data/work/shards --vocab data/work/vocab --output artifacts/runs "
        "--report artifacts/compare --set model.preset=seed", spark=False)
    parser.add_argument("--shards", help="encoded shards folder")
    parser.add_argument("--vocab", help="vocabulary artifact")
    parser.add_argument("--output", default="artifacts/runs", help="runs folder")
    parser.add_argument("--report", default="artifacts/compare", help="report folder (a subfolder per comparison)")
    parser.add_argument("--runs", nargs="+", default=None, help="finished run folders to report on instead of training")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)

    from reviewpipe import compare

    if args.runs:
        compare.report([Path(r) for r in args.runs], Path(args.report))
        return 0
    if not (args.shards and args.vocab):
        raise cli.JobError("--shards and --vocab are required unless --runs is given")
    compare.compare(args.shards, args.vocab, args.output, args.report, conf)
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
