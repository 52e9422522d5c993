"""The one place a SparkSession is built.

The master is never hard-coded: spark-submit decides it, or ``--master``, and plain
``python jobs/x.py`` falls back to ``local[*]``.  Library functions receive the session;
only the job that built it stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Iterator, Mapping

from reviewpipe import native_logs
from reviewpipe.config import PipelineConf

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"


def read_spark_defaults(path: str | Path) -> dict[str, str]:
    """Parse a spark-defaults.conf file (``key value`` or ``key=value`` lines, # comments)."""
    out: dict[str, str] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\s*=\s*|\s+", line, maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{p}:{n}: expected 'key value', got {line!r}")
        out[parts[0]] = parts[1].strip()
    return out


CHECKOUT = Path(__file__).resolve().parents[2]  # lib/reviewpipe/ -> the project root (a checkout)


def defaults_path(conf: PipelineConf) -> Path | None:
    """``spark.defaults_file`` as given, else relative to the checkout (a job started from
    another folder), else None (with a warning: Spark's own defaults then apply)."""
    given = Path(conf.spark.defaults_file)
    for candidate in (given, *(() if given.is_absolute() else (CHECKOUT / given,))):
        if candidate.is_file():
            return candidate
    log.warning("spark.defaults_file %s not found (working folder %s); the session uses Spark's own defaults",
                conf.spark.defaults_file, os.getcwd())
    return None


def driver_java_options(conf: PipelineConf) -> list[str]:
    """Driver JVM flags for a session this process starts: the log4j2 file beside the
    spark-defaults file, and the class-data archive that ``make setup`` builds."""
    from reviewpipe import jvm_cds

    opts = []
    defaults = defaults_path(conf)
    log4j = defaults.with_name("log4j2.properties") if defaults else None
    if log4j and log4j.is_file():
        opts.append(f"-Dlog4j2.configurationFile={log4j.resolve().as_uri()}")
    return opts + jvm_cds.java_options()


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands the Python driver a gateway port.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(conf: PipelineConf, master: str | None = None,
                  extra: Mapping[str, str] | None = None):
    """Build (or get) the SparkSession for a job.

    Precedence for settings: spark-submit ``--conf`` > ``extra`` > ``conf/spark-defaults.conf``.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    # Executors fork Python workers with the driver's PYSPARK_PYTHON; without this, local
    # workers may pick a system python that lacks pandas/pyarrow.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    builder = SparkSession.builder.appName(conf.spark.app_name)
    launched: set[str] = set()
    if _launched_by_spark_submit():
        SparkContext._ensure_initialized()
        launched = {k for k, _ in SparkConf().getAll()}
        if master:
            builder = builder.master(master)
    else:
        builder = builder.master(master or DEFAULT_MASTER)

    defaults = defaults_path(conf)
    settings = read_spark_defaults(defaults) if defaults else {}
    if "spark.driver.extraJavaOptions" not in settings:
        settings["spark.driver.extraJavaOptions"] = " ".join(driver_java_options(conf))
    settings["spark.sql.execution.arrow.maxRecordsPerBatch"] = str(conf.spark.arrow_batch_rows)
    if native_logs.verbose():  # the Python workers (the scoring UDF's TensorFlow) keep theirs too
        settings[f"spark.executorEnv.{native_logs.VERBOSE_ENV}"] = "1"
    settings.update(extra or {})
    for key, value in settings.items():
        if key not in launched:
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(conf.spark.log_level)
    return spark


@contextlib.contextmanager
def spark_session(conf: PipelineConf, master: str | None = None,
                  extra: Mapping[str, str] | None = None) -> Iterator:
    """Context manager for jobs: builds the session and always stops it on the way out."""
    spark = build_session(conf, master=master, extra=extra)
    try:
        yield spark
    finally:
        stop(spark)


def stop(spark) -> None:
    """Stop the session.  Under spark-submit the process ends next, so only the JVM's
    SparkContext is stopped (what ``spark.stop()`` does first): PySpark's ``stop()`` then
    shuts its accumulator server down, a socketserver whose loop wakes every 0.5 s, and waits
    for it, up to half a second at the end of every job for a daemon thread that the exit
    ends anyway (docs/results.md, scoring).  Elsewhere (tests, notebooks) the session is
    stopped in full, so another can start in the same process."""
    if not _launched_by_spark_submit():
        spark.stop()
        return
    from py4j.protocol import Py4JError

    sc = spark.sparkContext
    try:
        sc._jsc.stop()  # the JVM side: tasks, listeners, the event log, the block manager
    except Py4JError:  # the JVM is already gone (SPARK-18523): nothing left to stop
        log.warning("the Spark JVM did not stop cleanly (already gone?)")
