"""Print where the main job's artifacts are and the headline figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe.summary import main_job_lines  # noqa: E402
from reviewpipe.train import latest_complete  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("ingest", "vocab", "shards", "runs", "scores", "run-date"):
        p.add_argument(f"--{name}", required=True)
    a = p.parse_args()
    print("\n".join(main_job_lines(a.ingest, a.vocab, a.shards, latest_complete(a.runs), a.scores, a.run_date)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
