"""Shared fixtures: one Spark session per test run, and the real datasets when present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from reviewpipe.config import PipelineConf, load_conf  # noqa: E402

SHARED = Path(os.environ.get("REVIEWPIPE_SHARED", ROOT.parent / "shared" / "datasets"))
ACLIMDB_TARBALL = SHARED / "aclImdb_train.tar.gz"
IMDB_CSV = SHARED / "imdb_train_reviews.csv.gz"


def require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real dataset {path} is absent (set REVIEWPIPE_SHARED to its folder)")
    return path


@pytest.fixture(scope="session")
def conf() -> PipelineConf:
    return load_conf(ROOT / "conf" / "pipeline.toml",
                     [f"spark.defaults_file={ROOT / 'conf' / 'spark-defaults.conf'}",
                      f"data.checksums={ROOT / 'conf' / 'SHA256SUMS'}"])


@pytest.fixture(scope="session")
def spark(conf):
    """A local[2] session shared by every Spark test (starting one costs ~10 s)."""
    from reviewpipe.session import build_session

    session = build_session(conf, master="local[2]",
                            extra={"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "3g"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def extracted_aclimdb(tmp_path_factory, conf):
    """The shared aclImdb tarball, verified and extracted once per test session."""
    from reviewpipe import datasets

    tarball = require(ACLIMDB_TARBALL)
    known = datasets.load_checksums(conf.data.checksums)
    res = datasets.Resolution(tarball, datasets.verify(tarball, known))
    return datasets.extract(res, tmp_path_factory.mktemp("extract"))
