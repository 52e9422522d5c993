"""The docs cannot rot: every `make ...` line in a fenced block of README.md and docs/ names a
real target with real variables and valid settings, every documented job flag parses, and
every relative link (and its #anchor) resolves."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from reviewpipe.config import load_conf

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# variables the Makefile reads without a `?=` default of its own
EXTRA_VARS = {"IMDB_ARCHIVE", "WORD", "A", "B", "C", "RUN", "VECTORS"}


SHELL_FENCES = {"", "bash", "sh", "shell", "cron", "console"}


def fenced_lines(page: Path) -> list[str]:
    """Lines of the page's shell (and cron) fenced blocks, continuation lines joined."""
    out, block, buf = [], None, ""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = None if block is not None else line[3:].strip()
            continue
        if block not in SHELL_FENCES:
            continue
        line = buf + line.strip()
        if line.endswith("\\"):
            buf = line[:-1] + " "
            continue
        buf = ""
        out.append(line)
    return out


def commands(prefix: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for line in fenced_lines(page):
            for part in re.split(r"&&|;|\|", line.split("  #")[0].split(" # ")[0]):
                part = part.strip()
                m = re.search(rf"(?:^|\s)({re.escape(prefix)}\s.*)$", part)
                if m and not part.startswith(("#", "$")):
                    found.append((page.name, m.group(1)))
    return found


@lru_cache
def makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))
    variables = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=", text, re.M)) | EXTRA_VARS
    return targets, variables


MAKE_LINES = commands("make")


def test_the_docs_show_make_commands():
    assert len(MAKE_LINES) > 30
    assert {"README.md", "operations.md", "reference.md"} <= {page for page, _ in MAKE_LINES}


@pytest.mark.parametrize("page, line", MAKE_LINES, ids=[f"{p}: {c[:60]}" for p, c in MAKE_LINES])
def test_each_make_line_names_real_targets_variables_and_settings(page, line):
    targets, variables = makefile()
    line = re.sub(r"\s+\d*>>?&?\s*\S+", "", line)  # redirections
    words = shlex.split(re.sub(r"<([^<>]*)>", r"_\1_", line))[1:]
    named = [w for w in words if "=" not in w and not w.startswith("-")]
    assert named, f"{page}: {line!r} names no target"
    assert set(named) <= targets, f"{page}: {line!r}: {sorted(set(named) - targets)} are not Makefile targets"
    for w in words:
        if "=" in w:
            var, value = w.split("=", 1)
            assert var in variables, f"{page}: {line!r}: {var} is not a Makefile variable"
            if var == "SET":
                load_conf(None, value.split())  # raises ConfigError naming a bad key or value


JOB_LINES = [(page.name, line) for page in PAGES for line in fenced_lines(page) if re.search(r"jobs/\w+\.py", line)]


@lru_cache
def job_help(job: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / job), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_documented_job_flags_parse():
    assert JOB_LINES, "no job command lines found in the docs"
    checked = 0
    for page, line in JOB_LINES:
        job = re.search(r"jobs/(\w+\.py)", line).group(1)
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line.split(job, 1)[1]))
        helptext = job_help(job)
        for flag in flags:
            assert re.search(rf"(?<![\w-]){flag}\b", helptext), f"{page}: {job} has no {flag} ({line!r})"
            checked += 1
    assert checked > 10


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_and_anchors_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link {target!r} points at nothing"
        if anchor and dest.suffix == ".md":
            anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)}
            assert anchor in anchors, f"{page.name}: #{anchor} is not a heading of {dest.name}"


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    assert lines[6:10] and any(ln.startswith("make run") for ln in lines[:12]) and \
        any(ln.startswith("make test") for ln in lines[:12])
    first_screen = "\n".join(lines[:50])
    assert "make score INPUT=" in first_screen  # how to score a CSV, on the first screen
