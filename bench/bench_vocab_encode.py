"""vocab+encode throughput and peak RSS at 25k, 75k and 300k reviews, side by side with the
single-process anchors on the same texts: legacy Keras Tokenizer (fit_on_texts +
texts_to_sequences + pad_sequences) and Keras 3 TextVectorization (adapt + call).

Spark runs two ways: ``spark:<mode>`` is build_vocab then encode (two tokenizations, a range
shuffle of the text), ``prepare:<mode>`` is the fused job (one tokenization, no shuffle of
the text); both must give the same vocabulary fingerprint.

Every measurement is a fresh process; Spark's start-up is included.  Writes
bench/results/vocab_encode.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, write_results

HERE = Path(__file__).resolve().parent


def make_corpus(reviews_dir: Path, replicas: int, out: Path) -> int:
    """train+unsup reviews (optionally replicated with fresh ids) as one split=train table."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(reviews_dir, columns=["review_id", "text", "ordinal", "split"])
    t = t.filter(pc.is_in(t["split"], pa.array(["train", "val", "unsup"]))).sort_by("ordinal")
    parts = []
    n = t.num_rows
    for r in range(replicas):
        parts.append(pa.table({"review_id": pc.binary_join_element_wise(t["review_id"], pa.scalar(f"#{r}"), ""),
                               "label": pa.nulls(n, pa.int8()), "text": t["text"],
                               "ordinal": pa.array(range(r * n, (r + 1) * n), pa.int64())}))
    full = pa.concat_tables(parts)
    (out / "split=train").mkdir(parents=True)
    pq.write_table(full, out / "split=train" / "part-0.parquet", row_group_size=8192)
    return full.num_rows


def labelled_only(reviews_dir: Path, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(reviews_dir, columns=["review_id", "text", "ordinal", "split", "label"])
    t = t.filter(pc.is_in(t["split"], pa.array(["train", "val"]))).sort_by("ordinal")
    t = t.select(["review_id", "label", "text", "ordinal"])
    (out / "split=train").mkdir(parents=True)
    pq.write_table(t, out / "split=train" / "part-0.parquet", row_group_size=8192)
    return t.num_rows


def run(kind: str, corpus: Path) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "vocab_encode_run.py"), kind, str(corpus)],
                          capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reviews", default=str(ROOT / "data" / "work" / "ingest" / "reviews"))
    parser.add_argument("--sizes", default="25k,75k,300k")
    parser.add_argument("--skip-textvectorization-above", type=int, default=300_000)
    args = parser.parse_args()
    reviews = Path(args.reviews)
    if not reviews.is_dir():
        sys.exit(f"no reviews table at {reviews}; run `make ingest` first")
    tmp = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    results = []
    for size in args.sizes.split(","):
        corpus = tmp / size
        n = labelled_only(reviews, corpus) if size == "25k" else make_corpus(reviews, 4 if size == "300k" else 1, corpus)
        row = {"size": size, "reviews": n}
        for kind in ("prepare:keras", "prepare:default", "spark:keras", "spark:default", "keras", "textvectorization"):
            if kind == "textvectorization" and n > args.skip_textvectorization_above:
                continue
            r = run(kind, corpus)
            row[kind] = {**r, "docs_per_second": round(n / r["seconds"], 1)}
            print(f"{size:>5} {kind:18s} {r['seconds']:7.1f}s  {n / r['seconds']:9.0f} docs/s  "
                  f"peak RSS {r['peak_rss_mb']}", flush=True)
        for mode in ("keras", "default"):
            if row[f"prepare:{mode}"]["fingerprint"] != row[f"spark:{mode}"]["fingerprint"]:
                raise RuntimeError(f"{size} {mode}: prepare and build_vocab+encode built different vocabularies")
        base = row["keras"]["seconds"]
        for kind in ("prepare:keras", "prepare:default", "spark:keras", "spark:default"):
            job, mode = kind.split(":")
            row[f"ratio_{job}_{mode}_mode_vs_keras_tokenizer"] = round(base / row[kind]["seconds"], 3)
            if "textvectorization" in row:
                row[f"ratio_{job}_{mode}_mode_vs_textvectorization"] = round(
                    row["textvectorization"]["seconds"] / row[kind]["seconds"], 3)
        print(f"{size:>5} ratio vs Keras Tokenizer: prepare(keras mode) {row['ratio_prepare_keras_mode_vs_keras_tokenizer']}x,"
              f" prepare(default) {row['ratio_prepare_default_mode_vs_keras_tokenizer']}x,"
              f" vocab+encode(keras) {row['ratio_spark_keras_mode_vs_keras_tokenizer']}x,"
              f" vocab+encode(default) {row['ratio_spark_default_mode_vs_keras_tokenizer']}x", flush=True)
        results.append(row)
    shutil.rmtree(tmp, ignore_errors=True)
    path = write_results("vocab_encode", {"maxlen": 400, "num_words": 20000, "master": "local[2]", "runs": results})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
