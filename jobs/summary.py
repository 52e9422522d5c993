"""Print where the main job's artifacts are and the headline figures (the last lines of make run)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import constants as C  # noqa: E402
from reviewpipe.train import latest_complete  # noqa: E402


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("ingest", "vocab", "shards", "runs", "scores", "run-date"):
        p.add_argument(f"--{name}", required=True)
    a = p.parse_args()
    i = _load(Path(a.ingest) / C.INGEST_SUMMARY)
    v = _load(Path(a.vocab) / C.VOCAB_SUMMARY)
    m = _load(Path(a.shards) / C.MANIFEST)
    run = latest_complete(a.runs)
    t = _load(run / C.RUN_METRICS) if run else {}
    reports = Path(a.scores) / C.SCORES_REPORTS / f"{C.RUN_DATE}={a.run_date}"
    s, e = _load(reports / C.SCORE_SUMMARY), _load(reports / C.SCORE_METRICS)
    print("main job done")
    print(f"  reviews  {Path(a.ingest) / C.REVIEWS_DIR}  {i.get('written_by_split')}  quarantined "
          f"{i.get('rows_quarantined')}")
    print(f"  vocab    {a.vocab}  {v.get('vocabulary_after_cut')} of {v.get('vocabulary_before_cut')} words, coverage "
          f"{v.get('token_coverage')}, val OOV rate {v.get('val_oov_rate')}")
    print(f"  shards   {a.shards}  { {k: d['rows'] for k, d in m.get('splits', {}).items()} }  maxlen "
          f"{m.get('maxlen')}  fingerprint {str(m.get('vocab_fingerprint'))[:12]}")
    if run:
        print(f"  model    {run}  val_accuracy {t.get('val_accuracy')}  val_auc {t.get('val_auc')}  "
              f"{t.get('seconds_per_epoch')} s/epoch  {t.get('parameters'):,} parameters")
    print(f"  scores   {s.get('output')}  {s.get('rows_scored')} scored, {s.get('rows_quarantined')} quarantined")
    if e:
        print(f"  val      accuracy {e['accuracy']}  ROC AUC {e['roc_auc']}  F1 {e['f1']}  (from the scores; "
              f"{reports / C.SCORE_METRICS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
