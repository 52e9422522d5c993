"""Big CSV and JSON Lines files split into byte ranges that parse in parallel.

A file larger than ``ingest.split_bytes`` (and not compressed) is cut into pieces of that
size.  A piece owns the records that *start* inside it, as Hadoop's line reader does: a
JSON Lines record starts at 0 and after every newline; a CSV record starts at 0 and after
every newline that is outside quotes, which is where the count of ``"`` before it is even
(RFC 4180: quotes only open, close or double inside quoted fields).  A piece's records may
run past its end; it reads on until the next record start.

The records, ids, line locators and rows must be exactly those of the whole file read by one
parser, so the driver first counts, per piece, the quotes (CSV) and then the lines and rows
each piece owns, and gives every piece its first line number and first row.  A piece checks
that its parser found as many rows as counted: malformed quoting, which the whole-file
parser recovers from line by line, fails the read with a message instead of shifting rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEWLINE, QUOTE, CR = 10, 34, 13
EXTEND = 1 << 20  # read this much more at a time past a piece's end, to finish its last record
_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


class SplitError(ValueError):
    """A file cannot be split safely; reading it whole (ingest.split_bytes=0) still works."""


@dataclass(frozen=True)
class Piece:
    file_rank: int
    uri: str
    start: int
    end: int
    size: int


MIN_PIECE = 4 << 20  # as Spark's spark.sql.files.openCostInBytes: smaller pieces cost more than they give


def piece_bytes(split_bytes: int, total_bytes: int, parallelism: int) -> int:
    """Spark's own rule for file splits (FilePartition.maxSplitBytes): at most ``split_bytes``,
    and small enough that the input fills every core, but not below MIN_PIECE."""
    return min(split_bytes, max(min(MIN_PIECE, split_bytes), -(-total_bytes // max(1, parallelism))))


def plan(file_rank: int, uri: str, size: int, piece: int) -> list[Piece]:
    """Equal pieces of at most ``piece`` bytes (no small tail piece)."""
    n = max(1, -(-size // piece))
    step = -(-size // n)
    return [Piece(file_rank, uri, a, min(size, a + step), size) for a in range(0, size, step)] or \
        [Piece(file_rank, uri, 0, 0, 0)]


def read_range(uri: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file given as a path, a file: URI or any URI pyarrow reads."""
    from reviewpipe.storage import local_path

    local = local_path(uri)
    if local is not None:
        with open(local, "rb") as f:
            f.seek(start)
            return f.read(max(0, end - start))
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_input_file(path) as f:
        f.seek(start)
        return f.read(max(0, end - start))


def is_compressed(uri: str) -> bool:
    head = read_range(uri, 0, 6)
    return any(head.startswith(m) for m in _MAGIC)


def quotes(piece: Piece) -> int:
    """The ``"`` characters in the piece's own bytes (CSV: the parity at the next piece's start)."""
    return read_range(piece.uri, piece.start, piece.end).count(b'"')


def _record_starts(buf: bytes, parity: int | None) -> np.ndarray:
    """Offsets in ``buf`` just after a record-ending newline (CSV: outside quotes, given the
    quote parity before buf[0]; JSON Lines: parity None, every newline)."""
    arr = np.frombuffer(buf, np.uint8)
    nl = np.flatnonzero(arr == NEWLINE)
    if parity is not None and len(nl):
        quotes_at = np.flatnonzero(arr == QUOTE)  # memory: the positions only, not a running count per byte
        before = (parity + np.searchsorted(quotes_at, nl)) % 2  # quotes before each newline
        nl = nl[before == 0]
    return nl + 1


def region(piece: Piece, parity: int | None) -> bytes:
    """The bytes of the records that start in the piece, to the end of its last record.

    ``parity`` (CSV): the quotes in [0, piece.start) modulo 2; None for JSON Lines.
    """
    a = max(0, piece.start - 1)  # one byte back: a record starting at piece.start follows a newline there
    stop = piece.end
    buf = read_range(piece.uri, a, stop)
    p0 = None
    if parity is not None:
        p0 = 0 if piece.start == 0 else (parity - (buf[:1] == b'"')) % 2
    while True:
        starts = _record_starts(buf, p0) + a
        owned = starts[(starts >= piece.start) & (starts < piece.end)]
        first = 0 if piece.start == 0 else (int(owned[0]) if len(owned) else None)
        after = starts[starts >= piece.end]
        if first is None and stop >= piece.size:
            return b""
        if len(after) or stop >= piece.size:
            last = int(after[0]) if len(after) else piece.size
            if first is None:  # no record starts here (one long quoted field spans the piece)
                return b""
            return buf[first - a:last - a]
        more = read_range(piece.uri, stop, min(piece.size, stop + EXTEND))
        buf, stop = buf + more, stop + len(more)


def counts(data: bytes, fmt: str, first_piece: bool) -> tuple[int, int]:
    """(lines, rows) of a region as the whole-file parser numbers them: the newlines it holds,
    and its records (CSV: without the header and blank lines; JSON Lines: non-blank lines)."""
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        raise SplitError("a bare carriage return (old Mac line ends) makes the line numbers ambiguous")
    lines = data.count(b"\n")
    if fmt == "jsonl":
        return lines, sum(1 for line in jsonl_lines(data, first_piece) if line.strip())
    body = data[3:] if first_piece and data.startswith(b"\xef\xbb\xbf") else data
    starts = np.concatenate([[0], _record_starts(body, 0)])
    starts = starts[starts < len(body)]
    blank = sum(1 for s in starts if body[s:s + 1] == b"\n" or body[s:s + 2] == b"\r\n")
    return lines, len(starts) - blank - (1 if first_piece else 0)


def jsonl_lines(data: bytes, first_piece: bool) -> list[bytes]:
    """A region's lines without newlines (a BOM at the file's start dropped)."""
    if first_piece and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":  # the region ends with its last record's newline
        lines.pop()
    return lines
