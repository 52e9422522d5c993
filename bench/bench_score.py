"""Scoring benchmark: where the scoring job's time goes, against direct predict, side by side.

On the labelled reviews (a CSV of raw text, 25,000 by default, and the same reviews 4 times
over, 100,000, each copy made distinct), with one model run, one after the other in this run:

  anchor     in-process: the job's own tokenizer, engine (score.engine) and length-aware
             batching (Arrow batches of score.arrow_batch_rows sorted by length, model
             batches of score.batch_size cropped to their longest row), on all cores, no
             Spark; also with the other engines (anchor_xla, anchor_keras) on the same texts
  job        jobs/score.py through spark-submit on local[2]: the whole job (spark-submit to
             exit), its UDF phase (scoring and writing) and its other phases
  baseline   the same job from the code the scoring issue measured (--baseline-ref, a git
             worktree), on the same input and model, as its Makefile and setup ran it (PySpark
             and reviewpipe imported from source zips): the whole-job target is >= 2x; the
             job and this baseline alternate --repeat times and the ratio is of the medians;
             also once with the properties file, and with this setup's compiled imports
  per-row    a plain Python UDF calling the model once per row (the job's engine), on a
             sample, extrapolated
  cluster    the job on local-cluster[N,1,2048] (N executor processes, one core each), N = 1, 2

Prints rows/s and the ratios the issue names, the model loads per worker (from the
executors' stderr) and the job's phases.  Writes bench/results/score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import ROOT, write_results

from reviewpipe import constants as C
from reviewpipe import pypath

DEFAULT_CSV = ROOT.parent / "shared" / "datasets" / "imdb_train_reviews.csv.gz"
BASELINE_REF = "9494418"  # the scoring job as issue 18 measured it (before label-optional input)
PER_ROW_SAMPLE = 300


def write_inputs(csv_path: Path, tmp: Path, copies: int) -> tuple[Path, int, Path, int]:
    import pandas as pd

    df = pd.read_csv(csv_path)
    small = tmp / "reviews_25k.csv"
    df.to_csv(small, index=False)
    # distinct copies: a duplicate text would be quarantined as a duplicate, not scored
    big = pd.concat([df.assign(review=df["review"] + (f" copy{i}" if i else "")) for i in range(copies)])
    large = tmp / f"reviews_{copies * len(df) // 1000}k.csv"
    big.to_csv(large, index=False)
    return small, len(df), large, len(big)


def anchor(run_dir: str, csv_path: Path, conf, engine: str) -> dict:
    """Direct in-process predict with the job's tokenizer, batching and engine, on all cores."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from reviewpipe import score as S

    texts = pd.read_csv(csv_path)["review"]
    run = S.check_run(run_dir)
    engine, _ = S.resolve_engine(run, engine)  # onnx: makes model.onnx first if the run has none
    t0 = time.perf_counter()
    predictor = S.predictor_for(run, replace(conf.score, tf_threads=0), engine)[0]()  # every core
    load = time.perf_counter() - t0
    step, bs = conf.score.arrow_batch_rows, conf.score.batch_size
    predictor(predictor.encode(pa.array(texts[:bs], pa.string()))[0])  # warm-up: tracing
    t_tok = t_pred = 0.0
    out = []
    for start in range(0, len(texts), step):
        t = time.perf_counter()
        ids = predictor.encode(pa.array(texts[start:start + step], pa.string()))[0]
        order = predictor.order(ids)
        ids = ids[order] if order is not None else ids
        t_tok += time.perf_counter() - t
        t = time.perf_counter()
        probs = np.concatenate([predictor(ids[b:b + bs]).reshape(-1) for b in range(0, len(ids), bs)])
        t_pred += time.perf_counter() - t
        if order is not None:
            back = np.empty_like(probs)
            back[order] = probs
            probs = back
        out.append(probs)
    rows = len(texts)
    return {"rows": rows, "engine": predictor.engine, "model_load_seconds": round(load, 2), "tokenize_seconds": round(t_tok, 2),
            "predict_seconds": round(t_pred, 2), "rows_per_second": round(rows / (t_tok + t_pred), 1),
            "mean_probability": round(float(np.concatenate(out).mean()), 6)}


def median_run(runs: list[dict]) -> dict:
    """The run with the median whole-job wall time, with every run's wall time beside it."""
    mid = sorted(runs, key=lambda r: r["wall_seconds"])[(len(runs) - 1) // 2]
    return {**mid, "wall_seconds_each": [r["wall_seconds"] for r in runs]}


def score_java_opts() -> str:
    """The driver JVM options the Makefile's scoring targets add (SCORE_JAVA_OPTS)."""
    return subprocess.run(["make", "-s", "--no-print-directory", "print-SCORE_JAVA_OPTS"], capture_output=True,
                          text=True, cwd=ROOT, check=True).stdout.strip()


def job(code_root: Path, zip_path: Path, conf_file: Path, master: str, csv_path: Path, model: str, out: Path,
        cwd: Path, properties: bool = True, java_opts: str = "", pyspark_zips: bool = False,
        extra: tuple[str, ...] = ()) -> dict:
    """jobs/score.py of ``code_root`` through spark-submit, as its Makefile launches it (the
    current one passes conf/spark-defaults.conf as --properties-file and SCORE_JAVA_OPTS); the
    whole job timed from outside.  ``pyspark_zips``: its Python processes import PySpark from
    the source zips, as before the venv's site hook (reviewpipe.pypath)."""
    venv = ROOT / ".venv" / "bin"
    cds = subprocess.run([str(venv / "python"), "-m", "reviewpipe.jvm_cds", "options"], capture_output=True,
                         text=True, cwd=ROOT).stdout.strip()
    cds = f"{cds} {java_opts}".strip()
    props = ["--properties-file", str(code_root / "conf" / "spark-defaults.conf")] if properties else []
    cmd = [str(venv / "spark-submit"), "--master", master, *props, "--py-files", str(zip_path), "--driver-java-options",
           f"-Dlog4j2.configurationFile={ROOT / 'conf' / 'log4j2.properties'} {cds}",
           str(code_root / "jobs" / "score.py"), "--input", str(csv_path), "--model", model,
           "--output", str(out), "--run-date", "2026-01-01", "--conf", str(conf_file),
           "--set", f"spark.defaults_file={code_root / 'conf' / 'spark-defaults.conf'}", *extra]  # cwd: scratch
    env = {**os.environ, "PYSPARK_PYTHON": str(venv / "python"), "PYSPARK_DRIVER_PYTHON": str(venv / "python")}
    env.pop(pypath.KEEP_ENV, None)
    if pyspark_zips:
        env[pypath.KEEP_ENV] = "1"
    from pyspark.find_spark_home import _find_spark_home

    work = Path(_find_spark_home()) / "work"  # local-cluster's executor folders: their stderr holds the loads
    before = set(work.glob("app-*"))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    made = set(work.glob("app-*")) - before
    logs = proc.stderr + "".join(f.read_text(errors="replace") for d in made for f in d.glob("*/stderr"))
    for d in made:
        shutil.rmtree(d, ignore_errors=True)
    if proc.returncode:
        sys.exit(f"scoring job failed ({master}, {code_root}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / C.SCORES_REPORTS / "run_date=2026-01-01" / C.SCORE_SUMMARY).read_text())
    loads = re.findall(r"reviewpipe score: loaded model run \S+ in ([0-9.]+) s", logs)
    rows = summary["rows_scored"]
    return {"master": master, "rows": rows, "wall_seconds": round(wall, 2), "job_rows_per_second": round(rows / wall, 1),
            "score_seconds": summary["seconds"], "udf_phase_seconds": summary["score_seconds"],
            "udf_phase_rows_per_second": summary["rows_per_second"], "phases": summary.get("phase_seconds"),
            "engine": summary.get("engine"),
            "model_loads": len(loads) if loads else None, "model_load_seconds": [float(x) for x in loads]}


PER_ROW = r'''
import sys, time, json
sys.path.insert(0, {lib!r})
import pandas as pd
from pyspark.sql import functions as F
from reviewpipe.config import load_conf
from reviewpipe.session import build_session
from reviewpipe import score as S
run = S.check_run({model!r})
conf = load_conf(None, ["score.length_aware=false"])  # one row: nothing to sort
spark = build_session(conf, "local[2]")
texts = pd.read_csv({csv!r})["review"][:{n}].tolist()
df = spark.createDataFrame([(str(i), t) for i, t in enumerate(texts)], "review_id string, text string").repartition(2)

def one(text):  # the model called once per row (the predictor itself is cached per worker)
    import numpy as np, pyarrow as pa
    p = S.cached(("per-row", run.path), lambda: S.predictor_for(run, conf.score, {engine!r})[0]())
    ids = p.encode(pa.array([text], pa.string()))[0]
    return float(np.asarray(p(ids)).reshape(-1)[0])

udf = F.udf(one, "double")
df.select(udf("text").alias("p")).limit(4).collect()  # the workers load the model first
t = time.perf_counter()
n = df.select(udf("text").alias("p")).write.mode("overwrite").format("noop").save()
print(json.dumps({{"rows": len(texts), "seconds": time.perf_counter() - t}}))
'''


def per_row(model: str, csv_path: Path, tmp: Path, engine: str) -> dict:
    """The model called once per row in a plain Python UDF, with the job's engine."""
    script = tmp / "per_row.py"
    script.write_text(PER_ROW.format(lib=str(ROOT / "lib"), model=model, csv=str(csv_path), n=PER_ROW_SAMPLE,
                                     engine=engine))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"per-row UDF failed:\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"sample_rows": got["rows"], "seconds": round(got["seconds"], 2),
            "rows_per_second": round(got["rows"] / got["seconds"], 1)}


def evaluate_vs_baseline(reviews: Path, model: str, here: Path, old: Path, old_zip: Path, conf_file: Path, tmp: Path,
                         jopts: str, repeat: int) -> dict:
    """make evaluate's job (the val split of a reviews table) against the baseline's, alternating;
    the ratio of the medians and the largest difference of their probabilities."""
    import pyarrow.parquet as pq

    val = ("--splits", "val")
    runs: dict = {"job": [], "baseline": []}
    for i in range(max(1, repeat)):
        runs["job"].append(job(ROOT, here, conf_file, "local[2]", reviews, model, tmp / f"eval-{i}", tmp,
                               java_opts=jopts, extra=val))
        runs["baseline"].append(job(old, old_zip, old / "conf" / "pipeline.toml", "local[2]", reviews, model,
                                    tmp / f"eval-old-{i}", tmp, properties=False, pyspark_zips=True, extra=val))
        print(f"evaluate ({runs['job'][-1]['rows']:,} val rows) {runs['job'][-1]['wall_seconds']:6.1f} s, engine "
              f"{runs['job'][-1]['engine']}; baseline {runs['baseline'][-1]['wall_seconds']:6.1f} s", flush=True)
    probs = [pq.read_table(tmp / name / "run_date=2026-01-01", columns=[C.REVIEW_ID, C.PROBABILITY]).to_pandas()
             .sort_values(C.REVIEW_ID, ignore_index=True) for name in ("eval-0", "eval-old-0")]
    if not probs[0][C.REVIEW_ID].equals(probs[1][C.REVIEW_ID]):
        sys.exit("evaluate: the job and the baseline scored different review ids")
    diff = (probs[0][C.PROBABILITY] - probs[1][C.PROBABILITY]).abs()
    job_m, old_m = median_run(runs["job"]), median_run(runs["baseline"])
    return {"job": job_m, "baseline": old_m, "ratio": round(old_m["wall_seconds"] / job_m["wall_seconds"], 3),
            "max_probability_difference": float(diff.max()),
            "labels_changed": int(((probs[0][C.PROBABILITY] >= 0.5) != (probs[1][C.PROBABILITY] >= 0.5)).sum())}


def zip_of(code_root: Path, tmp: Path, name: str, compiled: bool = True) -> Path:
    """The --py-files zip as the Makefile builds it (reviewpipe.pypath.build_zip, with .pyc), or
    with sources only, as the Makefiles before it did."""
    import zipfile

    path = tmp / f"{name}.zip"
    if compiled:
        return pypath.build_zip(path, code_root / "lib")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted((code_root / "lib" / "reviewpipe").rglob("*.py")):
            z.write(p, p.relative_to(code_root / "lib"))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a complete model run (the default model)")
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument("--copies", type=int, default=4, help="the large input: the CSV this many times over")
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the previous scoring job ('' skips)")
    ap.add_argument("--repeat", type=int, default=3, help="job and baseline runs, alternating (medians compared)")
    ap.add_argument("--skip-cluster", action="store_true")
    ap.add_argument("--evaluate-reviews", default="",
                    help="a reviews table (the main job's data/work/ingest/reviews): also time make evaluate's job, "
                         "its val split, against the baseline, alternating --repeat times, and compare probabilities")
    args = ap.parse_args()
    from reviewpipe import score as S
    from reviewpipe.config import load_conf

    conf = load_conf(ROOT / "conf" / "pipeline.toml")
    model = str(Path(args.model).resolve())
    res: dict = {"model": model}
    with tempfile.TemporaryDirectory(prefix="bench-score-") as t:
        tmp = Path(t)
        small, n_small, large, n_large = write_inputs(Path(args.csv), tmp, args.copies)
        here = zip_of(ROOT, tmp, "current")
        conf_file = ROOT / "conf" / "pipeline.toml"
        # the engine the job picks for this input on local[2] (score.engine=auto: by its bytes per core)
        engine, why = S.resolve_engine(S.check_run(model), conf.score.engine, small.stat().st_size, 2,
                                       conf.score.auto_onnx_bytes)
        res["job_engine"] = {"engine": engine, "reason": why}
        res["anchor"] = anchor(model, small, conf, engine)
        print(f"anchor (direct predict, {res['anchor']['engine']}, {n_small:,} rows) "
              f"{res['anchor']['rows_per_second']:8.1f} rows/s  tokenize {res['anchor']['tokenize_seconds']} s, "
              f"predict {res['anchor']['predict_seconds']} s", flush=True)
        for other in ("onnx", "xla", "keras"):  # the other engines on the same texts, for their ratios
            if res["anchor"]["engine"] != other:
                a = res[f"anchor_{other}"] = anchor(model, small, conf, other)
                print(f"anchor (direct predict, {a['engine']}, {n_small:,} rows) {a['rows_per_second']:8.1f} "
                      f"rows/s  tokenize {a['tokenize_seconds']} s, predict {a['predict_seconds']} s", flush=True)
        jopts = score_java_opts()
        res["java_opts"] = jopts
        old = tmp / "baseline"
        if args.baseline_ref:
            subprocess.run(["git", "worktree", "add", "-f", "--detach", str(old), args.baseline_ref], cwd=ROOT,
                           check=True, capture_output=True)
        try:
            old_zip = zip_of(old, tmp, "baseline", compiled=False) if args.baseline_ref else None
            runs: dict = {"job": [], "baseline": []}
            for i in range(max(1, args.repeat)):  # side by side, alternating: the machine's noise hits both
                runs["job"].append(job(ROOT, here, conf_file, "local[2]", small, model, tmp / f"s25-{i}", tmp,
                                       java_opts=jopts))
                print(f"job local[2], {n_small:,} rows           {runs['job'][-1]['job_rows_per_second']:8.1f} "
                      f"rows/s whole job; UDF phase {runs['job'][-1]['udf_phase_rows_per_second']} rows/s; "
                      f"engine {runs['job'][-1]['engine']}; phases {runs['job'][-1]['phases']}", flush=True)
                if args.baseline_ref:
                    # as its Makefile and setup ran it: no --properties-file (a 1g driver), PySpark
                    # and reviewpipe imported from source zips
                    runs["baseline"].append(job(old, old_zip, old / "conf" / "pipeline.toml", "local[2]", small, model,
                                                tmp / f"s25-old-{i}", tmp, properties=False, pyspark_zips=True))
                    print(f"baseline {args.baseline_ref}, {n_small:,} rows  "
                          f"{runs['baseline'][-1]['job_rows_per_second']:8.1f} rows/s whole job; UDF phase "
                          f"{runs['baseline'][-1]['udf_phase_rows_per_second']} rows/s", flush=True)
            if args.evaluate_reviews and args.baseline_ref:
                res["evaluate"] = evaluate_vs_baseline(Path(args.evaluate_reviews).resolve(), model, here, old,
                                                       old_zip, conf_file, tmp, jopts, args.repeat)
            res["job"] = median_run(runs["job"])
            if args.baseline_ref:
                res["baseline"] = median_run(runs["baseline"])
                res["baseline"]["ref"] = args.baseline_ref
                # once each: with the properties file, and with this setup's compiled imports too
                # (what the code alone gained)
                res["baseline_with_properties"] = job(old, old_zip, old / "conf" / "pipeline.toml", "local[2]", small,
                                                      model, tmp / "s25-old-p", tmp, pyspark_zips=True)
                res["baseline_this_setup"] = job(old, zip_of(old, tmp, "baseline-compiled"),
                                                 old / "conf" / "pipeline.toml", "local[2]", small, model,
                                                 tmp / "s25-old-s", tmp)
                for key in ("baseline_with_properties", "baseline_this_setup"):
                    print(f"{key} {args.baseline_ref}, {n_small:,} rows  {res[key]['job_rows_per_second']:8.1f} "
                          f"rows/s whole job; UDF phase {res[key]['udf_phase_rows_per_second']} rows/s", flush=True)
        finally:
            if args.baseline_ref:
                subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
        res["job_large"] = job(ROOT, here, conf_file, "local[2]", large, model, tmp / "s100", tmp, java_opts=jopts)
        print(f"job local[2], {n_large:,} rows          {res['job_large']['job_rows_per_second']:8.1f} rows/s whole job; "
              f"UDF phase {res['job_large']['udf_phase_rows_per_second']} rows/s; engine {res['job_large']['engine']}",
              flush=True)
        res["per_row"] = per_row(model, small, tmp, res["anchor"]["engine"])
        print(f"row-at-a-time UDF, {PER_ROW_SAMPLE} rows, {res['anchor']['engine']} "
              f"{res['per_row']['rows_per_second']:8.1f} rows/s "
              f"(25k extrapolated: {n_small / res['per_row']['rows_per_second']:.0f} s)", flush=True)
        if not args.skip_cluster:
            for n in (1, 2):
                key = f"cluster_{n}"
                res[key] = job(ROOT, here, conf_file, f"local-cluster[{n},1,2048]", small, model, tmp / key, tmp,
                               java_opts=jopts)
                print(f"local-cluster, {n} worker(s), {n_small:,}   {res[key]['job_rows_per_second']:8.1f} rows/s whole "
                      f"job; UDF phase {res[key]['udf_phase_rows_per_second']} rows/s; model loads {res[key]['model_loads']}",
                      flush=True)
    a, j = res["anchor"]["rows_per_second"], res["job"]
    ratios = {"udf_phase_vs_anchor": round(j["udf_phase_rows_per_second"] / a, 3),
              "udf_phase_vs_per_row": round(j["udf_phase_rows_per_second"] / res["per_row"]["rows_per_second"], 1),
              "whole_job_vs_anchor": round(j["job_rows_per_second"] / a, 3)}
    for other in ("onnx", "xla", "keras"):
        if f"anchor_{other}" in res:
            ratios[f"anchor_vs_anchor_{other}"] = round(a / res[f"anchor_{other}"]["rows_per_second"], 3)
    if "baseline" in res:
        ratios["whole_job_vs_baseline"] = round(j["job_rows_per_second"] / res["baseline"]["job_rows_per_second"], 3)
        ratios["whole_job_vs_baseline_with_properties"] = round(
            j["job_rows_per_second"] / res["baseline_with_properties"]["job_rows_per_second"], 3)
        ratios["whole_job_vs_baseline_this_setup"] = round(
            j["job_rows_per_second"] / res["baseline_this_setup"]["job_rows_per_second"], 3)
        ratios["udf_phase_vs_baseline"] = round(j["udf_phase_rows_per_second"] /
                                                res["baseline"]["udf_phase_rows_per_second"], 3)
    if "evaluate" in res:
        ratios["evaluate_vs_baseline"] = res["evaluate"]["ratio"]
        print(f"evaluate: largest probability difference to the baseline {res['evaluate']['max_probability_difference']:.2e}, "
              f"labels changed {res['evaluate']['labels_changed']}")
    if "cluster_1" in res:
        ratios["cluster_2_vs_1"] = round(res["cluster_2"]["job_rows_per_second"] / res["cluster_1"]["job_rows_per_second"], 3)
    res["ratios"] = ratios
    print("\nratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items())
          + "\ntargets: udf_phase_vs_anchor >= 0.8, udf_phase_vs_per_row >= 10, whole_job_vs_baseline >= 2"
          + (", evaluate_vs_baseline >= 2" if "evaluate" in res else ""))
    write_results("score", res)


if __name__ == "__main__":
    main()
