"""Run a recipe (conf/recipes/<name>.toml): its steps in order, each skipped when its output is
complete and was made from the same inputs and settings; or print which steps are done.

Not a Spark job itself: every step is a Makefile target (spark-submit for the Spark stages).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout

from reviewpipe import cli  # noqa: E402


def _main(argv: Sequence[str]) -> int:
    parser = cli.job_parser(
        "recipe", __doc__, "python jobs/recipe.py run --recipe conf/recipes/default.toml --work data/work "
                           "--runs artifacts/runs --make MASTER=local[*]", spark=False)
    parser.add_argument("action", choices=("run", "status"))
    parser.add_argument("--recipe", required=True, help="conf/recipes/<name>.toml, or a name in conf/recipes/")
    parser.add_argument("--work", required=True, help="work folder; steps go to WORK/recipes/<name>/")
    parser.add_argument("--runs", required=True, help="runs folder for the training steps")
    parser.add_argument("--input", default=None, help="ingest input (default: the data step's aclImdb)")
    parser.add_argument("--force", action="append", default=[], metavar="STEP", help="run this step even if done")
    parser.add_argument("--make", action="append", default=[], metavar="VAR=VALUE",
                        help="a Makefile variable for every step (MASTER, DATA_DIR, ...)")
    args = parser.parse_args(argv)
    cli.load_job_conf(args)  # the conf and --set alone, checked before the recipe

    from reviewpipe import recipe as R
    from reviewpipe.summary import main_job_lines

    path = Path(args.recipe)
    if not path.suffix and not path.exists():
        path = Path("conf/recipes") / f"{args.recipe}.toml"
    make_args = dict(kv.split("=", 1) for kv in args.make)
    recipe = R.load_recipe(path, args.conf, args.overrides, args.work, args.runs, args.input,
                           make_args.get("IMDB_ARCHIVE"))
    if args.action == "status":
        print("\n".join(R.status_lines(recipe)))
        return 0
    make_args.setdefault("RUN_DATE", datetime.now(timezone.utc).date().isoformat())
    if args.conf:
        make_args["CONF"] = args.conf
    R.run_recipe(recipe, args.overrides, make_args, args.force)
    evaluations = [s for s in recipe.steps if s.kind == "evaluate"]
    if evaluations:  # the main job's last lines, for the model the last evaluation scored
        ev = evaluations[-1]
        train = recipe.step(ev.refs["model"])
        shards_step = recipe.step(train.refs["shards"])
        shards = recipe.out(shards_step) / ("shards" if shards_step.kind == "prepare" else "")
        print("\n".join(main_job_lines(recipe.out(recipe.step(ev.refs["reviews"])),
                                       recipe.out(recipe.step(train.refs["vocab"])) / "vocab", shards,
                                       recipe.out(train), recipe.out(ev), make_args["RUN_DATE"])))
    return 0


def main() -> int:
    return cli.run(_main)


if __name__ == "__main__":
    sys.exit(main())
