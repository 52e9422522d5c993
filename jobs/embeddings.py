"""Inspect word embeddings: nearest words, analogies, similarity, a 2-D projection, projector files.

Works on a model run folder (default: the newest complete run in --runs) or a vectors.tsv +
metadata.tsv pair (--vectors).  Not a Spark job.

  python jobs/embeddings.py neighbors great -k 10
  python jobs/embeddings.py analogy man king woman        # king - man + woman
  python jobs/embeddings.py similarity excellent superb
  python jobs/embeddings.py project --words good,bad,great,awful --output words.png
  python jobs/embeddings.py export --output projector/     # vectors.tsv + metadata.tsv
  python jobs/embeddings.py intrinsic --pairs conf/word_pairs.toml
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402
from reviewpipe import constants as C  # noqa: E402

DEFAULT_WORDS = ("good,great,excellent,superb,wonderful,brilliant,bad,awful,terrible,worst,boring,waste,"
                 "actor,actress,man,woman,king,queen,film,movie,funny,hilarious,scary,horror")


def _source(args) -> Path:
    from reviewpipe.train import latest_complete

    if args.vectors:
        return Path(args.vectors)
    if args.run:
        return Path(args.run)
    found = latest_complete(args.runs)
    if found is None:
        raise cli.JobError(f"no complete run in {args.runs}; train one (make train) or pass --run/--vectors")
    return found


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="embeddings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a model run folder")
    parser.add_argument("--runs", default="artifacts/runs", help="runs folder (newest complete run is used)")
    parser.add_argument("--vectors", help="a vectors.tsv (metadata.tsv next to it) or a folder holding both")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("neighbors", help="nearest words by cosine")
    p.add_argument("word")
    p.add_argument("-k", type=int, default=10)
    p = sub.add_parser("analogy", help="a is to b as c is to ?  (b - a + c)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("c")
    p.add_argument("-k", type=int, default=5)
    p = sub.add_parser("similarity", help="cosine of two words")
    p.add_argument("a")
    p.add_argument("b")
    p = sub.add_parser("project", help="PCA of a word list to a PNG")
    p.add_argument("--words", default=DEFAULT_WORDS, help="comma-separated words")
    p.add_argument("--output", default="artifacts/embeddings.png")
    p = sub.add_parser("export", help="write TensorBoard projector files (vectors.tsv, metadata.tsv)")
    p.add_argument("--output", required=True)
    p = sub.add_parser("intrinsic", help="mean cosine of related minus unrelated word pairs")
    p.add_argument("--pairs", default="conf/word_pairs.toml")
    args = parser.parse_args(argv)

    from reviewpipe.embeddings import Embeddings, UnknownWord, intrinsic, load_pairs

    src = _source(args)
    emb = Embeddings.load(src)
    try:
        if args.cmd == "neighbors":
            found = emb.neighbors(args.word, args.k)
            print(f"nearest to {args.word!r} ({src}):")
            for w, s in found:
                print(f"  {s:+.4f}  {w}")
        elif args.cmd == "analogy":
            found = emb.analogy(args.a, args.b, args.c, args.k)
            print(f"{args.a} : {args.b} :: {args.c} : ?   ({args.b} - {args.a} + {args.c}; {src})")
            for w, s in found:
                print(f"  {s:+.4f}  {w}")
        elif args.cmd == "similarity":
            print(f"cosine({args.a}, {args.b}) = {emb.similarity(args.a, args.b):+.4f}")
        elif args.cmd == "project":
            words = [w for w in args.words.split(",") if w]
            known = [w for w in words if w in emb.index]
            if len(known) < len(words):
                print(f"skipping unknown words: {', '.join(w for w in words if w not in emb.index)}")
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            emb.project(known, args.output, f"Word embeddings ({Path(src).name}), PCA")
            print(f"wrote {args.output} ({len(known)} words)")
        elif args.cmd == "export":
            out = Path(args.output)
            out.mkdir(parents=True, exist_ok=True)
            folder = src if src.is_dir() else src.parent
            for name in (C.RUN_VECTORS, C.RUN_METADATA):
                shutil.copyfile(folder / name, out / name)
            print(f"wrote {out / C.RUN_VECTORS} and {out / C.RUN_METADATA}: load them at "
                  f"https://projector.tensorflow.org (Load -> choose both files)")
        elif args.cmd == "intrinsic":
            print(json.dumps(intrinsic(emb, load_pairs(args.pairs)), indent=2))
    except UnknownWord as e:
        raise cli.JobError(str(e)) from None
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
