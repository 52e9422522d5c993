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


# --- a small real pipeline shared by the trainer and scoring tests ----------------------------
N_TRAIN, N_VAL = 1200, 400
SMALL = ["vocab.num_words=3000", "encode.maxlen=160", "encode.rows_per_file=256", "encode.row_group_rows=128",
         "model.units=16", "model.embedding_dim=16", "train.batch_size=32", "train.learning_rate=0.005",
         "train.maxlen=120", "model.embedding_dropout=0.1", "model.dropout=0.1"]


def small_conf(conf, *extra):
    return load_conf(None, [f"spark.defaults_file={conf.spark.defaults_file}", *SMALL, *extra])


@pytest.fixture(scope="session")
def data(spark, conf, tmp_path_factory):
    """Real reviews -> vocab -> shards with the Spark jobs (1,200 train, 400 val)."""
    import pandas as pd

    from reviewpipe import constants as C
    from reviewpipe.encode import encode
    from reviewpipe.vocab import build_vocab

    df = pd.read_csv(require(IMDB_CSV), nrows=N_TRAIN + N_VAL)
    root = tmp_path_factory.mktemp("pipeline")
    rows = [(f"csv/{i}", C.TRAIN if i < N_TRAIN else C.VAL, int(s == "positive"), None, t, "test", i)
            for i, (t, s) in enumerate(zip(df["review"], df["sentiment"]))]
    (spark.createDataFrame(rows, "review_id string, split string, label tinyint, rating tinyint, text string, "
                                 "source string, ordinal long")
     .write.partitionBy(C.SPLIT).parquet(str(root / "reviews")))
    c = small_conf(conf)
    build_vocab(spark, str(root / "reviews"), str(root / "vocab"), c)
    encode(spark, str(root / "reviews"), str(root / "vocab"), str(root / "shards"), c)
    return {"root": root, "texts": df["review"].tolist(), "conf": c}


@pytest.fixture(scope="session")
def run(data):
    from reviewpipe.train import train

    metrics = train(str(data["root"] / "shards"), str(data["root"] / "vocab"), str(data["root"] / "runs"),
                    small_conf(data["conf"], "train.epochs=3"), run_id="r1", verbose=0)
    return data["root"] / "runs" / "r1", metrics
