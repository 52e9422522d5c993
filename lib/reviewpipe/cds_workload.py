"""The class-loading run behind ``make setup``'s JVM archive (``reviewpipe.jvm_cds``).

spark-submit runs this file with ``-XX:ArchiveClassesAtExit``: an ingest and a ``prepare`` on
generated rows in the folder given, which load the classes real jobs load.

    spark-submit lib/reviewpipe/cds_workload.py TMPDIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def workload(tmp: str) -> None:
    """Run an ingest and a prepare on generated rows (class loading only; output discarded)."""
    from reviewpipe.config import load_conf
    from reviewpipe.ingest import ingest
    from reviewpipe.prepare import prepare
    from reviewpipe.session import spark_session

    root = Path(tmp)
    words = "great awful plot acting film movie boring superb".split()
    lines = ["review,sentiment"]
    for i in range(400):
        text = " ".join(words[(i + j) % len(words)] for j in range(5 + i % 7))
        lines.append(f"\"{text}, <br /> number {i}\",{'positive' if i % 2 else 'negative'}")
    (root / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    conf = load_conf(None, [])
    with spark_session(conf) as spark:
        ingest(spark, str(root / "reviews.csv"), str(root / "ingest"), conf)
        prepare(spark, str(root / "ingest" / "reviews"), str(root / "vocab"), str(root / "shards"), conf)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file by spark-submit
    workload(sys.argv[1])
