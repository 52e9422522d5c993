"""Pure-Python record parsers: aclImdb file names, RFC 4180 CSV, and JSON Lines.

They read bytes and never decode lossily: text comes back as the original bytes, so
invalid UTF-8 is detected downstream instead of being silently replaced.  Every input
record yields exactly one :class:`RawRecord`; a record that cannot be parsed carries a
quarantine ``reason`` instead of being dropped.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from reviewpipe import constants as C

# The csv module refuses fields over 128 KiB by default ("field larger than field limit"),
# which made a long review a parse error; sizes are the checks' business (text_too_large at
# ingest.max_text_bytes / score.max_text_bytes), so the parser takes any field.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class RawRecord:
    """One input record before validation.  ``raw`` holds the text bytes (or the raw
    record bytes when it could not be parsed)."""

    review_id: str | None
    raw: bytes | None
    label_raw: str | None
    row: int  # position within its file, 0-based, in source order
    locator: str  # human pointer within the file, e.g. "line 17"
    reason: str | None = None
    detail: str | None = None


class SchemaError(ValueError):
    """The input's columns do not match the configuration (a job error, not a bad row)."""


def decompress(data: bytes, name: str = "") -> bytes:
    """Decompress gzip/bz2/xz by magic bytes (the file name is only used in messages)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def open_maybe_compressed(path):
    """Open a local file for reading bytes, decompressing gzip/bz2/xz by magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


# ---------------------------------------------------------------------------------------
# aclImdb: <root>/<split>/<class>/<id>_<rating>.txt
_ACL_PATH = re.compile(r"(?:^|/)(?P<split>[^/]+)/(?P<cls>pos|neg|unsup)/(?P<stem>[^/]+)\.txt$")
_ACL_STEM = re.compile(r"^(?P<id>\d+)_(?P<rating>\d+)$")


@dataclass(frozen=True)
class AclImdbFile:
    path: str
    review_id: str
    split: str
    cls: str
    file_id: int | None
    rating: int | None
    label: int | None
    reason: str | None = None
    detail: str | None = None

    def sort_key(self) -> tuple:
        split_rank = (C.ACLIMDB_SPLIT_ORDER.index(self.split_dir)
                      if self.split_dir in C.ACLIMDB_SPLIT_ORDER else len(C.ACLIMDB_SPLIT_ORDER))
        return (split_rank, self.split_dir, C.ACLIMDB_CLASSES.index(self.cls),
                self.file_id if self.file_id is not None else float("inf"), self.review_id)

    @property
    def split_dir(self) -> str:
        return self.review_id.split("/", 1)[0]


def parse_aclimdb_path(path: str, default_split: str = C.TRAIN) -> AclImdbFile | None:
    """Parse an aclImdb review path; ``None`` for files that are not reviews (urls_*.txt, README).

    >>> parse_aclimdb_path("file:/d/aclImdb/train/pos/0_9.txt").review_id
    'train/pos/0_9'
    """
    m = _ACL_PATH.search(path)
    if m is None:
        return None
    split_dir, cls, stem = m["split"], m["cls"], m["stem"]
    review_id = f"{split_dir}/{cls}/{stem}"
    if cls == "unsup":
        split = C.UNSUP
    else:
        split = split_dir if split_dir in C.ACLIMDB_SPLIT_ORDER else default_split
    label = C.ACLIMDB_CLASS_LABEL[cls]
    s = _ACL_STEM.match(stem)
    if s is None:
        return AclImdbFile(path, review_id, split, cls, None, None, label, C.BAD_FILENAME,
                           f"file name {stem + '.txt'!r} is not <id>_<rating>.txt")
    rating = int(s["rating"])
    if rating > 10:
        return AclImdbFile(path, review_id, split, cls, int(s["id"]), None, label, C.BAD_FILENAME,
                           f"rating {rating} in {stem + '.txt'!r} is outside 0-10")
    return AclImdbFile(path, review_id, split, cls, int(s["id"]), rating, label)


def order_aclimdb(files: Iterable[AclImdbFile]) -> list[AclImdbFile]:
    """Source order: split (train, test, others by name), class pos/neg/unsup, numeric id."""
    return sorted(files, key=AclImdbFile.sort_key)


_IMDB_TITLE = re.compile(rb"/title/(tt\d+)")


def parse_aclimdb_urls(content: bytes) -> list[str | None]:
    """Titles from an aclImdb ``urls_<class>.txt``: line *i* is the IMDB URL of review id *i*.

    Returns the title id (``tt0453418``) for each line, ``None`` where a line holds none.

    >>> parse_aclimdb_urls(b"http://www.imdb.com/title/tt0453418/usercomments\\nnone\\n")
    ['tt0453418', None]
    """
    out: list[str | None] = []
    for line in content.splitlines():
        m = _IMDB_TITLE.search(line)
        out.append(m.group(1).decode("ascii") if m else None)
    return out


# ---------------------------------------------------------------------------------------
# CSV (RFC 4180)
class _LineTap:
    """Iterates lines for csv.reader and remembers the raw lines of the current record."""

    def __init__(self, text: str):
        self._lines = io.StringIO(text, newline="")
        self.taken: list[str] = []

    def __iter__(self) -> "_LineTap":
        return self

    def __next__(self) -> str:
        line = self._lines.readline()
        if not line:
            raise StopIteration
        self.taken.append(line)
        return line

    def drain(self) -> str:
        out, self.taken = "".join(self.taken), []
        return out


def _to_bytes(s: str) -> bytes:
    # surrogateescape gives back the exact original bytes, invalid ones included.
    return s.encode("utf-8", "surrogateescape")


def parse_csv(data: bytes, name: str, text_column: str, label_column: str = "",
              id_column: str = "", label_optional: bool = False) -> Iterator[RawRecord]:
    """Parse RFC 4180 CSV bytes (header row required; quoted fields may hold commas,
    doubled quotes and newlines).  Rows are numbered 0.. after the header.  With
    ``label_optional`` (scoring), a header without the label column means unlabelled rows."""
    text = decompress(data, name)
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    tap = _LineTap(text.decode("utf-8", "surrogateescape"))
    reader = csv.reader(tap, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise SchemaError(f"{name}: cannot read the CSV header: {e}") from e
    tap.drain()
    index = csv_columns(header, name, text_column, label_column, id_column, label_optional)
    yield from _csv_records(tap, reader, [h.strip() for h in header], index, name, 0, 0)


def parse_csv_piece(data: bytes, name: str, header: list[str], text_column: str, label_column: str = "",
                    id_column: str = "", label_optional: bool = False, first_line: int = 1,
                    first_row: int = 0) -> Iterator[RawRecord]:
    """The records of one piece of a split CSV file (no header in ``data``): exactly what
    :func:`parse_csv` yields for them from the whole file, given the piece's first line
    number and first row.  A parse error inside a piece cannot be placed safely (the split
    followed the quotes, the parser's recovery would not), so it is raised."""
    index = csv_columns(header, name, text_column, label_column, id_column, label_optional)
    tap = _LineTap(data.decode("utf-8", "surrogateescape"))
    reader = csv.reader(tap, strict=True)
    for rec in _csv_records(tap, reader, [h.strip() for h in header], index, name, first_line - 1, first_row):
        if rec.reason == C.MALFORMED_CSV and rec.detail and rec.detail.startswith("CSV parse error"):
            raise SchemaError(f"{name}: {rec.detail} at {rec.locator}: a file with malformed quoting cannot be "
                              f"split across tasks; set ingest.split_bytes=0 to read it whole")
        yield rec


def csv_columns(header: list[str], name: str, text_column: str, label_column: str, id_column: str,
                label_optional: bool) -> dict[str, int]:
    """Column index of each role (text, label, id) in the header; a missing one is refused."""
    header = [h.strip() for h in header]
    wanted = {"text": text_column, "label": label_column, "id": id_column}
    index = {}
    for role, col in wanted.items():
        if not col or (role == "label" and label_optional and col not in header):
            continue
        if col not in header:
            raise SchemaError(
                f"{name}: the {role} column {col!r} is not in the CSV header {header!r}; "
                f"set ingest.csv_{role}_column")
        index[role] = header.index(col)
    return index


def _csv_records(tap: _LineTap, reader, header: list[str], index: dict[str, int], name: str, line_base: int,
                 row: int) -> Iterator[RawRecord]:
    while True:
        start_line = line_base + reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raw = tap.drain()
            yield RawRecord(None, _to_bytes(raw), None, row, f"line {start_line}", C.MALFORMED_CSV,
                            f"CSV parse error: {e}")
            row += 1
            continue
        raw = tap.drain()
        if not fields:  # a blank line is not a record
            continue
        locator = f"line {start_line}"
        rid = None
        if "id" in index and index["id"] < len(fields):
            rid = fields[index["id"]].strip() or None
        elif "id" not in index:
            rid = f"{name}/{row}"
        if len(fields) != len(header):
            yield RawRecord(rid, _to_bytes(raw), None, row, locator, C.MALFORMED_CSV,
                            f"expected {len(header)} fields, got {len(fields)}")
        else:
            label = fields[index["label"]] if "label" in index else None
            yield RawRecord(rid, _to_bytes(fields[index["text"]]), label, row, locator)
        row += 1


# ---------------------------------------------------------------------------------------
# JSON Lines
def parse_jsonl(data: bytes, name: str, text_column: str, label_column: str = "",
                id_column: str = "") -> Iterator[RawRecord]:
    """Parse JSON Lines bytes: one object per line; blank lines are not records."""
    data = decompress(data, name)
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM from Windows editors
        data = data[3:]
    yield from parse_jsonl_lines(data.split(b"\n"), name, text_column, label_column, id_column)


def parse_jsonl_lines(lines: Iterable[bytes], name: str, text_column: str, label_column: str = "",
                      id_column: str = "", first_line: int = 1, first_row: int = 0) -> Iterator[RawRecord]:
    """JSON Lines records from ``lines`` (without their newlines), numbered from ``first_line``
    and ``first_row``: a whole file, or one piece of a split one."""
    row = first_row
    for lineno, line in enumerate(lines, first_line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        locator = f"line {lineno}"
        default_id = f"{name}/{row}" if not id_column else None
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield RawRecord(default_id, line, None, row, locator, C.INVALID_UTF8, f"line is not UTF-8: {e}")
            row += 1
            continue
        try:
            obj = json.loads(decoded)
        except ValueError as e:
            yield RawRecord(default_id, line, None, row, locator, C.MALFORMED_JSON, f"invalid JSON: {e}")
            row += 1
            continue
        if not isinstance(obj, dict):
            yield RawRecord(default_id, line, None, row, locator, C.MALFORMED_JSON,
                            f"expected a JSON object, got {type(obj).__name__}")
            row += 1
            continue
        rid = default_id
        if id_column:
            v = obj.get(id_column)
            rid = None if v is None or isinstance(v, (dict, list)) else str(v).strip() or None
        value = obj.get(text_column)
        label = _label_text(obj.get(label_column)) if label_column else None
        if value is None:
            yield RawRecord(rid, None, label, row, locator, C.EMPTY_TEXT, f"no {text_column!r} value")
        elif not isinstance(value, str):
            yield RawRecord(rid, line, label, row, locator, C.NON_TEXT,
                            f"{text_column!r} is a {type(value).__name__}, not a string")
        else:
            # surrogatepass keeps escaped lone surrogates ("\ud800") as invalid bytes.
            yield RawRecord(rid, value.encode("utf-8", "surrogatepass"), label, row, locator)
        row += 1


def _label_text(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def label_lookup(positive: Sequence[str], negative: Sequence[str]) -> dict[str, int]:
    """Case-insensitive label spellings -> 1/0."""
    out = {p.strip().lower(): 1 for p in positive}
    out.update({n.strip().lower(): 0 for n in negative})
    return out
