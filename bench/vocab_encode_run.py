"""One measured run (a fresh process): Spark vocab+encode, or a Keras anchor, on a texts file."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import ROOT  # noqa: E402,F401
from procmem import TreeSampler  # noqa: E402

MAXLEN, NUM_WORDS = 400, 20000


def _session(mode: str):
    from reviewpipe.config import load_conf
    from reviewpipe.session import build_session

    conf = load_conf(str(ROOT / "conf" / "pipeline.toml"),
                     [f"tokenizer.mode={mode}", f"vocab.num_words={NUM_WORDS}", f"encode.maxlen={MAXLEN}",
                      f"spark.defaults_file={ROOT / 'conf' / 'spark-defaults.conf'}"])
    return conf, build_session(conf, master="local[2]")


def spark_run(reviews_dir: str, mode: str) -> dict:
    """build_vocab then encode in one session: two tokenizations."""
    from reviewpipe.encode import encode
    from reviewpipe.vocab import build_vocab

    out = tempfile.mkdtemp(prefix="bench-ve-")
    t0 = time.perf_counter()
    conf, spark = _session(mode)
    t_session = time.perf_counter() - t0
    v = build_vocab(spark, reviews_dir, f"{out}/vocab", conf)
    t_vocab = time.perf_counter() - t0 - t_session
    m = encode(spark, reviews_dir, f"{out}/vocab", f"{out}/shards", conf)
    total = time.perf_counter() - t0
    spark.stop()
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": total, "session_seconds": t_session, "vocab_seconds": t_vocab,
            "encode_seconds": total - t_session - t_vocab, "vocab_words": v["vocabulary_after_cut"],
            "fingerprint": v["fingerprint"], "rows": sum(s["rows"] for s in m["splits"].values())}


def prepare_run(reviews_dir: str, mode: str) -> dict:
    """The fused job: the same vocabulary and shards from one tokenization."""
    from reviewpipe.prepare import prepare

    out = tempfile.mkdtemp(prefix="bench-prep-")
    t0 = time.perf_counter()
    conf, spark = _session(mode)
    t_session = time.perf_counter() - t0
    res = prepare(spark, reviews_dir, f"{out}/vocab", f"{out}/shards", conf)
    total = time.perf_counter() - t0
    spark.stop()
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": total, "session_seconds": t_session, "phase_seconds": res["shards"]["phase_seconds"],
            "vocab_words": res["vocab"]["vocabulary_after_cut"],
            "fingerprint": res["vocab"]["fingerprint"], "rows": sum(s["rows"] for s in res["shards"]["splits"].values())}


def load_texts(reviews_dir: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(reviews_dir, columns=["text", "ordinal"]).sort_by("ordinal").column("text").to_pylist()


def keras_legacy(reviews_dir: str) -> dict:
    from tf_keras.preprocessing.sequence import pad_sequences
    from tf_keras.preprocessing.text import Tokenizer

    texts = load_texts(reviews_dir)
    t0 = time.perf_counter()
    tok = Tokenizer(num_words=NUM_WORDS, oov_token="[UNK]")
    tok.fit_on_texts(texts)
    t_fit = time.perf_counter() - t0
    x = pad_sequences(tok.texts_to_sequences(texts), maxlen=MAXLEN, padding="post", truncating="pre")
    return {"seconds": time.perf_counter() - t0, "fit_seconds": t_fit, "rows": len(x)}


def keras3_textvectorization(reviews_dir: str) -> dict:
    import tensorflow as tf

    texts = load_texts(reviews_dir)
    t0 = time.perf_counter()
    layer = tf.keras.layers.TextVectorization(max_tokens=NUM_WORDS, output_sequence_length=MAXLEN)
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(1024)
    layer.adapt(ds)
    t_fit = time.perf_counter() - t0
    rows = 0
    for batch in ds:
        rows += int(layer(batch).shape[0])
    return {"seconds": time.perf_counter() - t0, "fit_seconds": t_fit, "rows": rows}


if __name__ == "__main__":
    kind, reviews_dir = sys.argv[1], sys.argv[2]
    with TreeSampler(os.getpid()) as sampler:
        if kind.startswith("spark"):
            res = spark_run(reviews_dir, kind.split(":")[1])
        elif kind.startswith("prepare"):
            res = prepare_run(reviews_dir, kind.split(":")[1])
        elif kind == "keras":
            res = keras_legacy(reviews_dir)
        else:
            res = keras3_textvectorization(reviews_dir)
    res["peak_rss_mb"] = {k: round(v, 1) for k, v in sampler.peak.items()}
    print("RESULT " + json.dumps(res))
