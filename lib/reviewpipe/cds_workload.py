"""The class-loading run behind ``make setup``'s JVM archive (``reviewpipe.jvm_cds``).

spark-submit runs this file with ``-XX:ArchiveClassesAtExit``: an ingest, a ``prepare`` and a
scoring pass on generated rows in the folder given, which load the classes real jobs load.
The scoring pass is the scoring job itself (``reviewpipe.score.score``: its Arrow UDF, the
partitioned write, the read-backs, the metrics and drift aggregations) over a stand-in run
whose predictor answers 0.5 for every review, so no model is trained or loaded.

    spark-submit lib/reviewpipe/cds_workload.py TMPDIR
"""

from __future__ import annotations

import sys
from pathlib import Path


class _Constant:
    """A predictor for the stand-in run: the run's tokenizer, and 0.5 for every review."""

    def __init__(self, run_dir: str):
        from reviewpipe import score

        self.inner = score.Predictor()
        self.inner._vocabulary(score.check_run(run_dir), crop=False)

    def encode(self, texts):
        return self.inner.encode(texts)

    def __call__(self, ids):
        import numpy as np

        return np.full(len(ids), 0.5)


def stand_in_run(vocab_dir: Path, run_dir: Path) -> Path:
    """A complete-looking run folder over ``vocab_dir`` for :func:`reviewpipe.score.score`
    (an empty model file: :class:`_Constant` never reads it)."""
    import json
    import shutil

    import numpy as np

    from reviewpipe import constants as C
    from reviewpipe import drift
    from reviewpipe.vocab import load_vocab

    run_dir.mkdir(parents=True)
    shutil.copytree(vocab_dir, run_dir / C.RUN_VOCAB)
    (run_dir / C.RUN_MODEL).write_bytes(b"")
    meta = {"run_id": "cds-workload", "status": "complete", "maxlen": 32, "padding": "post", "truncating": "post",
            "vocab_fingerprint": load_vocab(None, str(vocab_dir)).fingerprint}
    (run_dir / C.RUN_META).write_text(json.dumps(meta), encoding="utf-8")
    lengths = np.arange(5, 45)
    profile = drift.training_profile(lengths, lengths % 3, np.linspace(0.1, 0.9, len(lengths)), 0.5)
    (run_dir / C.RUN_METRICS).write_text(json.dumps({"data_profile": profile}), encoding="utf-8")
    return run_dir


def workload(tmp: str) -> None:
    """Run an ingest, a prepare and a scoring pass on generated rows (class loading only;
    output discarded)."""
    from reviewpipe.config import load_conf
    from reviewpipe.ingest import ingest
    from reviewpipe.prepare import prepare
    from reviewpipe.score import score
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
        run = str(stand_in_run(root / "vocab", root / "run"))
        score(spark, str(root / "ingest" / "reviews"), run, str(root / "scores"), "2026-01-01", conf,
              splits=["val"], predictor_factory=lambda: _Constant(run))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file by spark-submit
    workload(sys.argv[1])
