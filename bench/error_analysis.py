"""What the errors are: a scored val split against the n-gram teacher, by length, by rating,
and where the two disagree most.

Inputs: the ingest's reviews table (labels, ratings, texts), one date of scores of the val
split (``make evaluate`` or a recipe's evaluate step: review_id, probability, length) and an
n-gram teacher folder (``predictions.parquet`` holds its val probabilities).  Validation rows
only.  Prints markdown tables and writes bench/results/errors.json.

  .venv/bin/python bench/error_analysis.py --reviews data/work/recipes/best/ingest/reviews \\
      --scores data/work/recipes/best/evaluate/run_date=2026-12-01 \\
      --ngram data/work/recipes/best/ngram --maxlen 400
"""

from __future__ import annotations

import argparse
import json
import textwrap

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from common import write_results

from reviewpipe import constants as C

LENGTH_BINS = (0, 100, 200, 400, 800, 10**9)  # tokens before truncation; maxlen 400 keeps the last 400


def load(reviews: str, scores: str, ngram: str) -> pd.DataFrame:
    r = (ds.dataset(reviews, format="parquet", partitioning="hive")
         .to_table(columns=[C.REVIEW_ID, C.SPLIT, C.LABEL, C.RATING, C.TEXT]).to_pandas())
    r = r[r[C.SPLIT].astype(str) == C.VAL]
    s = pd.read_parquet(scores, columns=[C.REVIEW_ID, C.PROBABILITY, C.LENGTH])
    n = pd.read_parquet(f"{ngram}/{C.NGRAM_PREDICTIONS}", columns=[C.REVIEW_ID, C.PROBABILITY])
    df = r.merge(s, on=C.REVIEW_ID).merge(n.rename(columns={C.PROBABILITY: "ngram"}), on=C.REVIEW_ID)
    if len(df) != len(r):
        raise SystemExit(f"{len(r)} val reviews, {len(df)} with both a score and an n-gram probability: "
                         f"are the scores and the teacher from this ingest?")
    return df.rename(columns={C.PROBABILITY: "student"})


def right(p: pd.Series, y: pd.Series) -> pd.Series:
    return (p >= 0.5) == (y == 1)


def table(df: pd.DataFrame, by: pd.Series) -> list[dict]:
    out = []
    for key, g in df.groupby(by, observed=True, sort=True):
        out.append({"group": str(key), "rows": len(g),
                    "student": round(float(right(g.student, g[C.LABEL]).mean()), 4),
                    "ngram": round(float(right(g.ngram, g[C.LABEL]).mean()), 4),
                    "mean_of_both": round(float(right((g.student + g.ngram) / 2, g[C.LABEL]).mean()), 4)})
    return out


def markdown(rows: list[dict], head: str) -> str:
    lines = [f"| {head} | rows | student | n-gram | mean of both |", "|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['rows']:,} | {r['student']:.4f} | {r['ngram']:.4f} | {r['mean_of_both']:.4f} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reviews", required=True)
    ap.add_argument("--scores", required=True, help="one run_date=... folder of the val split's scores")
    ap.add_argument("--ngram", required=True)
    ap.add_argument("--maxlen", type=int, default=400)
    ap.add_argument("--show", type=int, default=6, help="disagreements to print")
    args = ap.parse_args()
    df = load(args.reviews, args.scores, args.ngram)
    y = df[C.LABEL]
    res: dict = {"rows": len(df), "maxlen": args.maxlen}
    res["overall"] = table(df, pd.Series("all", index=df.index))
    labels = [f"{a + 1}-{b}" if b < 10**9 else f"> {a}" for a, b in zip(LENGTH_BINS, LENGTH_BINS[1:])]
    res["by_length"] = table(df, pd.cut(df[C.LENGTH], LENGTH_BINS, labels=labels, include_lowest=True))
    rating = df[C.RATING].map(lambda r: "1 or 10" if r in (1, 10) else "4 or 7" if r in (4, 7)
                              else "2-3 or 8-9" if r in (2, 3, 8, 9) else "unknown")
    res["by_rating"] = table(df, rating)
    s_right, n_right = right(df.student, y), right(df.ngram, y)
    disagree = (df.student >= 0.5) != (df.ngram >= 0.5)
    res["disagreements"] = {"rows": int(disagree.sum()), "student_right": int((disagree & s_right).sum()),
                            "ngram_right": int((disagree & n_right).sum()),
                            "both_wrong": int((~s_right & ~n_right).sum()),
                            "both_right": int((s_right & n_right).sum())}
    gap = (df.student - df.ngram).abs()
    top = df.assign(gap=gap).sort_values("gap", ascending=False).head(args.show)
    res["largest_disagreements"] = [
        {"review_id": r[C.REVIEW_ID], "label": int(r[C.LABEL]), "rating": int(r[C.RATING]) if pd.notna(r[C.RATING]) else None,
         "length": int(r[C.LENGTH]), "student": round(float(r.student), 4), "ngram": round(float(r.ngram), 4),
         "start": r[C.TEXT][:160], "end": r[C.TEXT][-160:]} for _, r in top.iterrows()]
    long_ = df[C.LENGTH] > args.maxlen
    res["truncated_rows"] = int(long_.sum())
    print(f"{len(df):,} val reviews; {res['truncated_rows']:,} longer than maxlen {args.maxlen}\n")
    print(markdown(res["overall"], "val") + "\n")
    print(markdown(res["by_length"], "ids before truncation") + "\n")
    print(markdown(res["by_rating"], "rating") + "\n")
    d = res["disagreements"]
    print(f"student and n-gram disagree on {d['rows']:,} reviews: the student is right on {d['student_right']:,}, "
          f"the n-gram model on {d['ngram_right']:,}; both are wrong on {d['both_wrong']:,}\n")
    for r in res["largest_disagreements"]:
        print(f"- {r['review_id']} (label {r['label']}, rating {r['rating']}, {r['length']} ids): student "
              f"{r['student']:.3f}, n-gram {r['ngram']:.3f}\n"
              + textwrap.indent(textwrap.fill(f"start: {r['start']!r}", 100) + "\n"
                                + textwrap.fill(f"end: {r['end']!r}", 100), "    "))
    write_results("errors", res)


if __name__ == "__main__":
    main()
