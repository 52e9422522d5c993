"""The data step: find the aclImdb archive (given path, data/raw, ../shared mirror, official
URL), verify its SHA-256 against conf/SHA256SUMS, and extract it once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli, datasets  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser("fetch_data", __doc__, "python jobs/fetch_data.py --archive ~/Downloads/aclImdb_v1.tar.gz")
    parser.add_argument("--archive", default=None, help="path to an aclImdb tarball (also IMDB_ARCHIVE=...)")
    parser.add_argument("--no-download", action="store_true", help="never try the official URL")
    parser.add_argument("--print-root", action="store_true", help="print only the extracted aclImdb folder")
    args = parser.parse_args(argv)
    conf = cli.load_job_conf(args)
    root = datasets.provision(conf.data, args.archive, allow_download=not args.no_download)
    print(root if args.print_root else f"aclImdb ready at {root}")
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
