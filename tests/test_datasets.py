from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from reviewpipe import datasets
from reviewpipe.config import DataConf


def make_tarball(path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.delenv("IMDB_ARCHIVE", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    digest = make_tarball(src / "aclImdb_v1.tar.gz", {"aclImdb/train/pos/0_9.txt": b"great",
                                                      "aclImdb/train/urls_pos.txt": b"http://x"})
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# comment\n{digest}  aclImdb_v1.tar.gz\n")
    conf = DataConf(raw_dir=str(tmp_path / "raw"), mirror_dir=str(tmp_path / "mirror"),
                    extract_dir=str(tmp_path / "x"), checksums=str(sums), url="http://127.0.0.1:9/none.tar.gz",
                    download_timeout_s=2)
    return conf, src / "aclImdb_v1.tar.gz", digest


def test_order_given_path_then_raw_then_mirror(setup, tmp_path, monkeypatch):
    conf, tarball, digest = setup
    (tmp_path / "mirror").mkdir()
    mirror = tmp_path / "mirror" / "aclImdb_v1.tar.gz"
    mirror.write_bytes(tarball.read_bytes())
    assert datasets.resolve_archive(conf).archive == mirror
    (tmp_path / "raw").mkdir()
    raw = tmp_path / "raw" / "aclImdb_v1.tar.gz"
    raw.write_bytes(tarball.read_bytes())
    assert datasets.resolve_archive(conf).archive == raw
    monkeypatch.setenv("IMDB_ARCHIVE", str(tarball))
    assert datasets.resolve_archive(conf).archive == tarball
    assert datasets.resolve_archive(conf, archive=str(mirror)).archive == mirror


def test_given_path_that_does_not_exist_is_an_error(setup):
    conf, _, _ = setup
    with pytest.raises(datasets.DataNotFoundError, match="archive '/no/such.tar.gz' given by --archive"):
        datasets.resolve_archive(conf, archive="/no/such.tar.gz")


def test_nothing_found_lists_every_place_tried(setup):
    conf, _, _ = setup
    with pytest.raises(datasets.DataNotFoundError) as e:
        datasets.resolve_archive(conf)
    msg = str(e.value)
    assert msg.startswith("no aclImdb archive found. Tried, in order:")
    for where in ("data.raw_dir:", "mirror:", "url: http://127.0.0.1:9/none.tar.gz"):
        assert where in msg
    assert "IMDB_ARCHIVE=" in msg


def test_checksum_mismatch_is_refused(setup, tmp_path):
    conf, tarball, _ = setup
    bad = tmp_path / "aclImdb_v1.tar.gz"
    bad.write_bytes(tarball.read_bytes() + b"tampered")
    with pytest.raises(datasets.ChecksumError, match="matches none of the archives in conf/SHA256SUMS"):
        datasets.resolve_archive(conf, archive=str(bad))


def test_extract_once_then_noop(setup, capsys):
    conf, tarball, digest = setup
    res = datasets.resolve_archive(conf, archive=str(tarball))
    root = datasets.extract(res, conf.extract_dir)
    assert (root / "train" / "pos" / "0_9.txt").read_bytes() == b"great"
    assert "extracting aclImdb_v1.tar.gz" in capsys.readouterr().err
    (root / "train" / "pos" / "0_9.txt").write_bytes(b"touched")
    assert datasets.extract(res, conf.extract_dir) == root
    assert (root / "train" / "pos" / "0_9.txt").read_bytes() == b"touched"  # not extracted again


def test_path_traversal_members_are_refused(tmp_path):
    tarball = tmp_path / "evil.tar.gz"
    digest = make_tarball(tarball, {"../escape.txt": b"x", "aclImdb/train/pos/0_1.txt": b"y"})
    with pytest.raises(tarfile.OutsideDestinationError):
        datasets.extract(datasets.Resolution(tarball, digest), tmp_path / "x")
    assert not (tmp_path / "escape.txt").exists()


def test_checksum_file_format_errors(tmp_path):
    p = tmp_path / "sums"
    p.write_text("nothex  file\n")
    with pytest.raises(ValueError, match=r"sums:1: expected '<sha256>  <file name>'"):
        datasets.load_checksums(p)


def test_shipped_checksums_cover_official_and_mirror():
    from conftest import ROOT

    known = datasets.load_checksums(ROOT / "conf" / "SHA256SUMS")
    assert known["aclImdb_v1.tar.gz"] == "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
    assert known["aclImdb_train.tar.gz"] == "80ee65bcc394373907e806ab19e7c27a91f3536ad5314310ef9f961542bc2094"
