from __future__ import annotations

from reviewpipe import jvm_cds
from reviewpipe.config import load_conf
from reviewpipe.session import driver_java_options


def test_no_archive_means_no_flags(tmp_path):
    assert jvm_cds.java_options(tmp_path / jvm_cds.ARCHIVE_NAME) == []


def test_an_archive_is_mapped_quietly(tmp_path):
    archive = tmp_path / jvm_cds.ARCHIVE_NAME
    archive.write_bytes(b"\0")
    assert jvm_cds.java_options(archive) == [f"-XX:SharedArchiveFile={archive}", "-Xshare:auto",
                                             "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]


def test_driver_options_name_log4j_then_the_archive(tmp_path, monkeypatch):
    archive = tmp_path / jvm_cds.ARCHIVE_NAME
    archive.write_bytes(b"\0")
    monkeypatch.setattr(jvm_cds, "archive_path", lambda: archive)
    opts = driver_java_options(load_conf("conf/pipeline.toml"))
    assert opts[0].startswith("-Dlog4j2.configurationFile=file:") and opts[0].endswith("/conf/log4j2.properties")
    assert opts[1] == f"-XX:SharedArchiveFile={archive}"
    archive.unlink()
    assert len(driver_java_options(load_conf("conf/pipeline.toml"))) == 1


def test_the_cli_prints_the_flags_or_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(jvm_cds, "archive_path", lambda: tmp_path / "missing.jsa")
    assert jvm_cds.main(["options"]) == 0
    assert capsys.readouterr().out == "\n"
    assert jvm_cds.main(["bogus"]) == 2
