"""Ingest throughput: Spark ingest on local[2] vs the seed notebook's single-process pandas load.

Same data, one run: the 75,000 train+unsup aclImdb reviews (extracted by the data step).
The anchor reads every file into a pandas DataFrame, as the seed does; a second anchor
reads the 25k CSV with pandas.read_csv.  Prints ratios; writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from common import ROOT, Timer, write_results

from reviewpipe.config import load_conf
from reviewpipe.datasets import provision


def pandas_files(root: Path):
    import pandas as pd

    rows = []
    for split in ("train",):
        for cls in ("pos", "neg", "unsup"):
            d = root / split / cls
            for name in os.listdir(d):
                with open(d / name, encoding="utf-8") as f:
                    stem = name[:-4]
                    rows.append((f"{split}/{cls}/{stem}", cls, int(stem.split("_")[1]), f.read()))
    return pd.DataFrame(rows, columns=["review_id", "cls", "rating", "text"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conf", default=str(ROOT / "conf" / "pipeline.toml"))
    args = parser.parse_args()
    conf = load_conf(args.conf)
    root = provision(conf.data, allow_download=False)
    csv = Path(conf.data.mirror_dir) / "imdb_train_reviews.csv.gz"

    with Timer() as t_pd:
        df = pandas_files(root)
    n = len(df)
    del df
    t_csv = None
    if csv.is_file():
        import pandas as pd

        with Timer() as t_csv:
            n_csv = len(pd.read_csv(csv))

    from reviewpipe.ingest import ingest
    from reviewpipe.session import build_session

    out = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with Timer() as t_total:
            spark = build_session(conf, master="local[2]")
            with Timer() as t_job:
                summary = ingest(spark, str(root), str(out / "ingest"), conf)
        with Timer() as t_csv_spark:
            if csv.is_file():
                ingest(spark, str(csv), str(out / "csv"), conf)
        spark.stop()
    finally:
        shutil.rmtree(out, ignore_errors=True)

    assert summary["rows_read"] == n, (summary["rows_read"], n)
    res = {
        "reviews": n,
        "pandas_files_seconds": round(t_pd.seconds, 2),
        "pandas_files_reviews_per_s": round(n / t_pd.seconds, 1),
        "spark_local2_job_seconds": round(t_job.seconds, 2),
        "spark_local2_with_startup_seconds": round(t_total.seconds, 2),
        "spark_local2_reviews_per_s": round(n / t_job.seconds, 1),
        "spark_local2_reviews_per_s_with_startup": round(n / t_total.seconds, 1),
        "ratio_spark_vs_pandas_files": round(t_pd.seconds / t_job.seconds, 3),
        "ratio_spark_with_startup_vs_pandas_files": round(t_pd.seconds / t_total.seconds, 3),
        "note": "Spark does more than the anchor: strict UTF-8 validation, quarantine checks, "
                "dedupe, hash split, ordinals, Parquet output and a read-back reconciliation.",
    }
    if t_csv is not None:
        res.update({"csv_reviews": n_csv, "pandas_read_csv_seconds": round(t_csv.seconds, 2),
                    "spark_local2_csv_seconds": round(t_csv_spark.seconds, 2),
                    "ratio_spark_vs_pandas_read_csv": round(t_csv.seconds / t_csv_spark.seconds, 3)})
    path = write_results("ingest", res)
    print(f"ingest, {n} aclImdb train+unsup reviews, local[2]:")
    print(f"  pandas file loop (anchor) {res['pandas_files_seconds']:7.2f}s  {res['pandas_files_reviews_per_s']:9.1f} rev/s")
    print(f"  spark ingest job          {res['spark_local2_job_seconds']:7.2f}s  {res['spark_local2_reviews_per_s']:9.1f} rev/s"
          f"  ratio {res['ratio_spark_vs_pandas_files']:.3f}x")
    print(f"  spark incl. start-up      {res['spark_local2_with_startup_seconds']:7.2f}s"
          f"  ratio {res['ratio_spark_with_startup_vs_pandas_files']:.3f}x")
    if t_csv is not None:
        print(f"  csv 25k: pandas.read_csv {res['pandas_read_csv_seconds']:.2f}s, spark {res['spark_local2_csv_seconds']:.2f}s,"
              f" ratio {res['ratio_spark_vs_pandas_read_csv']:.3f}x")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
