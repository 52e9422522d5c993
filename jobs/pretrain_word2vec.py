"""spark-submit entry point: Spark Word2Vec over train+unsup -> vectors aligned to the vocabulary.

Train with them: make train SET="model.embedding_init=word2vec:<OUTPUT>".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe.session import spark_session  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "pretrain_word2vec", __doc__,
        "spark-submit --py-files dist/reviewpipe.zip jobs/pretrain_word2vec.py --reviews data/work/ingest/reviews "
        "--vocab data/work/vocab --output data/work/word2vec --set word2vec.dim=100")
    parser.add_argument("--reviews", required=True, help="the ingest job's reviews/ folder")
    parser.add_argument("--vocab", required=True, help="vocabulary artifact to align the vectors to")
    parser.add_argument("--output", required=True, help="local folder for vectors.npy, the projector files, word2vec.json")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)
    from reviewpipe.word2vec import pretrain

    with spark_session(conf, master=args.master) as spark:
        spec = pretrain(spark, args.reviews, args.vocab, args.output, conf)
    print(json.dumps({k: spec[k] for k in ("dim", "documents", "coverage", "with_vector", "vocab_words", "seconds")}))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
