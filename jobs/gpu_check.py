"""The GPU check (make gpu-check): cuDNN kernels, mixed precision, training and scoring speed
on a GPU, and val accuracy against a CPU run. Fails (exit 2) on a machine without a GPU.
Not a Spark job: run it with the project's Python."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "gpu_check", __doc__, "python jobs/gpu_check.py --shards data/work/shards --vocab data/work/vocab "
                              "--reviews data/work/ingest/reviews --runs artifacts/runs --output gpu_check.json",
        spark=False)
    parser.add_argument("--shards", required=True, help="encoded shards (the real data)")
    parser.add_argument("--vocab", required=True, help="their vocabulary")
    parser.add_argument("--reviews", required=True, help="the ingest's reviews table (val texts are scored)")
    parser.add_argument("--runs", required=True, help="where the check's two runs go")
    parser.add_argument("--cpu-run", default=None, help="a CPU run of the default preset to compare val accuracy with")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per preset (default 2)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest val accuracy gap to the CPU run")
    parser.add_argument("--output", required=True, help="the JSON report")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)

    from reviewpipe.gpu_check import require_gpu, run_check

    require_gpu()  # before any data is read
    run_check(args.shards, args.vocab, args.reviews, args.runs, conf, args.cpu_run, args.output,
              args.epochs, args.tolerance)
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
