"""Spark ingest: raw reviews (aclImdb folder or tarball, CSV, JSONL, Parquet) -> ``reviews``
partitioned by split, plus ``quarantine`` with a reason for every rejected record.

Every input record ends in exactly one of the two tables, and the job checks
``rows read == rows written + rows quarantined`` on what it actually wrote.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from reviewpipe import constants as C
from reviewpipe import parsing, pieces, storage
from reviewpipe.config import PipelineConf
from reviewpipe import splits

log = logging.getLogger(__name__)

FORMATS = ("auto", "aclimdb", "csv", "jsonl", "parquet")
_TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")

# Columns every reader produces before validation.
REVIEWS_SCHEMA = ("review_id string, label tinyint, rating tinyint, title string, text string, "
                  "source string, ordinal long, split string")
QUARANTINE_SCHEMA = ("source string, review_id string, split string, ordinal long, reason string, "
                     "detail string, excerpt string, raw_bytes long")
RAW_SCHEMA = (
    "file_rank long, row long, source string, review_id string, split string, "
    "label_raw string, label tinyint, rating tinyint, title string, labelled boolean, raw binary, "
    "reason string, detail string"
)


class IngestError(ValueError):
    """The input cannot be ingested at all (bad path, wrong columns, failed reconciliation)."""


def detect_format(path: str) -> str:
    """Guess the input format from the path; a folder is aclImdb unless it holds CSV/JSONL/Parquet."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(_TARBALL_SUFFIXES):
        return "aclimdb"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if p.is_dir():
        if any(p.glob("*/pos")) or any(p.glob("*/neg")) or any(p.glob("*/unsup")) or any(p.glob("aclImdb")) \
                or p.name in ("pos", "neg", "unsup") or any(p.glob("pos")) or any(p.glob("neg")):
            return "aclimdb"
        for fmt, suffixes in (("parquet", (".parquet",)), ("csv", _CSV_SUFFIXES), ("jsonl", _JSONL_SUFFIXES)):
            if any(f.name.lower().endswith(suffixes) for f in p.rglob("*") if f.is_file()):
                return fmt
    raise IngestError(f"cannot tell the format of {path!r}; pass --format {'|'.join(FORMATS[1:])}")


# ---------------------------------------------------------------------------------------
# readers: each returns a DataFrame with RAW_SCHEMA columns

@dataclass
class RawInput:
    df: object  # DataFrame
    fmt: str
    files: int
    # every record's review_id is distinct by construction, known on the driver (the aclImdb
    # paths' ids; file stem + row where no id column is read and no two files share a stem):
    # the duplicate check could find nothing and is skipped
    ids_unique: bool = False


def _aclimdb_root(path: str, conf: PipelineConf) -> str:
    p = Path(path)
    if p.is_file():
        from reviewpipe import datasets

        known = datasets.load_checksums(conf.data.checksums)
        resolution = datasets.Resolution(p, datasets.verify(p, known))
        return str(datasets.extract(resolution, conf.data.extract_dir))
    if not p.exists():
        raise IngestError(f"--input {path!r} does not exist")
    return str(p)


def _local_dir(path: str) -> Path | None:
    """The local folder behind ``path`` (plain path or file: URI), or None for remote URIs."""
    if "://" in path and not path.startswith("file:"):
        return None
    if path.startswith("file:"):
        path = "/" + path[len("file:"):].lstrip("/")
    p = Path(path)
    return p if p.is_dir() else None


def _list_txt(root: Path) -> list[str]:
    out: list[str] = []
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.name.endswith(".txt"):
                    out.append(entry.path)
    return out


def read_aclimdb(spark, path: str, conf: PipelineConf) -> RawInput:
    """aclImdb folder (or tarball, extracted once).  The driver parses the file listing to
    assign ids and source order; Spark tasks read the files' bytes in parallel."""
    from pyspark.sql import functions as F

    root = _aclimdb_root(path, conf)
    local = _local_dir(root)
    if local is not None:
        # Hadoop's local listing stats every file through a slow path (~0.5 ms each); a
        # driver-side scandir of the same folder is ~100x faster.
        root_str = str(local.resolve())
        listed = _list_txt(local.resolve())
    else:
        files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                 .option("pathGlobFilter", "*.txt").load(root))
        root_str = _norm_uri(storage.qualify(spark, root))
        listed = [_norm_uri(u) for u in files.inputFiles()]
    parsed = [f for f in (parsing.parse_aclimdb_path(u, conf.ingest.default_split) for u in listed) if f]
    if not parsed:
        raise IngestError(f"{path!r} holds no aclImdb review files (<split>/pos|neg|unsup/<id>_<rating>.txt)")
    ordered = parsing.order_aclimdb(parsed)
    prefix = root_str.rstrip("/") + "/"
    import pandas as pd

    meta = pd.DataFrame({
        "file_rank": range(len(ordered)),
        "path": [f.path for f in ordered],
        "source": [f.path[len(prefix):] if f.path.startswith(prefix) else f.path for f in ordered],
        "review_id": [f.review_id for f in ordered],
        "split": [f.split for f in ordered],
        "label": pd.array([f.label for f in ordered], dtype="Int8"),
        "rating": pd.array([f.rating for f in ordered], dtype="Int8"),
        "title": _aclimdb_titles(spark, ordered, local is not None),
        "reason": [f.reason for f in ordered],
        "detail": [f.detail for f in ordered],
    })
    meta_df = spark.createDataFrame(
        meta, "file_rank long, path string, source string, review_id string, split string, label tinyint, "
              "rating tinyint, title string, reason string, detail string")
    common = ["file_rank", F.lit(0).cast("long").alias("row"), "source", "review_id", "split",
              F.lit(None).cast("string").alias("label_raw"), "label", "rating", "title",
              F.col("label").isNotNull().alias("labelled"), "raw", "reason", "detail"]
    if local is not None:
        # createDataFrame slices the listing into defaultParallelism partitions already.
        from pyspark.sql.types import BinaryType, StructField, StructType

        out_schema = StructType(meta_df.schema.fields + [StructField("raw", BinaryType())])
        df = (meta_df.mapInArrow(_read_local_files, out_schema)
              .select(*common))
    else:
        df = (files.select(F.regexp_replace("path", "^file:///", "file:/").alias("path"),
                           F.col("content").alias("raw"))
              .join(F.broadcast(meta_df), "path").select(*common))
    ids = [f.review_id for f in ordered]
    return RawInput(df, "aclimdb", len(ordered), ids_unique=len(set(ids)) == len(ids))


def _aclimdb_titles(spark, files: list, local: bool) -> list[str | None]:
    """The IMDB title of each review: line ``file_id`` of ``<split>/urls_<class>.txt``.

    A review whose urls file is missing, too short, or has no title on its line gets None
    (the val split then falls back to its review id for it).
    """
    by_file: dict[str, list[str | None]] = {}
    out: list[str | None] = []
    for f in files:
        class_dir = f.path.rsplit("/", 2)[0]
        urls = f"{class_dir}/urls_{f.cls}.txt"
        if urls not in by_file:
            by_file[urls] = _read_titles(spark, urls, local)
        titles = by_file[urls]
        out.append(titles[f.file_id] if f.file_id is not None and f.file_id < len(titles) else None)
    found = sum(t is not None for t in out)
    log.info("titles for %d of %d reviews from %d urls files", found, len(out),
             sum(bool(v) for v in by_file.values()))
    return out


def _read_titles(spark, uri: str, local: bool) -> list[str | None]:
    if local:
        p = Path(uri)
        return parsing.parse_aclimdb_urls(p.read_bytes()) if p.is_file() else []
    from pyspark.errors import AnalysisException

    try:
        rows = spark.read.format("binaryFile").load(uri).select("content").collect()
    except AnalysisException:  # no such file
        return []
    return parsing.parse_aclimdb_urls(rows[0][0]) if rows else []


def _read_local_files(batches: Iterator) -> Iterator:
    """Executor side: add each file's bytes as ``raw`` (read as bytes, never decoded)."""
    import pyarrow as pa

    for batch in batches:
        contents = []
        for p in batch.column("path").to_pylist():
            with open(p, "rb") as f:
                contents.append(f.read())
        yield pa.RecordBatch.from_arrays(batch.columns + [pa.array(contents, pa.binary())],
                                         names=batch.schema.names + ["raw"])


def _norm_uri(uri: str) -> str:
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri


def _python_parsed(spark, path: str, fmt: str, suffixes: tuple[str, ...], conf: PipelineConf,
                   text_col: str, label_col: str, id_col: str, label_optional: bool = False) -> RawInput:
    """CSV/JSONL: Spark reads each file's bytes; Python parsers split records in the executors."""
    from pyspark.sql import functions as F

    p = Path(path)
    if not p.exists():
        raise IngestError(f"--input {path!r} does not exist")
    reader = spark.read.format("binaryFile")
    if p.is_dir():
        reader = reader.option("recursiveFileLookup", "true")
    files = reader.load(path)
    listed = sorted(_norm_uri(u) for u in files.inputFiles() if u.lower().endswith(suffixes) or p.is_file())
    if not listed:
        raise IngestError(f"{path!r} holds no {fmt} files ({', '.join(suffixes)})")
    if p.is_file():
        _check_header(p, fmt, text_col, "" if label_optional else label_col, id_col)
    rank = {u: i for i, u in enumerate(listed)}
    parse = (functools.partial(parsing.parse_csv, label_optional=label_optional) if fmt == "csv"
             else parsing.parse_jsonl)
    labelled = bool(label_col)
    split = conf.ingest.default_split

    def parse_files(batches: Iterator) -> Iterator:
        import pyarrow as pa

        names = [f.name for f in _arrow_schema(RAW_SCHEMA)]
        for batch in batches:
            for uri, content in zip(batch.column("path").to_pylist(), batch.column("content").to_pylist()):
                if uri not in rank:
                    continue
                fname = uri.rsplit("/", 1)[-1]
                stem = _strip_suffixes(fname, suffixes)
                cols: dict[str, list] = {n: [] for n in names}
                for rec in parse(content, stem, text_col, label_col, id_col):
                    for n, v in (("file_rank", rank[uri]), ("row", rec.row),
                                 ("source", f"{fname}:{rec.locator}"), ("review_id", rec.review_id),
                                 ("split", split), ("label_raw", rec.label_raw), ("label", None),
                                 ("rating", None), ("title", None), ("labelled", labelled), ("raw", rec.raw),
                                 ("reason", rec.reason), ("detail", rec.detail)):
                        cols[n].append(v)
                    if len(cols["row"]) >= 4096:
                        yield pa.RecordBatch.from_pydict(cols, schema=_arrow_schema(RAW_SCHEMA))
                        cols = {n: [] for n in names}
                if cols["row"]:
                    yield pa.RecordBatch.from_pydict(cols, schema=_arrow_schema(RAW_SCHEMA))

    files = files.select(F.regexp_replace("path", "^file:///", "file:/").alias("path"), "content", "length")
    big, piece = _split_candidates(spark, files, rank, conf.ingest.split_bytes)
    if big:  # the other files are read whole; these in pieces
        files = files.filter(~F.col("path").isin(sorted(big)))
    df = files.select("path", "content").mapInArrow(parse_files, RAW_SCHEMA)
    if big:
        df = df.unionByName(_read_in_pieces(spark, big, piece, rank, fmt, suffixes, conf, text_col, label_col,
                                            id_col, label_optional))
    stems = [_strip_suffixes(u.rsplit("/", 1)[-1], suffixes) for u in listed]
    return RawInput(df, fmt, len(listed), ids_unique=not id_col and len(set(stems)) == len(stems))


def _split_candidates(spark, files, rank: dict, split_bytes: int) -> tuple[dict[str, int], int]:
    """({uri: size} of the files to read in pieces, the piece size): the uncompressed files
    above the piece size, which is at most ``split_bytes`` and small enough to fill the cores."""
    if not split_bytes:
        return {}, 0
    sized = {r["path"]: r["length"] for r in files.select("path", "length").collect()  # no content read
             if r["path"] in rank}
    piece = pieces.piece_bytes(split_bytes, sum(sized.values()), spark.sparkContext.defaultParallelism)
    return {u: n for u, n in sized.items() if n > piece and not pieces.is_compressed(u)}, piece


def _read_in_pieces(spark, big: dict[str, int], piece: int, rank: dict, fmt: str, suffixes, conf: PipelineConf,
                    text_col: str, label_col: str, id_col: str, label_optional: bool):
    """Raw records of big files read in byte-range pieces on the executors (reviewpipe.pieces):
    the quotes per piece (CSV), then the lines and rows each owns, then the records."""
    plan = [pc for uri in sorted(big, key=rank.get) for pc in pieces.plan(rank[uri], uri, big[uri], piece)]

    def on_executors(fn, items):
        """[(i, fn(items[i]))], one task per item.  Every pass runs through ``mapInArrow``, in
        the SQL Python workers that the whole-file parse and the scoring UDF use too (the RDD
        API's workers are a pool of their own, more processes to start)."""
        items = list(items)

        def run(batches):
            import pyarrow as pa

            for batch in batches:
                idx = batch.column(0).to_pylist()
                out = [json.dumps(fn(items[i]), default=int) for i in idx]
                yield pa.RecordBatch.from_pydict({"i": idx, "out": out},
                                                 schema=pa.schema([("i", pa.int64()), ("out", pa.string())]))

        rows = spark.range(len(items), numPartitions=len(items)).mapInArrow(run, "i long, out string").collect()
        return [(r["i"], json.loads(r["out"])) for r in rows]

    parity: dict[int, int | None] = {i: None for i in range(len(plan))}
    headers: dict[str, list[str]] = {}
    if fmt == "csv":
        qs = dict(on_executors(pieces.quotes, plan))
        for i, pc in enumerate(plan):
            first = i == 0 or plan[i - 1].uri != pc.uri
            parity[i] = 0 if first else (parity[i - 1] + qs[i - 1]) % 2
            if first:
                headers[pc.uri] = _csv_header(pc, text_col, label_col, id_col, label_optional)

    def count(item):
        i, pc = item
        try:
            return pieces.counts(pieces.region(pc, parity[i]), fmt, pc.start == 0)
        except pieces.SplitError as e:
            raise IngestError(f"{pc.uri}: {e}; set ingest.split_bytes=0 to read it whole") from None

    got = dict(on_executors(count, list(enumerate(plan))))
    bases, line, row = [], 0, 0
    for i, pc in enumerate(plan):
        if pc.start == 0:
            line, row = 0, 0
        bases.append((line, row))
        line, row = line + got[i][0], row + got[i][1]
    labelled, split = bool(label_col), conf.ingest.default_split

    def parse_piece(item):
        i, pc = item
        fname = pc.uri.rsplit("/", 1)[-1]
        stem = _strip_suffixes(fname, suffixes)
        data = pieces.region(pc, parity[i])
        first_line, first_row = bases[i][0] + 1, bases[i][1]
        if fmt == "jsonl":
            recs = parsing.parse_jsonl_lines(pieces.jsonl_lines(data, pc.start == 0), stem, text_col, label_col,
                                             id_col, first_line, first_row)
        elif pc.start == 0:
            recs = parsing.parse_csv(data, stem, text_col, label_col, id_col, label_optional)
        else:
            recs = parsing.parse_csv_piece(data, stem, headers[pc.uri], text_col, label_col, id_col, label_optional,
                                           first_line, first_row)
        out = []
        for rec in recs:
            if fmt == "csv" and rec.reason == C.MALFORMED_CSV and (rec.detail or "").startswith("CSV parse error"):
                raise IngestError(f"{fname}: {rec.detail} at {rec.locator}: a file with malformed quoting cannot be "
                                  f"split across tasks; set ingest.split_bytes=0 to read it whole")
            out.append((pc.file_rank, rec.row, f"{fname}:{rec.locator}", rec.review_id, split, rec.label_raw, None,
                        None, None, labelled, rec.raw, rec.reason, rec.detail))
        if len(out) != got[i][1]:
            raise IngestError(f"{fname}: bytes {pc.start}-{pc.end} held {len(out)} records where {got[i][1]} were "
                              f"counted; set ingest.split_bytes=0 to read it whole")
        return out

    def parse_pieces(batches):
        import pyarrow as pa

        schema = _arrow_schema(RAW_SCHEMA)
        for batch in batches:
            for i in batch.column(0).to_pylist():
                rows = parse_piece((i, plan[i]))
                for start in range(0, len(rows), 4096):
                    chunk = rows[start:start + 4096]
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([r[k] for r in chunk], f.type) for k, f in enumerate(schema)], schema=schema)

    return spark.range(len(plan), numPartitions=len(plan)).mapInArrow(parse_pieces, RAW_SCHEMA)


def _csv_header(pc, text_col: str, label_col: str, id_col: str, label_optional: bool) -> list[str]:
    """The header of a big CSV file (its first record), checked against the configured columns."""
    first = pieces.region(pieces.Piece(pc.file_rank, pc.uri, 0, 1, pc.size), 0)
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:]
    import csv
    import io

    header = next(csv.reader(io.StringIO(first.decode("utf-8", "surrogateescape"), newline="")), [])
    parsing.csv_columns(header, pc.uri.rsplit("/", 1)[-1], text_col, label_col, id_col, label_optional)
    return header


def _strip_suffixes(fname: str, suffixes: tuple[str, ...]) -> str:
    low = fname.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        if low.endswith(s):
            return fname[: -len(s)]
    return fname


def _arrow_schema(ddl: str):
    import pyarrow as pa

    types = {"long": pa.int64(), "string": pa.string(), "tinyint": pa.int8(),
             "boolean": pa.bool_(), "binary": pa.binary()}
    return pa.schema([(name, types[typ]) for name, typ in
                      (part.strip().split() for part in ddl.split(","))])


def _check_header(p: Path, fmt: str, text_col: str, label_col: str, id_col: str) -> None:
    """Fail before Spark work when a single local CSV lacks the configured columns."""
    if fmt != "csv":
        return
    with parsing.open_maybe_compressed(p) as f:
        first = f.read(1 << 16).split(b"\n", 1)[0]
    if b'"' in first:  # a quoted header may span lines; let the parser judge it
        return
    next(iter(parsing.parse_csv(first + b"\n", p.name, text_col, label_col, id_col)), None)


def read_parquet(spark, path: str, conf: PipelineConf, label_optional: bool = False) -> RawInput:
    """Parquet with configurable text/label/id columns; order is file, then row index.  With
    ``label_optional`` (scoring), a file without the label column is unlabelled."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    df = spark.read.parquet(path)
    ing = conf.ingest
    fields = {f.name: f.dataType for f in df.schema.fields}
    if label_optional and ing.label_column not in fields:
        ing = replace(ing, label_column="")
    for role, col in (("text", ing.text_column), ("label", ing.label_column), ("id", ing.id_column)):
        if col and col not in fields:
            raise IngestError(f"{path}: the {role} column {col!r} is not among {sorted(fields)}; "
                              f"set ingest.{role}_column")
    listed = sorted(_norm_uri(u) for u in df.inputFiles())
    rank_df = spark.createDataFrame(list(enumerate(listed)), "file_rank long, file_path string")
    text_type = fields[ing.text_column]
    if isinstance(text_type, (T.StringType, T.BinaryType)):
        raw = F.col(ing.text_column).cast("binary")
        reason = F.lit(None).cast("string")
        detail = F.lit(None).cast("string")
    else:
        raw = F.col(ing.text_column).cast("string").cast("binary")
        reason = F.when(F.col(ing.text_column).isNotNull(), F.lit(C.NON_TEXT))
        detail = F.lit(f"{ing.text_column!r} is {text_type.simpleString()}, not text")
    if ing.id_column:
        rid = F.nullif(F.trim(F.col(ing.id_column).cast("string")), F.lit(""))
    else:
        rid = F.concat(F.regexp_extract("_metadata.file_name", r"^(.*?)(\.[^.]*)*$", 1), F.lit("/"),
                       F.col("_metadata.row_index").cast("string"))
    label_raw = F.col(ing.label_column).cast("string") if ing.label_column else F.lit(None).cast("string")
    out = (df.select(F.regexp_replace("_metadata.file_path", "^file:///", "file:/").alias("file_path"),
                     F.col("_metadata.file_name").alias("file_name"),
                     F.col("_metadata.row_index").alias("row"), rid.alias("review_id"), raw.alias("raw"),
                     label_raw.alias("label_raw"), reason.alias("reason"), detail.alias("detail"))
           .join(F.broadcast(rank_df), "file_path")
           .select("file_rank", "row",
                   F.concat("file_name", F.lit(":row "), F.col("row").cast("string")).alias("source"),
                   "review_id", F.lit(ing.default_split).alias("split"), "label_raw",
                   F.lit(None).cast("tinyint").alias("label"), F.lit(None).cast("tinyint").alias("rating"),
                   F.lit(None).cast("string").alias("title"), F.lit(bool(ing.label_column)).alias("labelled"), "raw", "reason", "detail"))
    return RawInput(out, "parquet", len(listed))


def read_raw(spark, path: str, fmt: str, conf: PipelineConf, label_optional: bool = False) -> RawInput:
    """Dispatch to the reader for ``fmt`` (``auto`` detects it from the path).

    ``label_optional`` (scoring): a CSV or Parquet input without the label column is read as
    unlabelled instead of refused."""
    if fmt not in FORMATS:
        raise IngestError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    ing = conf.ingest
    if fmt == "aclimdb":
        return read_aclimdb(spark, path, conf)
    if fmt == "csv":
        return _python_parsed(spark, path, "csv", _CSV_SUFFIXES, conf,
                              ing.csv_text_column, ing.csv_label_column, ing.csv_id_column, label_optional)
    if fmt == "jsonl":
        return _python_parsed(spark, path, "jsonl", _JSONL_SUFFIXES, conf,
                              ing.text_column, ing.label_column, ing.id_column)
    return read_parquet(spark, path, conf, label_optional)


# ---------------------------------------------------------------------------------------
# validation

def with_ordinal(spark, raw, one_record_per_file: bool = False, counts=None):
    """ordinal = records in all earlier files (source order) + the row within the file.

    ``counts``: (file_rank, records) pairs the caller has counted already (the scoring job,
    in the pass that fills its cache; a file_rank may repeat, its counts add up); otherwise
    one group-by counts them."""
    from pyspark.sql import functions as F

    if one_record_per_file:
        return raw.withColumn(C.ORDINAL, F.col("file_rank"))
    if counts is None:
        counts = [(r["file_rank"], r["n"]) for r in
                  raw.groupBy("file_rank").agg(F.count(F.lit(1)).alias("n")).collect()]
    per_file: dict[int, int] = {}
    for rank, n in counts:
        per_file[rank] = per_file.get(rank, 0) + n
    offsets, total = [], 0
    for rank, n in sorted(per_file.items()):
        offsets.append((rank, total))
        total += n
    offsets_df = spark.createDataFrame(offsets, "file_rank long, offset long")
    return (raw.join(F.broadcast(offsets_df), "file_rank")
            .withColumn(C.ORDINAL, F.col("offset") + F.col("row")).drop("offset"))


def classify(raw, conf: PipelineConf):
    """Add ``reason``/``detail`` (null for good records) and the decoded ``text``."""
    from pyspark.sql import functions as F

    ing = conf.ingest
    lookup = parsing.label_lookup(ing.positive_labels, ing.negative_labels)
    label_map = F.create_map(*[x for k, v in sorted(lookup.items()) for x in (F.lit(k), F.lit(v).cast("tinyint"))])
    norm = F.lower(F.trim(F.col("label_raw")))
    mapped = F.coalesce(F.col("label"), F.element_at(label_map, norm))
    text = F.col("raw").cast("string")
    nbytes = F.octet_length("raw")
    reason = F.coalesce(
        F.col("reason"),
        F.when(F.col("review_id").isNull() | (F.trim("review_id") == ""), F.lit(C.MISSING_ID)),
        F.when(nbytes > ing.max_text_bytes, F.lit(C.TEXT_TOO_LARGE)),
        F.when(F.col("raw").isNotNull() & ~F.expr("is_valid_utf8(cast(raw as string))"), F.lit(C.INVALID_UTF8)),
        F.when(F.col("raw").isNull() | text.rlike(r"(?U)^\s*$"), F.lit(C.EMPTY_TEXT)),
        F.when(F.col("labelled") & (F.col("label_raw").isNull() | (norm == "")) & F.col("label").isNull(),
               F.lit(C.MISSING_LABEL)),
        F.when(F.col("labelled") & mapped.isNull(), F.lit(C.UNKNOWN_LABEL)),
    )
    # detail reads the reason column, not its expression: the expression inlined once per
    # branch would run the text checks seven times per record
    why = F.col("reason")
    detail = F.coalesce(
        F.col("detail"),
        F.when(why == C.MISSING_ID, F.lit("no review id")),
        F.when(why == C.TEXT_TOO_LARGE,
               F.concat(nbytes.cast("string"), F.lit(f" bytes > ingest.max_text_bytes={ing.max_text_bytes}"))),
        F.when(why == C.INVALID_UTF8, F.lit("text is not valid UTF-8")),
        F.when(why == C.EMPTY_TEXT, F.lit("text is empty or whitespace only")),
        F.when(why == C.MISSING_LABEL, F.lit("label is missing")),
        F.when(why == C.UNKNOWN_LABEL,
               F.concat(F.lit("label "), F.to_json(F.array("label_raw")), F.lit(" is not in "
                                                                                "ingest.positive_labels/negative_labels"))),
    )
    return raw.withColumn("reason", reason).withColumn("detail", detail).withColumn("label", mapped)


def duplicate_ids(df):
    """The review_ids that more than one good record has, with the first one's ordinal and
    source (``_first``, ``_first_source``): usually few rows, worth caching on their own."""
    from pyspark.sql import functions as F

    return (df.filter(F.col("reason").isNull()).groupBy(C.REVIEW_ID)
            .agg(F.count(F.lit(1)).alias("_n"), F.min(C.ORDINAL).alias("_first"),
                 F.min_by(C.SOURCE, C.ORDINAL).alias("_first_source"))
            .filter("_n > 1").drop("_n"))


def mark_duplicates(df, dups=None):
    """Among good records, the first by ordinal keeps a review_id; later ones are duplicates.
    ``dups`` is :func:`duplicate_ids` of ``df`` when the caller has it already."""
    from pyspark.sql import functions as F

    joined = df.join(duplicate_ids(df) if dups is None else dups, C.REVIEW_ID, "left")
    is_dup = F.col("reason").isNull() & F.col("_first").isNotNull() & (F.col(C.ORDINAL) != F.col("_first"))
    return (joined
            .withColumn("detail", F.when(is_dup, F.concat(F.lit("review_id first seen at "), "_first_source"))
                        .otherwise(F.col("detail")))
            .withColumn("reason", F.when(is_dup, F.lit(C.DUPLICATE_ID)).otherwise(F.col("reason")))
            .drop("_first", "_first_source"))


def carve_val(df, fraction: float, group: str = "title"):
    """Move train records whose group key hashes below ``fraction`` to val.

    ``group="title"``: the key is the title where known, else the review id;
    ``group="review_id"``: always the review id (the split before titles were read).
    """
    from pyspark.sql import functions as F

    title = F.col(C.TITLE) if group == "title" else F.lit(None).cast("string")
    key = splits.key_column(F.col(C.REVIEW_ID), title)
    to_val = (F.col(C.SPLIT) == C.TRAIN) & splits.val_column(key, fraction)
    return df.withColumn(C.SPLIT, F.when(to_val, F.lit(C.VAL)).otherwise(F.col(C.SPLIT)))


def val_split_summary(records, fraction: float, group: str = "title") -> dict:
    """How val was carved: the rule, rows by key kind, and titles per side (never on both)."""
    from pyspark.sql import functions as F

    carved = records.filter(F.col("reason").isNull() & F.col(C.SPLIT).isin(C.TRAIN, C.VAL))
    titled = F.nullif(F.col(C.TITLE), F.lit("")).isNotNull()
    row = carved.agg(
        F.count(F.when(titled, 1)).alias("by_title"), F.count(F.when(~titled, 1)).alias("by_review_id"),
        F.count_distinct(F.when(titled & (F.col(C.SPLIT) == C.TRAIN), F.col(C.TITLE))).alias("train_titles"),
        F.count_distinct(F.when(titled & (F.col(C.SPLIT) == C.VAL), F.col(C.TITLE))).alias("val_titles"),
        F.count_distinct(F.when(titled, F.col(C.TITLE))).alias("titles"),
    ).first()
    by_title = row["by_title"] if group == "title" else 0
    by_id = row["by_title"] + row["by_review_id"] - by_title
    return {"rule": splits.rule(by_title, by_id), "fraction": fraction,
            "rows_by_title": by_title, "rows_by_review_id": by_id,
            "train_titles": row["train_titles"], "val_titles": row["val_titles"],
            "titles_on_both_sides": row["train_titles"] + row["val_titles"] - row["titles"]}


# ---------------------------------------------------------------------------------------
# the job

def ingest(spark, input_path: str, output_dir: str, conf: PipelineConf, fmt: str = "auto") -> dict:
    """Read, validate, split, and publish ``reviews``/``quarantine``/summary under ``output_dir``.

    Returns the summary dict.  Raises :class:`IngestError` if the counts do not reconcile.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.time()
    ing = conf.ingest
    previous = spark.conf.get("spark.sql.files.openCostInBytes")
    # Many small review files: pack ~files_per_partition of them per task instead of
    # Spark's default 4 MB "open cost" per file, which would make thousands of tiny tasks.
    max_bytes = int(spark._jsparkSession.sessionState().conf().filesMaxPartitionBytes())
    spark.conf.set("spark.sql.files.openCostInBytes", str(max(4096, max_bytes // ing.files_per_partition)))
    classified = None
    try:
        raw_input = read_raw(spark, input_path, fmt, conf)
        # One cache, after the per-record checks: the source is read once, and dedupe,
        # stats and both writes reuse it.
        classified = classify(raw_input.df, conf).persist(StorageLevel.MEMORY_AND_DISK)
        rows_read = classified.count()
        log.info("read and checked %d records from %d %s files in %.1fs", rows_read, raw_input.files,
                 raw_input.fmt, time.time() - started)
        records = with_ordinal(spark, classified, raw_input.fmt == "aclimdb")
        if not raw_input.ids_unique:
            records = mark_duplicates(records)
        records = carve_val(records, ing.val_fraction, ing.val_group)
        val_split = val_split_summary(records, ing.val_fraction, ing.val_group)
        stats = (records.groupBy(C.SPLIT, "reason")
                 .agg(F.count(F.lit(1)).alias("n"), F.sum(F.octet_length("raw")).alias("bytes"))
                 .collect())
        log.info("validated in %.1fs", time.time() - started)
        good_bytes = sum((r["bytes"] or 0) for r in stats if r["reason"] is None)
        n_parts = max(1, math.ceil(good_bytes / (64 << 20)))
        with storage.staged_output(spark, output_dir) as stage:
            reviews = (records.filter(F.col("reason").isNull())
                       .select(C.REVIEW_ID, C.SPLIT, F.col(C.LABEL).cast("tinyint"),
                               F.col(C.RATING).cast("tinyint"), C.TITLE,
                               F.col("raw").cast("string").alias(C.TEXT),
                               C.SOURCE, F.col(C.ORDINAL).cast("long")))
            # 8 MiB row groups: downstream jobs split files by row group, so one file per
            # split must still feed every core (a 128 MiB default makes one task per file).
            (reviews.repartitionByRange(n_parts, C.SPLIT, C.ORDINAL).sortWithinPartitions(C.ORDINAL)
             .write.mode("overwrite").option("parquet.block.size", 8 << 20)
             .partitionBy(C.SPLIT).parquet(f"{stage}/{C.REVIEWS_DIR}"))
            log.info("wrote reviews in %.1fs", time.time() - started)
            excerpt = F.expr(f"make_valid_utf8(cast(substring(raw, 1, {ing.excerpt_bytes}) as string))")
            quarantine = (records.filter(F.col("reason").isNotNull())
                          .select(C.SOURCE, C.REVIEW_ID, C.SPLIT, F.col(C.ORDINAL).cast("long"),
                                  F.col("reason").alias(C.REASON), F.col("detail").alias(C.DETAIL),
                                  excerpt.alias(C.EXCERPT), F.octet_length("raw").cast("long").alias(C.RAW_BYTES)))
            quarantine.coalesce(1).sortWithinPartitions(C.ORDINAL).write.mode("overwrite").parquet(
                f"{stage}/{C.QUARANTINE_DIR}")
            summary = _reconcile(spark, stage, rows_read, stats)
            summary.update({
                "input": str(input_path), "format": raw_input.fmt, "input_files": raw_input.files,
                "output": str(output_dir), "val_fraction": ing.val_fraction, "val_split": val_split,
                "max_text_bytes": ing.max_text_bytes, "seconds": round(time.time() - started, 2),
            })
            summary["reviews_per_second"] = round(rows_read / max(summary["seconds"], 1e-9), 1)
            storage.write_json(spark, f"{stage}/{C.INGEST_SUMMARY}", summary)
        return summary
    finally:
        if classified is not None:
            classified.unpersist()
        spark.conf.set("spark.sql.files.openCostInBytes", previous)


def _reconcile(spark, stage: str, rows_read: int, stats) -> dict:
    """Count what was actually written and check it against what was read."""
    from pyspark.sql import functions as F

    # Explicit schemas: an output with no rows (everything quarantined, say) has no files
    # to infer a schema from.
    written = {r[C.SPLIT]: r["n"] for r in spark.read.schema(REVIEWS_SCHEMA).parquet(f"{stage}/{C.REVIEWS_DIR}")
               .groupBy(C.SPLIT).agg(F.count(F.lit(1)).alias("n")).collect()}
    qdf = spark.read.schema(QUARANTINE_SCHEMA).parquet(f"{stage}/{C.QUARANTINE_DIR}")
    by_reason = {r[C.REASON]: r["n"] for r in qdf.groupBy(C.REASON).agg(F.count(F.lit(1)).alias("n")).collect()}
    n_written, n_quarantined = sum(written.values()), sum(by_reason.values())
    expected = {r[C.SPLIT]: 0 for r in stats}
    for r in stats:
        if r["reason"] is None:
            expected[r[C.SPLIT]] = expected.get(r[C.SPLIT], 0) + r["n"]
    summary = {
        "rows_read": rows_read, "rows_written": n_written, "rows_quarantined": n_quarantined,
        "reconciled": rows_read == n_written + n_quarantined,
        "written_by_split": dict(sorted(written.items())),
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "quarantined_by_split": dict(sorted(
            (s or "unknown", sum(r["n"] for r in stats if r["reason"] is not None and r[C.SPLIT] == s))
            for s in {r[C.SPLIT] for r in stats if r["reason"] is not None})),
    }
    if not summary["reconciled"]:
        raise IngestError(
            f"counts do not reconcile: read {rows_read} != written {n_written} + quarantined {n_quarantined}")
    mismatched = {s: (expected.get(s, 0), written.get(s, 0)) for s in set(expected) | set(written)
                  if expected.get(s, 0) != written.get(s, 0)}
    if mismatched:
        raise IngestError(f"per-split counts differ between validation and the written table: {mismatched}")
    return summary
