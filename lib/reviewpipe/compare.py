"""Train LSTM and GRU with the same settings and draw the seed's two figures side by side."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from reviewpipe import constants as C
from reviewpipe.config import PipelineConf
from reviewpipe.plots import plot_compare, read_history

log = logging.getLogger(__name__)

CELLS = ("gru", "lstm")  # the seed shows GRU first


def table(rows: list[dict]) -> str:
    """A Markdown table: one row per run."""
    out = ["| model | val accuracy | val AUC | best epoch | s/epoch | parameters | run |",
           "|---|---|---|---|---|---|---|"]
    for m in rows:
        name = f"{'Bi' if m['bidirectional'] else ''}{m['cell'].upper()}"
        out.append(f"| {name} | {m['val_accuracy']:.4f} | {m['val_auc']:.4f} | {m['best_epoch']}/{m['epochs']} | "
                   f"{m['seconds_per_epoch']:.1f} | {m['parameters']:,} | {m['run_id']} |")
    return "\n".join(out)


def report(run_dirs: list[Path], out_dir: Path) -> dict:
    """compare.png, compare.md and compare.json from finished run folders."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = [json.loads((d / C.RUN_METRICS).read_text(encoding="utf-8")) for d in run_dirs]
    names = [f"{'Bi' if m['bidirectional'] else ''}{m['cell'].upper()}" for m in metrics]
    plot_compare([(n, read_history(d / C.RUN_HISTORY)) for n, d in zip(names, run_dirs)], out_dir / "compare.png")
    md = table(metrics)
    (out_dir / "compare.md").write_text(md + "\n", encoding="utf-8")
    (out_dir / "compare.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(md, f"\nfigure: {out_dir / 'compare.png'}", sep="\n", flush=True)
    return {"runs": [str(d) for d in run_dirs], "figure": str(out_dir / "compare.png"), "table": md}


def compare(shards_dir: str, vocab_dir: str, runs_dir: str, out_dir: str, conf: PipelineConf) -> dict:
    """Train one run per cell with otherwise identical settings, then :func:`report`."""
    import keras

    from reviewpipe.train import train

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dirs = []
    for cell in CELLS:
        keras.backend.clear_session()
        run_id = f"{stamp}-compare-{conf.model.preset}-{cell}"
        train(shards_dir, vocab_dir, runs_dir, replace(conf, model=replace(conf.model, cell=cell)), run_id=run_id)
        run_dirs.append(Path(runs_dir) / run_id)
    return report(run_dirs, Path(out_dir) / stamp)
