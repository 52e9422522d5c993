"""The data step: find the aclImdb archive, verify its SHA-256, extract it once.

Search order: an explicit path (``--archive`` / ``IMDB_ARCHIVE`` / ``data.archive``), then
``data.raw_dir``, then the local mirror ``data.mirror_dir``, then the official URL.  A
source that is missing or fails its checksum is reported, never replaced by invented data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from reviewpipe import constants as C
from reviewpipe.config import DataConf

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


class DataNotFoundError(FileNotFoundError):
    """No usable archive was found; the message lists every place tried."""


class ChecksumError(ValueError):
    """An archive's SHA-256 is not the one recorded in conf/SHA256SUMS."""


def load_checksums(path: str | Path) -> dict[str, str]:
    """Read a sha256sum-format file into {file name: hex digest}."""
    out: dict[str, str] = {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checksum file {str(p)!r} not found (data.checksums)")
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{p}:{n}: expected '<sha256>  <file name>', got {line!r}")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, known: dict[str, str]) -> str:
    """Return the archive's digest if it is one of the known ones, else raise ChecksumError."""
    digest = sha256_file(path)
    if digest not in known.values():
        raise ChecksumError(
            f"{path}: SHA-256 {digest} matches none of the archives in conf/SHA256SUMS "
            f"({', '.join(sorted(known))}); the file is corrupt or not aclImdb. If it is a "
            f"trusted copy, add its checksum line to conf/SHA256SUMS.")
    expected = known.get(path.name)
    if expected is not None and expected != digest:
        raise ChecksumError(f"{path}: SHA-256 {digest} differs from {expected} recorded for {path.name}")
    return digest


@dataclass
class Resolution:
    archive: Path
    digest: str
    tried: list[str] = field(default_factory=list)


def _candidates(conf: DataConf, archive: str | None) -> list[tuple[str, Path]]:
    explicit = archive or os.environ.get("IMDB_ARCHIVE") or conf.archive
    out: list[tuple[str, Path]] = []
    if explicit:
        out.append(("given path", Path(explicit)))
    for base, what in ((conf.raw_dir, "data.raw_dir"), (conf.mirror_dir, "mirror")):
        for name in C.ACLIMDB_ARCHIVES:
            out.append((what, Path(base) / name))
    return out


def _download(url: str, dest: Path, timeout: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        done, last = 0, 0.0
        while chunk := resp.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if time.monotonic() - last > 2:
                last = time.monotonic()
                pct = f"{100 * done / total:5.1f}%" if total else ""
                print(f"\rdownloading {url} {done >> 20} MiB {pct}", end="", file=sys.stderr)
    print(file=sys.stderr)
    part.replace(dest)


def resolve_archive(conf: DataConf, archive: str | None = None, allow_download: bool = True) -> Resolution:
    """Find and verify the archive, trying each source in order."""
    known = load_checksums(conf.checksums)
    tried: list[str] = []
    explicit = archive or os.environ.get("IMDB_ARCHIVE") or conf.archive
    for what, path in _candidates(conf, archive):
        if not path.is_file():
            tried.append(f"{what}: {path} (not found)")
            if what == "given path":
                # A path the user typed must exist; silently looking elsewhere would hide a typo.
                raise DataNotFoundError(f"archive {str(path)!r} given by --archive/IMDB_ARCHIVE does not exist")
            continue
        digest = verify(path, known)
        log.info("using %s archive %s (sha256 %s…)", what, path, digest[:12])
        return Resolution(path, digest, tried)
    if allow_download and not explicit:
        dest = Path(conf.raw_dir) / C.ACLIMDB_ARCHIVES[0]
        try:
            log.info("downloading %s", conf.url)
            _download(conf.url, dest, conf.download_timeout_s)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            tried.append(f"url: {conf.url} ({e})")
        else:
            return Resolution(dest, verify(dest, known), tried)
    raise DataNotFoundError(
        "no aclImdb archive found. Tried, in order:\n  " + "\n  ".join(tried) +
        "\nGive one with IMDB_ARCHIVE=/path/to/aclImdb_v1.tar.gz (or --archive), or place it in "
        f"{conf.raw_dir}/.")


class _Progress:
    """File wrapper that reports how far through the compressed archive extraction is."""

    def __init__(self, f, total: int, label: str):
        self._f, self._total, self._label, self._last = f, max(total, 1), label, 0.0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        now = time.monotonic()
        if now - self._last > 1 or not data:
            self._last = now
            pct = 100 * self._f.tell() / self._total
            print(f"\rextracting {self._label}: {pct:5.1f}%", end="" if data else "\n", file=sys.stderr)
        return data

    def __getattr__(self, name):
        return getattr(self._f, name)


def extract(resolution: Resolution, extract_dir: str | Path) -> Path:
    """Extract the archive once under ``extract_dir/<digest prefix>/`` and return the
    ``aclImdb`` root.  A completed extraction (marker file present) is reused as is."""
    dest = Path(extract_dir) / resolution.digest[:16]
    marker = dest / C.EXTRACTED_MARKER
    root = dest / "aclImdb"
    if marker.is_file() and root.is_dir():
        log.info("already extracted: %s", root)
        return root
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    members = 0
    with open(resolution.archive, "rb") as raw:
        wrapped = _Progress(raw, resolution.archive.stat().st_size, resolution.archive.name)
        with tarfile.open(fileobj=wrapped, mode="r|*") as tar:
            for member in tar:
                # The 'data' filter refuses absolute paths, '..', devices and links out of the tree.
                tar.extract(member, tmp, filter="data")
                members += 1
    if not (tmp / "aclImdb").is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{resolution.archive}: no aclImdb/ folder inside the archive")
    (tmp / C.EXTRACTED_MARKER).write_text(json.dumps(
        {"archive": str(resolution.archive), "sha256": resolution.digest, "members": members}, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info("extracted %d members to %s", members, root)
    return root


def provision(conf: DataConf, archive: str | None = None, allow_download: bool = True) -> Path:
    """Resolve, verify and extract; return the extracted ``aclImdb`` directory."""
    return extract(resolve_archive(conf, archive, allow_download), conf.extract_dir)
