"""reviewpipe.pypath: PySpark's source zips off sys.path, and the --py-files zip with .pyc."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from reviewpipe import pypath


def fake_site(root: Path, py4j_dist: str = "0.10.9.9") -> tuple[Path, Path, Path]:
    """A site-packages with pyspark (and its shipped zips) and py4j installed."""
    site = root / "site-packages"
    lib = site / "pyspark" / "python" / "lib"
    lib.mkdir(parents=True)
    (site / "pyspark" / "__init__.py").write_text("")
    (site / "py4j").mkdir()
    (site / "py4j" / "__init__.py").write_text("")
    (site / f"py4j-{py4j_dist}.dist-info").mkdir()
    spark_zip, py4j_zip = lib / "pyspark.zip", lib / "py4j-0.10.9.9-src.zip"
    spark_zip.write_bytes(b"")
    py4j_zip.write_bytes(b"")
    return site, spark_zip, py4j_zip


def test_shipped_zips_are_the_installed_packages_own(tmp_path):
    site, spark_zip, py4j_zip = fake_site(tmp_path)
    other = tmp_path / "elsewhere" / "pyspark.zip"
    paths = [str(spark_zip), str(py4j_zip), str(other), "", str(site)]
    assert pypath.shipped_zips(paths) == [str(spark_zip), str(py4j_zip)]
    # without the site directory on the path, dropping them would lose pyspark: kept
    assert pypath.shipped_zips([str(spark_zip), str(py4j_zip)]) == []


def test_py4j_zip_of_another_version_is_kept(tmp_path):
    site, spark_zip, py4j_zip = fake_site(tmp_path, py4j_dist="0.10.9.7")
    assert pypath.shipped_zips([str(spark_zip), str(py4j_zip), str(site)]) == [str(spark_zip)]


def test_zip_without_the_package_installed_is_kept(tmp_path):
    site, spark_zip, py4j_zip = fake_site(tmp_path)
    (site / "pyspark" / "__init__.py").unlink()  # a SPARK_HOME distribution, not a pip install
    assert pypath.shipped_zips([str(spark_zip), str(py4j_zip), str(site)]) == []


def test_apply_drops_them_in_place_unless_asked_to_keep(tmp_path, monkeypatch):
    site, spark_zip, py4j_zip = fake_site(tmp_path)
    path = [str(spark_zip), "/x", str(py4j_zip), str(site)]
    monkeypatch.setenv(pypath.KEEP_ENV, "1")
    assert pypath.apply(path) == [] and len(path) == 4
    monkeypatch.delenv(pypath.KEEP_ENV)
    assert pypath.apply(path) == sorted([str(spark_zip), str(py4j_zip)])
    assert path == ["/x", str(site)]


def test_install_writes_the_hook_and_its_module(tmp_path):
    pth = pypath.install(str(tmp_path))
    assert pth == tmp_path / pypath.PTH_NAME
    assert pth.read_text() == "import _reviewpipe_pypath; _reviewpipe_pypath.apply()\n"
    assert (tmp_path / "_reviewpipe_pypath.py").read_text() == Path(pypath.__file__).read_text()


def test_this_venv_imports_pyspark_compiled_with_its_zips_first():
    """make setup installed the hook: a Python given the zips first, as Spark's workers are,
    imports the installed PySpark and py4j."""
    import pyspark

    where = pypath.check()
    assert where == str(Path(pyspark.__file__).resolve()) or Path(where).samefile(pyspark.__file__)
    assert ".zip" not in where


def test_spark_python_workers_import_pyspark_compiled(spark):
    """The claim itself: a task's Python worker, started by Spark with the zips first on its
    PYTHONPATH, runs PySpark and py4j from site-packages, and its sys.path holds neither zip."""
    import pyspark

    def where(_):
        import sys as wsys

        import py4j
        import pyspark as wpyspark
        zips = [p for p in wsys.path if p.endswith((f"{os.sep}pyspark.zip", "-src.zip"))]
        yield (wpyspark.__file__, py4j.__file__, ";".join(zips))

    got = set(spark.sparkContext.parallelize(range(2), 2).mapPartitions(where).collect())
    assert got == {(pyspark.__file__, __import__("py4j").__file__, "")}
    assert ".zip" not in pyspark.__file__


def run_from_zip(zip_path: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(zip_path)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, cwd=zip_path.parent).stdout.strip()


def test_build_zip_carries_pyc_beside_every_module(tmp_path):
    lib = tmp_path / "lib"
    (lib / "pkgz" / "sub").mkdir(parents=True)
    (lib / "pkgz" / "__init__.py").write_text("")
    (lib / "pkgz" / "sub" / "__init__.py").write_text("")
    (lib / "pkgz" / "sub" / "mod.py").write_text("VALUE = 41 + 1\n\ndef boom():\n    raise ValueError('from mod')\n")
    z = pypath.build_zip(tmp_path / "dist" / "p.zip", lib, package="pkgz")
    names = sorted(zipfile.ZipFile(z).namelist())
    assert names == ["pkgz/__init__.py", "pkgz/__init__.pyc", "pkgz/sub/__init__.py", "pkgz/sub/__init__.pyc",
                     "pkgz/sub/mod.py", "pkgz/sub/mod.pyc"]
    assert not (tmp_path / "dist" / "p.zip.tmp").exists()
    got = run_from_zip(z, "import pkgz.sub.mod as m; print(m.VALUE, m.__file__)")
    assert got == f"42 {z}/pkgz/sub/mod.pyc"
    # a traceback formatted as Spark's workers format it still shows the source line (the
    # zip's importer gives the .py)
    code = "import traceback, pkgz.sub.mod as m\ntry:\n    m.boom()\nexcept ValueError:\n    traceback.print_exc()"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(z)}, cwd=tmp_path)
    assert 'File "pkgz/sub/mod.py", line 4, in boom' in err.stderr
    assert "raise ValueError('from mod')" in err.stderr


def test_pyc_of_another_python_falls_back_to_the_source(tmp_path):
    lib = tmp_path / "lib"
    (lib / "pkgy").mkdir(parents=True)
    (lib / "pkgy" / "__init__.py").write_text("VALUE = 'source'\n")
    z = pypath.build_zip(tmp_path / "p.zip", lib, package="pkgy")
    magic = importlib.util.MAGIC_NUMBER
    with zipfile.ZipFile(z) as src:
        members = {n: src.read(n) for n in src.namelist()}
    assert members["pkgy/__init__.pyc"][:4] == magic
    members["pkgy/__init__.pyc"] = b"\x00\x00\r\n" + members["pkgy/__init__.pyc"][4:]  # another magic number
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as dst:
        for n, data in members.items():
            dst.writestr(n, data)
    assert run_from_zip(other, "import pkgy; print(pkgy.VALUE, pkgy.__file__)") == f"source {other}/pkgy/__init__.py"


def test_usage_error():
    assert pypath._main(["nope"]) == 2


@pytest.mark.parametrize("args", [["zip", "only-one"], ["install", "a", "b"]])
def test_usage_error_on_wrong_arguments(args):
    assert pypath._main(args) == 2
