"""The seed's walk-through for one sentence: unique words, one-hot vectors, and, with a built
vocabulary, its ids, padded sequence and OOV words, plus one-hot vs embedding memory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe.explain import explain  # noqa: E402
from reviewpipe.vocab import load_vocab  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser("explain", __doc__, 'python jobs/explain.py --text "I loved this film" --vocab data/work/vocab')
    parser.add_argument("--text", required=True)
    parser.add_argument("--vocab", default=None, help="vocabulary artifact folder (optional)")
    parser.add_argument("--embedding-dim", type=int, default=32)
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)
    vocab = load_vocab(None, args.vocab) if args.vocab and Path(args.vocab).is_dir() else None
    print(explain(args.text, vocab, conf.encode.maxlen if vocab else 20, conf.encode.padding,
                  conf.encode.truncating, args.embedding_dim))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
