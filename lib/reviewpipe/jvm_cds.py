"""A class-data-sharing archive (AppCDS) for the Spark driver JVM: shorter start-up.

Every job pays the JVM's start-up: on a 2-core machine, building the SparkSession and running
the first query load and verify some 20,000 classes, about 12 s before any data is read.
Java 13+ can write the classes one run loaded into an archive (``-XX:ArchiveClassesAtExit``)
and map that archive at later starts (``-XX:SharedArchiveFile``), which skips parsing and
verifying them; measured here, session start-up fell from 8.5 s to 5.5 s and the first
query from 3.7 s to 1.8 s.

``make setup`` builds the archive once, inside the virtual environment (it belongs to that
environment's Spark jars and to this JDK), by running ``cds_workload.py`` under spark-submit:
an ingest, a ``prepare`` and a scoring pass on a few generated rows in a temporary folder,
which load the classes real jobs load (the Makefile builds it again when that run changes).
Nothing it writes is kept but the archive.  This module imports
nothing of the package, so ``session`` can import it.

The archive is only an accelerator.  Without it (or if the JDK rejects it, for example after
a Java upgrade) every job runs the same, only slower to start; ``java_options`` silences the
JVM's CDS messages so a stale archive costs start-up time and nothing else.  Executors on a
cluster start their own JVMs and do not use it.

    python -m reviewpipe.jvm_cds build      # what make setup runs
    python -m reviewpipe.jvm_cds options    # the driver JVM flags (empty without an archive)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHIVE_NAME = "spark-cds.jsa"
_QUIET = ["-Xshare:auto", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]


def archive_path() -> Path:
    """The archive of this interpreter's environment (``<venv>/spark-cds.jsa``)."""
    return Path(sys.prefix) / ARCHIVE_NAME


def java_options(path: Path | None = None) -> list[str]:
    """Driver JVM flags that map the archive; none when it has not been built."""
    path = path or archive_path()
    return [f"-XX:SharedArchiveFile={path}", *_QUIET] if path.is_file() else []


def build(archive: Path | None = None) -> Path:
    """Run ``cds_workload.py`` under spark-submit with ``-XX:ArchiveClassesAtExit``; the archive
    is written by the JVM as it exits, then moved into place."""
    archive = archive or archive_path()
    submit = Path(sys.executable).with_name("spark-submit")
    with tempfile.TemporaryDirectory(prefix="reviewpipe-cds-") as tmp:
        partial = Path(tmp) / ARCHIVE_NAME
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        cmd = [str(submit), "--master", "local[2]",
               "--driver-java-options", f"-XX:ArchiveClassesAtExit={partial} {' '.join(_QUIET[1:])}",
               str(Path(__file__).with_name("cds_workload.py")), tmp]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not partial.is_file():
            raise RuntimeError(f"the class-loading run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        shutil.move(str(partial), archive)
    return archive


def main(argv: list[str]) -> int:
    if argv[:1] == ["options"]:
        print(" ".join(java_options()))
        return 0
    if argv[:1] == ["build"]:
        try:
            path = build()
        except (OSError, RuntimeError) as e:  # an accelerator: setup goes on without it
            print(f"warning: no JVM class-data archive ({e}); Spark jobs start slower but work", file=sys.stderr)
            return 0
        print(f"JVM class-data archive: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
        return 0
    print("usage: python -m reviewpipe.jvm_cds build | options", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
