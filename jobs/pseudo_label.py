"""Label the unlabelled shard rows with a finished run; keep the confident ones as split pseudo.

Writes a new shards folder (the source's files, hard-linked where possible, plus split=pseudo)
for self-training: make train SHARDS_OUT=<OUTPUT> SET="train.splits=train,pseudo".
Not a Spark job: run it with the project's Python (make pseudo-label).
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
        "pseudo_label", __doc__,
        "python jobs/pseudo_label.py --run artifacts/runs/<run_id> --shards data/work/shards "
        "--output data/work/shards_pseudo --set pseudo.threshold=0.9", spark=False)
    parser.add_argument("--run", required=True, action="append",
                        help="finished run folder (the teacher); repeat it for an ensemble of runs on the same vocabulary")
    parser.add_argument("--shards", required=True, help="shards folder with the pseudo.split rows (unsup)")
    parser.add_argument("--output", required=True, help="new shards folder: the source's splits plus pseudo")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)  # validated before TensorFlow starts

    from reviewpipe.pseudo import pseudo_label

    record = pseudo_label(args.run, args.shards, args.output, conf)
    print(json.dumps({k: v for k, v in record.items() if k not in ("source", "teachers")}))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
