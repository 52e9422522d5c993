"""Where the driver and Spark's Python workers import their code from, byte-compiled.

Two costs every Spark Python process paid on each start, both from source zips that Python's
``zipimport`` compiles on every import (it never writes ``.pyc`` files):

* **PySpark itself.** ``spark-submit`` and Spark's Python workers put the PySpark and py4j
  source zips that the pip package ships (``pyspark/python/lib/*.zip``) first on
  ``PYTHONPATH`` (``PythonUtils.sparkPythonPath``), ahead of the same package installed in
  the venv.  The venv's ``.pth`` file (:func:`install`, run by ``make setup``) drops those
  zips from ``sys.path`` at interpreter start-up when they are the installed package's own
  (the same files, byte-compiled in site-packages), so the driver, the daemon and every
  worker import the compiled package.  ``REVIEWPIPE_PYSPARK_ZIPS=1`` keeps them.  The
  ``.pth`` runs a copy of this file installed beside it (``_reviewpipe_pypath.py``), so it
  imports nothing of reviewpipe (whose code on the path may be another checkout's, or a
  ``--py-files`` zip); what runs at every start uses ``os`` and ``sys`` only.
* **reviewpipe.** The ``--py-files`` zip (:func:`build_zip`) carries each module's ``.pyc``
  (unchecked-hash, so no source timestamp is compared) beside its ``.py``; a Python of
  another version finds the wrong magic number and imports the ``.py`` instead.

Measured in docs/results.md (scoring, 2026-12-06).
"""

from __future__ import annotations

import os
import sys

KEEP_ENV = "REVIEWPIPE_PYSPARK_ZIPS"  # set to 1: keep PySpark's source zips on sys.path
PTH_NAME = "reviewpipe-pyspark-site.pth"
HOOK_MODULE = "_reviewpipe_pypath"  # this file, copied into site-packages by install()
PTH_LINE = f"import {HOOK_MODULE}; {HOOK_MODULE}.apply()\n"  # run by site.py at every start


def _norm(p: str) -> str:
    return os.path.normcase(os.path.abspath(p))


def _is_file(*parts: str) -> bool:
    return os.path.isfile(os.path.join(*parts))


def shipped_zips(paths) -> list[str]:
    """The entries of ``paths`` that are source zips shipped inside an installed PySpark
    (``<site>/pyspark/python/lib/``) whose site directory is on ``paths`` too, with the
    package there, and for py4j's zip, a py4j of the zip's version installed beside it:
    dropping them imports the same code, compiled."""
    on_path = {_norm(p) for p in paths if p}
    out = []
    for p in paths:
        if not p or not p.endswith(".zip"):
            continue
        lib, name = os.path.split(_norm(p))
        pkg, tail = os.path.split(lib)  # .../site/pyspark, "python/lib"
        if tail != "lib" or os.path.basename(pkg) != "python":
            continue
        pkg = os.path.dirname(pkg)
        site = os.path.dirname(pkg)
        if os.path.basename(pkg) != "pyspark" or site not in on_path or not _is_file(pkg, "__init__.py"):
            continue
        if name == "pyspark.zip":
            out.append(p)
        elif name.startswith("py4j-") and name.endswith("-src.zip"):
            version = name[len("py4j-"):-len("-src.zip")]
            if _is_file(site, "py4j", "__init__.py") and os.path.isdir(os.path.join(site, f"py4j-{version}.dist-info")):
                out.append(p)
    return out


def apply(path: list[str] | None = None) -> list[str]:
    """Drop :func:`shipped_zips` from ``path`` (``sys.path``) in place, unless
    ``REVIEWPIPE_PYSPARK_ZIPS=1``; returns what was dropped."""
    path = sys.path if path is None else path
    if os.environ.get(KEEP_ENV) == "1":
        return []
    drop = set(shipped_zips(path))
    if drop:
        path[:] = [p for p in path if p not in drop]
    return sorted(drop)


def install(site_dir: str | None = None):
    """Copy this file into ``site_dir`` (this interpreter's site-packages) as
    ``_reviewpipe_pypath.py`` and write the ``.pth`` file that runs it; returns the ``.pth``."""
    import shutil
    import sysconfig
    from pathlib import Path

    site = Path(site_dir or sysconfig.get_paths()["purelib"])
    shutil.copyfile(__file__, site / f"{HOOK_MODULE}.py")
    target = site / PTH_NAME
    target.write_text(PTH_LINE)
    return target


def build_zip(dest, lib_root, package: str = "reviewpipe"):
    """The ``--py-files`` zip of ``lib_root/package``: every ``.py`` and its ``.pyc`` for this
    Python (unchecked-hash: the zip is rebuilt whenever a source changes)."""
    import py_compile
    import zipfile
    from pathlib import Path

    lib_root, dest = Path(lib_root), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for src in sorted((lib_root / package).rglob("*.py")):
            rel = src.relative_to(lib_root).as_posix()
            z.write(src, rel)
            pyc = tmp.with_name(tmp.name + ".pyc")
            py_compile.compile(str(src), cfile=str(pyc), dfile=rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            z.write(pyc, rel[:-3] + ".pyc")
            pyc.unlink()
    os.replace(tmp, dest)
    return dest


def check() -> str:
    """Where a fresh interpreter, given PySpark's own zips first on ``PYTHONPATH`` as
    spark-submit and Spark's workers give them, imports ``pyspark`` from; raises if from a zip."""
    import subprocess

    import pyspark

    lib = os.path.join(os.path.dirname(pyspark.__file__), "python", "lib")
    zips = sorted(os.path.join(lib, f) for f in os.listdir(lib) if f.endswith(".zip"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(zips)}
    env.pop(KEEP_ENV, None)
    got = subprocess.run([sys.executable, "-c", "import pyspark, py4j; print(pyspark.__file__); print(py4j.__file__)"],
                         env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    zipped = [f for f in got if ".zip" + os.sep in f]
    if zipped:
        raise RuntimeError(f"{', '.join(zipped)} imported from a zip: the site hook is not installed (make setup)")
    return got[0]


def _main(argv) -> int:
    args = list(argv)
    if args == ["check"]:
        print(f"pyspark imports from {check()}")
        return 0
    if args[:1] == ["install"] and len(args) <= 2:
        print(f"wrote {install(*args[1:])}")
        return 0
    if args[:1] == ["zip"] and len(args) == 3:
        print(f"built {build_zip(args[1], args[2])}")
        return 0
    print("usage: python -m reviewpipe.pypath install [SITE_DIR] | check | zip DEST LIB_ROOT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
