"""Filesystem helpers that go through Hadoop's FileSystem API, so outputs can live on the
local disk, HDFS or an object store alike, and atomic publishing of an output folder."""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator


def _fs_path(spark, path: str):
    jvm = spark._jvm
    p = jvm.org.apache.hadoop.fs.Path(str(path))
    fs = p.getFileSystem(spark._jsc.hadoopConfiguration())
    if fs.getScheme() == "file":
        # The local ChecksumFileSystem leaves .crc sidecars next to every file and rejects
        # files edited by other tools; our artifacts carry their own fingerprints instead.
        fs.setWriteChecksum(False)
        fs.setVerifyChecksum(False)
    return fs, p


def qualify(spark, path: str) -> str:
    """Fully qualified URI (file:/..., hdfs://...) of ``path``."""
    fs, p = _fs_path(spark, path)
    return fs.makeQualified(p).toString()


def local_path(path: str) -> str | None:
    """The local filesystem path behind ``path`` (plain or file: URI), else None."""
    path = str(path)
    if path.startswith("file:"):
        return "/" + path[len("file:"):].lstrip("/")
    return None if "://" in path else path


def exists(spark, path: str) -> bool:
    fs, p = _fs_path(spark, path)
    return bool(fs.exists(p))


def mkdirs(spark, path: str) -> None:
    fs, p = _fs_path(spark, path)
    fs.mkdirs(p)


def delete(spark, path: str) -> None:
    fs, p = _fs_path(spark, path)
    if fs.exists(p):
        fs.delete(p, True)


def rename(spark, src: str, dst: str) -> None:
    fs, s = _fs_path(spark, src)
    _, d = _fs_path(spark, dst)
    if not fs.rename(s, d):
        raise OSError(f"could not rename {src} to {dst}")


def write_bytes(spark, path: str, data: bytes) -> None:
    fs, p = _fs_path(spark, path)
    out = fs.create(p, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()


def write_text(spark, path: str, text: str) -> None:
    write_bytes(spark, path, text.encode("utf-8"))


def read_text(spark, path: str) -> str:
    fs, p = _fs_path(spark, path)
    stream = fs.open(p)
    try:
        reader = spark._jvm.java.io.BufferedReader(spark._jvm.java.io.InputStreamReader(stream, "UTF-8"))
        chunks = []
        while (line := reader.readLine()) is not None:
            chunks.append(line)
        return "\n".join(chunks)
    finally:
        stream.close()


def write_json(spark, path: str, obj: Any) -> None:
    write_text(spark, path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(spark, path: str) -> Any:
    return json.loads(read_text(spark, path))


@contextlib.contextmanager
def staged_output(spark, out_dir: str) -> Iterator[str]:
    """Yield a staging folder next to ``out_dir``; on success swap it into place.

    A failed run leaves ``out_dir`` as it was (and removes the staging folder), so a
    half-written dataset never appears under the published name.
    """
    out_dir = str(out_dir).rstrip("/")
    tag = uuid.uuid4().hex[:8]
    staging, old = f"{out_dir}.staging-{tag}", f"{out_dir}.old-{tag}"
    delete(spark, staging)
    try:
        yield staging
    except BaseException:
        delete(spark, staging)
        raise
    fs, target = _fs_path(spark, out_dir)
    fs.mkdirs(target.getParent())
    had_old = exists(spark, out_dir)
    if had_old:
        rename(spark, out_dir, old)
    rename(spark, staging, out_dir)
    if had_old:
        delete(spark, old)


@contextlib.contextmanager
def staged_local(out_dir: str | Path) -> Iterator[Path]:
    """:func:`staged_output` for a local folder written without Spark (the TensorFlow jobs)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging, old = out.with_name(f"{out.name}.staging-{tag}"), out.with_name(f"{out.name}.old-{tag}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    had_old = out.exists()
    if had_old:
        out.rename(old)
    staging.rename(out)
    if had_old:
        shutil.rmtree(old)
