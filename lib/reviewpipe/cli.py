"""Shared argument parsing and exit-code handling for the thin ``jobs/`` entry points."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from reviewpipe import native_logs
from reviewpipe.config import ConfigError, PipelineConf, load_conf

log = logging.getLogger("reviewpipe")


class JobError(RuntimeError):
    """A job cannot proceed; the message is the one line a scheduler shows."""


def job_parser(prog: str, description: str, submit_example: str, spark: bool = True) -> argparse.ArgumentParser:
    """A parser with the options every job shares: --conf, --set, and --master for Spark jobs."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example:\n  {submit_example}\n\nSettings: see conf/pipeline.toml; "
               "override any with --set section.key=value.")
    parser.add_argument("--conf", metavar="FILE", default=None,
                        help="pipeline TOML (default: built-in defaults, identical to conf/pipeline.toml)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides", help="override one setting; repeatable")
    if spark:
        parser.add_argument("--master", default=None,
                            help="Spark master (default: spark-submit's, else local[*])")
    parser.add_argument("--verbose", action="store_true",
                        help=f"keep TensorFlow's C++ start-up lines (also {native_logs.VERBOSE_ENV}=1)")
    return parser


def load_job_conf(args: argparse.Namespace) -> PipelineConf:
    return load_conf(args.conf, args.overrides)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("py4j", "matplotlib", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(main: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a job's ``_main`` and map failures to a non-zero exit code with one line on stderr.

    TensorFlow's C++ start-up noise is filtered from stderr unless ``--verbose`` is given
    (reviewpipe.native_logs); the flag is read here, before any job imports TensorFlow.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:
        os.environ[native_logs.VERBOSE_ENV] = "1"
    native_logs.install()
    setup_logging()
    try:
        return main(argv)
    except (ConfigError, JobError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a crash: the traceback, then one line a scheduler can show
        import traceback

        traceback.print_exc()
        print(f"error: {type(e).__name__}: {_last_line(str(e))}", file=sys.stderr)
        return 1


def _last_line(message: str) -> str:
    """The most telling line of a (possibly Python-worker) error message."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.startswith(("\tat ", "  File"))]
    for ln in reversed(lines):
        if "Error:" in ln or "Exception:" in ln:
            return ln[:500]
    return (lines[0] if lines else "")[:500]
