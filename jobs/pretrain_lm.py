"""Pretrain the classifier's embedding and first LSTM/GRU layer as a language model.

Reads the encoded shards of lm.splits (train + unsup by default; never val or test) and
learns to predict each next word.  Not a Spark job: run it with the project's Python
(make pretrain-lm).  Train from it with: make train SET="model.encoder_init=lm:<OUTPUT>".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "pretrain_lm", __doc__,
        "python jobs/pretrain_lm.py --shards data/work/shards --vocab data/work/vocab --output data/work/lm "
        "--set model.embedding_init=word2vec:data/work/word2vec", spark=False)
    parser.add_argument("--shards", required=True, help="encoded shards folder with the lm.splits encoded")
    parser.add_argument("--vocab", required=True, help="vocabulary artifact the shards were encoded with")
    parser.add_argument("--output", required=True, help="folder for encoder.npz and lm.json (replaced)")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)  # validated before TensorFlow starts

    from reviewpipe.lm import pretrain

    pretrain(args.shards, args.vocab, args.output, conf)
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
