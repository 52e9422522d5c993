"""The last lines of the main job: where each artifact is, with the headline figures."""

from __future__ import annotations

import json
from pathlib import Path

from reviewpipe import constants as C


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def main_job_lines(ingest: str | Path, vocab: str | Path, shards: str | Path, run: Path | None,
                   scores: str | Path, run_date: str) -> list[str]:
    """Reviews, vocabulary, shards, model and scores, each with its folder and figures."""
    i = _load(Path(ingest) / C.INGEST_SUMMARY)
    v = _load(Path(vocab) / C.VOCAB_SUMMARY)
    m = _load(Path(shards) / C.MANIFEST)
    t = _load(run / C.RUN_METRICS) if run else {}
    reports = Path(scores) / C.SCORES_REPORTS / f"{C.RUN_DATE}={run_date}"
    s, e = _load(reports / C.SCORE_SUMMARY), _load(reports / C.SCORE_METRICS)
    split_rule = (i.get("val_split") or {}).get("rule")
    lines = ["main job done",
             f"  reviews  {Path(ingest) / C.REVIEWS_DIR}  {i.get('written_by_split')}  quarantined "
             f"{i.get('rows_quarantined')}  (val by {split_rule})",
             f"  vocab    {vocab}  {v.get('vocabulary_after_cut')} of {v.get('vocabulary_before_cut')} words, "
             f"coverage {v.get('token_coverage')}, val OOV rate {v.get('val_oov_rate')}",
             f"  shards   {shards}  { {k: d['rows'] for k, d in m.get('splits', {}).items()} }  maxlen "
             f"{m.get('maxlen')}  fingerprint {str(m.get('vocab_fingerprint'))[:12]}"]
    if run:
        lines.append(f"  model    {run}  val_accuracy {t.get('val_accuracy')}  val_auc {t.get('val_auc')}  "
                     f"{t.get('seconds_per_epoch')} s/epoch  {t.get('parameters', 0):,} parameters")
    lines.append(f"  scores   {s.get('output')}  {s.get('rows_scored')} scored, {s.get('rows_quarantined')} quarantined")
    if e:
        lines.append(f"  val      accuracy {e['accuracy']}  ROC AUC {e['roc_auc']}  F1 {e['f1']}  (from the scores; "
                     f"{reports / C.SCORE_METRICS})")
    return lines
