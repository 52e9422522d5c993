"""Column names, split names, reason codes and artifact layout: one place for each fact."""

from __future__ import annotations

# --- reviews table (DESIGN: Records / reviews) -------------------------------------------
REVIEW_ID = "review_id"
SPLIT = "split"
LABEL = "label"
RATING = "rating"
TITLE = "title"  # IMDB title id (tt0453418) from aclImdb's urls_*.txt; null when unknown
TEXT = "text"
SOURCE = "source"
ORDINAL = "ordinal"
REVIEW_COLUMNS = (REVIEW_ID, SPLIT, LABEL, RATING, TITLE, TEXT, SOURCE, ORDINAL)

# --- quarantine table ----------------------------------------------------------------------
REASON = "reason"
DETAIL = "detail"
EXCERPT = "excerpt"
RAW_BYTES = "raw_bytes"
QUARANTINE_COLUMNS = (SOURCE, REVIEW_ID, SPLIT, ORDINAL, REASON, DETAIL, EXCERPT, RAW_BYTES)

# --- splits --------------------------------------------------------------------------------
TRAIN, VAL, TEST, UNSUP, SCORE = "train", "val", "test", "unsup", "score"
SPLITS = (TRAIN, VAL, TEST, UNSUP, SCORE)
# Splits a vocabulary may be built from: never val or test (they are held out).
VOCAB_SPLITS = (TRAIN, UNSUP)
# Shard split written by the pseudo-labelling step: unlabelled rows with a teacher's labels.
PSEUDO = "pseudo"
HELD_OUT = (VAL, TEST)

# aclImdb layout: <root>/<split>/<class>/<id>_<rating>.txt.  Ordinal order is split, then
# class folder in this order, then numeric file id.
ACLIMDB_SPLIT_ORDER = (TRAIN, TEST)
ACLIMDB_CLASSES = ("pos", "neg", "unsup")
ACLIMDB_CLASS_LABEL = {"pos": 1, "neg": 0, "unsup": None}

# --- quarantine reason codes (machine readable) --------------------------------------------
EMPTY_TEXT = "empty_text"
INVALID_UTF8 = "invalid_utf8"
MISSING_LABEL = "missing_label"
UNKNOWN_LABEL = "unknown_label"
MALFORMED_CSV = "malformed_csv"
MALFORMED_JSON = "malformed_json"
NON_TEXT = "non_text"
DUPLICATE_ID = "duplicate_id"
TEXT_TOO_LARGE = "text_too_large"
BAD_FILENAME = "bad_filename"
MISSING_ID = "missing_id"
REASONS = (
    EMPTY_TEXT, INVALID_UTF8, MISSING_LABEL, UNKNOWN_LABEL, MALFORMED_CSV, MALFORMED_JSON,
    NON_TEXT, DUPLICATE_ID, TEXT_TOO_LARGE, BAD_FILENAME, MISSING_ID,
)

# --- ingest output layout ------------------------------------------------------------------
REVIEWS_DIR = "reviews"
QUARANTINE_DIR = "quarantine"
INGEST_SUMMARY = "ingest_summary.json"

# --- vocabulary artifact -------------------------------------------------------------------
TOKEN = "token"
INDEX = "index"
COUNT = "count"
DOC_COUNT = "doc_count"
VOCAB_TABLE = "vocab.parquet"
VOCAB_SPEC = "vocab.json"
VOCAB_SUMMARY = "vocab_summary.json"
PAD_INDEX = 0
OOV_INDEX = 1

# --- encoded shards ------------------------------------------------------------------------
IDS = "ids"
LENGTH = "length"
OOV = "oov"
MATRIX = "matrix"
TARGET = "target"  # float32 teacher probability: pseudo shards written with pseudo.soft only
SHARD_COLUMNS = (REVIEW_ID, LABEL, IDS, LENGTH, OOV)
MANIFEST = "_manifest.json"

# --- model run folder (DESIGN: model run) ----------------------------------------------------
RUN_MODEL = "model.keras"
RUN_ONNX = "model.onnx"  # the same classifier for ONNX Runtime (score.engine=onnx), made from model.keras
RUN_SERVING = "serving"
RUN_VOCAB = "vocab"
RUN_HISTORY = "history.csv"
RUN_METRICS = "metrics.json"
RUN_CURVES = "curves.png"
RUN_VECTORS = "vectors.tsv"
RUN_METADATA = "metadata.tsv"
RUN_CONF = "conf.json"
RUN_META = "run.json"
RUN_CHECKPOINTS = "checkpoints"
RUN_TENSORBOARD = "tensorboard"
PROJECTOR_CONFIG = "projector_config.pbtxt"  # TensorBoard's projector plugin reads it beside the events
PAD_LABEL = "[PAD]"  # metadata.tsv label of row 0

# --- n-gram teacher folder (make train-ngram; reviewpipe.ngram) -------------------------------
NGRAM_META = "ngram.json"
NGRAM_WEIGHTS = "ngram.npz"
NGRAM_PREDICTIONS = "predictions.parquet"

# --- scores (DESIGN: scores) ------------------------------------------------------------------
PROBABILITY = "probability"
PREDICTED_LABEL = "predicted_label"
MODEL_RUN = "model_run"
VOCAB_FINGERPRINT = "vocab_fingerprint"
SCORED_AT = "scored_at"
RUN_DATE = "run_date"
# LENGTH, OOV: the review's tokens before truncation and those outside the vocabulary (drift figures)
SCORE_COLUMNS = (REVIEW_ID, PROBABILITY, PREDICTED_LABEL, LENGTH, OOV, MODEL_RUN, VOCAB_FINGERPRINT, SCORED_AT)
SCORES_QUARANTINE = "_quarantine"   # leading _: Spark readers of the scores folder skip it
SCORES_REPORTS = "_reports"
SCORE_SUMMARY = "score_summary.json"
SCORE_METRICS = "metrics.json"

# --- data step -----------------------------------------------------------------------------
ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ACLIMDB_ARCHIVES = ("aclImdb_v1.tar.gz", "aclImdb_train.tar.gz")
EXTRACTED_MARKER = ".extracted.json"
