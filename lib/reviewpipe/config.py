"""Typed pipeline configuration: defaults < ``--conf FILE`` (TOML) < ``--set section.key=value``.

Every setting is a field of a frozen dataclass below.  Loading validates types, choices
and ranges and raises :class:`ConfigError` naming the bad key before any Spark work starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from reviewpipe import constants as C

KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names the key."""


def _opt(default: Any, *, choices: Sequence[Any] | None = None, min: float | None = None,
         max: float | None = None, doc: str = "", int_ok: bool = False) -> Any:
    meta = {"choices": choices, "min": min, "max": max, "doc": doc, "int_ok": int_ok}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConf:
    archive: str = _opt("", doc="explicit archive path; IMDB_ARCHIVE and --archive override it")
    raw_dir: str = _opt("data/raw")
    mirror_dir: str = _opt("../shared/datasets")
    url: str = _opt(C.ACLIMDB_URL)
    extract_dir: str = _opt("data/extracted")
    checksums: str = _opt("conf/SHA256SUMS")
    download_timeout_s: int = _opt(60, min=1)


@dataclass(frozen=True)
class IngestConf:
    val_fraction: float = _opt(0.2, min=0.0, max=0.9)
    val_group: str = _opt("title", choices=("title", "review_id"),
                          doc="title: all of a movie's reviews on one side (review_id where no title is known)")
    max_text_bytes: int = _opt(1_048_576, min=1)
    excerpt_bytes: int = _opt(240, min=16, max=65536)
    default_split: str = _opt(C.TRAIN, choices=(C.TRAIN, C.TEST, C.UNSUP, C.SCORE))
    csv_text_column: str = _opt("review")
    csv_label_column: str = _opt("sentiment", doc="'' for an unlabelled CSV")
    csv_id_column: str = _opt("", doc="'' derives ids from file name and row number")
    text_column: str = _opt("text", doc="JSONL/Parquet text column")
    label_column: str = _opt("label", doc="JSONL/Parquet label column; '' for unlabelled")
    id_column: str = _opt("", doc="JSONL/Parquet id column; '' derives ids from file and row")
    positive_labels: list = _opt(["positive", "pos", "1", "true"])
    negative_labels: list = _opt(["negative", "neg", "0", "false"])
    files_per_partition: int = _opt(2000, min=1, doc="aclImdb files per Spark read partition")
    split_bytes: int = _opt(67_108_864, min=0, doc="uncompressed CSV/JSONL files are read in pieces of at most this "
                                                   "many bytes, in parallel (fewer when the cores would sit idle); "
                                                   "0 reads every file whole")


@dataclass(frozen=True)
class TokenizerConf:
    mode: str = _opt("default", choices=("default", "keras"))
    lower: bool = _opt(True)
    filters: str = _opt(KERAS_FILTERS, doc="keras mode: characters replaced by the split char")
    split: str = _opt(" ", doc="keras mode: the split character (one character)")
    oov_token: str = _opt("[UNK]", doc="'' disables OOV: unknown words are dropped, as in Keras")


@dataclass(frozen=True)
class VocabConf:
    splits: list = _opt([C.TRAIN, C.UNSUP])
    num_words: int = _opt(30000, min=0, doc="Keras semantics: keep indices < num_words; 0 = all")
    min_count: int = _opt(1, min=1)
    max_doc_fraction: float = _opt(1.0, min=0.0, max=1.0)
    tie_break: str = _opt("first_seen", choices=("first_seen", "token"))


@dataclass(frozen=True)
class EncodeConf:
    maxlen: int = _opt(400, min=1, max=1_000_000)
    padding: str = _opt("post", choices=("pre", "post"))
    truncating: str = _opt("pre", choices=("pre", "post"))
    row_group_rows: int = _opt(4096, min=64)
    rows_per_file: int = _opt(16384, min=64)
    matrix_mode: str = _opt("", choices=("", "binary", "count", "freq", "tfidf"))


@dataclass(frozen=True)
class ModelConf:
    preset: str = _opt("default", choices=("default", "seed"),
                       doc="fills model/train keys you do not set; see PRESETS")
    cell: str = _opt("lstm", choices=("lstm", "gru"))
    bidirectional: bool = _opt(False)
    layers: int = _opt(1, min=1, max=8)
    units: int = _opt(64, min=1)
    embedding_dim: str = _opt("64", int_ok=True, doc="a positive integer, or auto = round(vocabulary size ** 0.25)")
    pooling: str = _opt("max", choices=("last", "max", "mean", "maxmean"),
                        doc="over time, after the last recurrent layer (maxmean: max and mean side by side)")
    embedding_dropout: float = _opt(0.25, min=0.0, max=0.9, doc="on the embedded sequence (never recurrent_dropout)")
    dropout: float = _opt(0.25, min=0.0, max=0.9, doc="between recurrent layers and before the output")
    mask: str = _opt("auto", choices=("auto", "on", "off"),
                     doc="auto: mask padding when shards are post-padded (cuDNN needs right-padded masks)")
    embedding_init: str = _opt("random", doc="random | word2vec:<folder written by make pretrain>")
    embedding_trainable: bool = _opt(True, doc="false freezes the (pretrained) embedding")
    encoder_init: str = _opt("random", doc="random | lm:<folder written by make pretrain-lm>: embedding and "
                                           "first recurrent layer from the language model")
    wide_ngrams: int = _opt(0, min=0, max=6, doc="> 0: wide & deep, a linear model over the ids' hashed 1..n-grams "
                                                 "added to the LSTM/GRU's logit (reviewpipe.model.NgramBag); 0 = off")
    wide_hash_bits: int = _opt(20, min=8, max=26, doc="2 ** wide_hash_bits n-gram weights when wide_ngrams > 0")
    wide_init: str = _opt("zeros", choices=("zeros", "nb"),
                          doc="the n-gram weights' start: zeros, or nb = an NB-weighted logistic regression "
                              "fitted on the training rows' n-grams before training (reviewpipe.ngram.fit_bag)")
    wide_nb_c: float = _opt(1000.0, min=1e-6, doc="inverse L2 strength of the wide_init=nb regression")
    wide_nb_splits: list = _opt(["train"], doc="the train.splits whose labels (soft targets cut at 0.5) fit the "
                                               "wide_init=nb regression; the others stay out of its sample")
    wide_trainable: bool = _opt(True, doc="false freezes the n-gram weights (with wide_init=nb: the LSTM/GRU "
                                          "learns what the linear model misses)")
    wide_nb_folds: int = _opt(0, min=0, max=20, doc="> 1: out-of-fold stacking of a frozen wide_init=nb half; "
                                                    "training weighs each row with a regression fitted without "
                                                    "its fold, inference with the one fitted on every row; 0 = off")


@dataclass(frozen=True)
class TrainConf:
    maxlen: int = _opt(0, min=0, doc="0 = the shards' maxlen; smaller crops them as encode would")
    length_step: int = _opt(0, min=0, doc="> 0: batches of rows of similar length, cropped to a multiple of this "
                                          "(masked post-padded models, one machine); 0 = every batch maxlen wide")
    epochs: int = _opt(6, min=1)
    batch_size: int = _opt(64, min=1)
    optimizer: str = _opt("adam", choices=("adam", "rmsprop"))
    learning_rate: float = _opt(0.002, min=0.0)
    lr_schedule: str = _opt("constant", choices=("constant", "cosine"),
                            doc="cosine: decay from learning_rate to 0 over train.epochs")
    clipnorm: float = _opt(1.0, min=0.0, doc="0 disables gradient clipping")
    ema_momentum: float = _opt(0.0, min=0.0, max=0.9999,
                               doc="> 0: weights replaced by their moving average at each epoch end")
    seed: int = _opt(42, min=0)
    splits: list = _opt([C.TRAIN], doc="labelled shard splits to train on (train, pseudo); never val or test")
    early_stopping_patience: int = _opt(2, min=0, doc="epochs without a better val_loss; 0 disables")
    shuffle_buffer: int = _opt(20000, min=1)
    precision: str = _opt("auto", choices=("auto", "float32", "mixed_float16"),
                          doc="auto: mixed_float16 on GPUs, float32 on the CPU")
    deterministic: bool = _opt(True, doc="enable TF op determinism (reproducible CPU runs)")
    steps_per_epoch: int = _opt(0, min=0, doc="0 = one pass over the train split")
    embeddings_export: bool = _opt(True, doc="write vectors.tsv/metadata.tsv")
    adversarial: str = _opt("off", choices=("off", "at", "vat", "at+vat"),
                            doc="extra training terms on the embeddings (reviewpipe.adversarial): at = adversarial, "
                                "vat = virtual adversarial on train.vat_split rows, at+vat = both")
    adversarial_epsilon: float = _opt(0.02, min=0.0, max=1.0,
                                      doc="the perturbation's size relative to each row's embedded norm")
    vat_split: str = _opt(C.UNSUP, choices=(C.UNSUP, C.TRAIN),
                          doc="the shard split whose rows (labels unused) get the virtual adversarial term")
    word_pairs: str = _opt("conf/word_pairs.toml", doc="intrinsic check pairs; '' skips it")


@dataclass(frozen=True)
class Word2VecConf:
    splits: list = _opt([C.TRAIN, C.UNSUP], doc="reviews to train on; never val or test")
    dim: int = _opt(100, min=2, max=1000)
    window: int = _opt(5, min=1)
    min_count: int = _opt(5, min=1)
    iterations: int = _opt(1, min=1)
    partitions: int = _opt(0, min=0, doc="Word2Vec numPartitions; 0 = Spark's default parallelism")
    step_size: float = _opt(0.025, min=0.0)
    seed: int = _opt(42, min=0)


@dataclass(frozen=True)
class LmConf:
    splits: list = _opt([C.TRAIN, C.UNSUP], doc="shard splits the language model reads; never val or test")
    epochs: int = _opt(1, min=1)
    batch_size: int = _opt(64, min=1)
    learning_rate: float = _opt(0.001, min=0.0)
    clipnorm: float = _opt(1.0, min=0.0, doc="0 disables gradient clipping")
    sampled: int = _opt(512, min=1, doc="negative classes per batch in the sampled softmax")
    length_step: int = _opt(50, min=1, doc="batches of similar length are cropped to a multiple of this")
    steps_per_epoch: int = _opt(0, min=0, doc="0 = one pass over lm.splits")
    eval_rows: int = _opt(1000, min=0, doc="val rows for the full-softmax perplexity; 0 skips it")
    seed: int = _opt(42, min=0)


@dataclass(frozen=True)
class PseudoConf:
    split: str = _opt(C.UNSUP, doc="unlabelled shard split the teacher labels; never val or test")
    threshold: float = _opt(0.9, min=0.5, max=1.0,
                            doc="keep rows with probability >= threshold or <= 1 - threshold")
    balance: bool = _opt(True, doc="keep as many positive as negative rows (the most confident ones)")
    max_rows: int = _opt(0, min=0, doc="0 = every chosen row; else a seeded sample of at most this many "
                                       "(half of each label when balanced)")
    seed: int = _opt(42, doc="seed of the max_rows sample")
    soft: bool = _opt(False, doc="also write the teacher's probability (column target); the student trains "
                                 "on it instead of the 0/1 label (distillation)")
    ngram_share: float = _opt(0.5, min=0.0, max=1.0,
                              doc="weight of the n-gram teachers' mean when Keras runs and n-gram teachers "
                                  "label together; the Keras runs' mean gets the rest")
    batch_size: int = _opt(512, min=1, doc="rows per model call")


@dataclass(frozen=True)
class NgramConf:
    splits: list = _opt([C.TRAIN], doc="labelled reviews it fits on; never val or test (those it predicts)")
    ngram_max: int = _opt(3, min=1, max=6, doc="word 1..ngram_max-grams")
    hash_bits: int = _opt(24, min=10, max=28, doc="2 ** hash_bits feature buckets")
    alpha: float = _opt(1.0, min=1e-6, doc="naive-Bayes smoothing of the log-count ratios")
    c: float = _opt(1.0, min=1e-6, doc="inverse L2 strength of the logistic regression")
    max_iter: int = _opt(1000, min=1)


@dataclass(frozen=True)
class ScoreConf:
    batch_size: int = _opt(512, min=1, doc="rows per model call inside the pandas UDF")
    arrow_batch_rows: int = _opt(2048, min=1, doc="rows per Arrow batch sent to a Python worker")
    tf_threads: int = _opt(1, min=0, doc="inference threads per Python worker (ONNX Runtime's or TF's intra-op); "
                                         "0 = the engine's default (all cores)")
    length_aware: bool = _opt(True, doc="sort each Arrow batch by length and crop model batches to their longest "
                                        "row (masked post-padded runs; same probabilities)")
    engine: str = _opt("auto", choices=("auto", "onnx", "xla", "keras"),
                       doc="onnx: ONNX Runtime on the CPU over the run's model.onnx (made from model.keras when "
                           "missing; the workers never import TensorFlow, a load takes ~0.2 s); xla: one "
                           "XLA-compiled loop over the model's weights (~5 s of CPU per worker to import and "
                           "compile, then ~1.25x onnx's rows/s; GPUs keep Keras); keras: predict_on_batch; "
                           "auto: onnx up to score.auto_onnx_bytes of input per core, xla above.  A model onnx "
                           "or xla does not reproduce falls back to the next (engine_reason in the summary)")
    auto_onnx_bytes: int = _opt(33_554_432, min=0, doc="score.engine=auto: the input bytes per core (as stored) "
                                                       "up to which onnx is used; an input of unknown size gets xla")
    preload: bool = _opt(True, doc="load the engine and the model in the Python workers while the input is "
                                   "read (a background thread per worker), not when the first batch arrives")
    threshold: float = _opt(0.5, min=0.0, max=1.0, doc="predicted_label = probability >= threshold")
    drift_threshold: float = _opt(0.2, min=0.0, doc="score_summary.json's drift flag: a PSI of the length or "
                                                    "probability histogram against the training data above this")
    max_text_bytes: int = _opt(8_388_608, min=1, doc="larger records are quarantined; the rest is truncated "
                                                        "to the run's maxlen by the tokenizer")


@dataclass(frozen=True)
class SparkConf:
    defaults_file: str = _opt("conf/spark-defaults.conf")
    app_name: str = _opt("reviewpipe")
    log_level: str = _opt("WARN", choices=("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"))
    arrow_batch_rows: int = _opt(2048, min=16)


@dataclass(frozen=True)
class PipelineConf:
    data: DataConf = field(default_factory=DataConf)
    ingest: IngestConf = field(default_factory=IngestConf)
    tokenizer: TokenizerConf = field(default_factory=TokenizerConf)
    vocab: VocabConf = field(default_factory=VocabConf)
    encode: EncodeConf = field(default_factory=EncodeConf)
    model: ModelConf = field(default_factory=ModelConf)
    train: TrainConf = field(default_factory=TrainConf)
    score: ScoreConf = field(default_factory=ScoreConf)
    word2vec: Word2VecConf = field(default_factory=Word2VecConf)
    lm: LmConf = field(default_factory=LmConf)
    pseudo: PseudoConf = field(default_factory=PseudoConf)
    ngram: NgramConf = field(default_factory=NgramConf)
    spark: SparkConf = field(default_factory=SparkConf)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = dict(typing.get_type_hints(PipelineConf))

# model.preset fills these keys unless the conf file or --set gives them.  "seed" is the
# seed notebook's model: Embedding(num_words, 32) -> LSTM(32) (or GRU), RMSprop, maxlen 200,
# last state, no dropout.  "default" is the field defaults above.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "seed": {
        "model": {"units": 32, "embedding_dim": "32", "pooling": "last", "embedding_dropout": 0.0,
                  "dropout": 0.0, "bidirectional": False, "layers": 1},
        "train": {"maxlen": 200, "optimizer": "rmsprop", "learning_rate": 0.001, "clipnorm": 0.0,
                  "batch_size": 128, "epochs": 10, "early_stopping_patience": 0},
    },
}


def _coerce(key: str, value: Any, ftype: Any, meta: Mapping[str, Any]) -> Any:
    """Return ``value`` converted to ``ftype`` or raise ConfigError naming ``key``."""
    if ftype is bool:
        if isinstance(value, bool):
            out: Any = value
        elif isinstance(value, str) and value.lower() in ("true", "false"):
            out = value.lower() == "true"
        else:
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif ftype is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        out = value
    elif ftype is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        out = float(value)
    elif ftype is str:
        if isinstance(value, int) and not isinstance(value, bool) and meta.get("int_ok"):
            value = str(value)  # e.g. model.embedding_dim = 64
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        out = value
    elif ftype is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        out = list(value)
    else:  # pragma: no cover - a new field type needs a branch here
        raise ConfigError(f"{key}: unsupported setting type {ftype!r}")
    choices = meta.get("choices")
    if choices is not None and out not in choices:
        raise ConfigError(f"{key}: {out!r} is not one of {', '.join(map(repr, choices))}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and out < lo:
        raise ConfigError(f"{key}: {out!r} is below the minimum {lo}")
    if hi is not None and out > hi:
        raise ConfigError(f"{key}: {out!r} is above the maximum {hi}")
    return out


def _build_section(name: str, values: Mapping[str, Any]) -> Any:
    cls = SECTIONS[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}: unknown setting; valid keys in [{name}] are "
            f"{', '.join(sorted(fields))}")
    kwargs = {k: _coerce(f"{name}.{k}", v, hints[k], fields[k].metadata) for k, v in values.items()}
    return cls(**kwargs)


def _validate(conf: PipelineConf) -> None:
    """Cross-field rules that a single field's type cannot express."""
    bad = [s for s in conf.vocab.splits if s not in C.VOCAB_SPLITS]
    if bad or not conf.vocab.splits:
        raise ConfigError(
            f"vocab.splits: {conf.vocab.splits!r} must name one or more of "
            f"{', '.join(C.VOCAB_SPLITS)} (val and test are held out and never build the vocabulary)")
    if len(conf.tokenizer.split) != 1:
        raise ConfigError(f"tokenizer.split: must be exactly one character, got {conf.tokenizer.split!r}")
    overlap = {s.lower() for s in conf.ingest.positive_labels} & {s.lower() for s in conf.ingest.negative_labels}
    if overlap:
        raise ConfigError(f"ingest.positive_labels: {sorted(overlap)!r} are also negative labels")
    dim = conf.model.embedding_dim
    if dim != "auto" and not (dim.isdigit() and int(dim) > 0):
        raise ConfigError(f"model.embedding_dim: expected a positive integer or 'auto', got {dim!r}")
    init = conf.model.embedding_init
    if init != "random" and not (init.startswith("word2vec:") and len(init) > len("word2vec:")):
        raise ConfigError(f"model.embedding_init: expected random or word2vec:<folder>, got {init!r}")
    mc = conf.model
    if not mc.wide_ngrams and (mc.wide_init != "zeros" or not mc.wide_trainable):
        raise ConfigError(f"model.wide_init={mc.wide_init} and model.wide_trainable={str(mc.wide_trainable).lower()} "
                          f"set the n-gram weights of a wide & deep model; set model.wide_ngrams > 0")
    outside = [s for s in mc.wide_nb_splits if s not in conf.train.splits]
    if mc.wide_init == "nb" and (outside or not mc.wide_nb_splits):
        raise ConfigError(f"model.wide_nb_splits: {list(mc.wide_nb_splits)!r} must name one or more of train.splits "
                          f"{list(conf.train.splits)!r} (the wide_init=nb regression fits on training rows only)")
    if mc.wide_init == "zeros" and not mc.wide_trainable:
        raise ConfigError("model.wide_trainable=false with model.wide_init=zeros freezes the n-gram weights at 0; "
                          "set model.wide_init=nb or model.wide_ngrams=0")
    if mc.wide_nb_folds and (mc.wide_nb_folds < 2 or mc.wide_init != "nb" or mc.wide_trainable):
        raise ConfigError(f"model.wide_nb_folds={mc.wide_nb_folds} stacks a frozen regression out of fold: it needs "
                          f"2 or more folds, model.wide_init=nb and model.wide_trainable=false")
    init = conf.model.encoder_init
    if init != "random" and not (init.startswith("lm:") and len(init) > len("lm:")):
        raise ConfigError(f"model.encoder_init: expected random or lm:<folder>, got {init!r}")
    for section in ("word2vec", "lm", "ngram"):
        splits = getattr(conf, section).splits
        bad = [s for s in splits if s not in C.VOCAB_SPLITS]
        if bad or not splits:
            raise ConfigError(f"{section}.splits: {splits!r} must name one or more of "
                              f"{', '.join(C.VOCAB_SPLITS)} (val and test are held out)")
    held = [s for s in conf.train.splits if s in C.HELD_OUT]
    if held or not conf.train.splits:
        raise ConfigError(f"train.splits: {conf.train.splits!r} must name labelled splits to train on, such as "
                          f"{C.TRAIN} and {C.PSEUDO}; {' and '.join(C.HELD_OUT)} are held out")
    if conf.pseudo.split in C.HELD_OUT:
        raise ConfigError(f"pseudo.split: {conf.pseudo.split!r} is held out; label {C.UNSUP} rows")
    if conf.train.maxlen > conf.encode.maxlen:
        raise ConfigError(f"train.maxlen: {conf.train.maxlen} is above encode.maxlen {conf.encode.maxlen}; "
                          f"the trainer can only crop shards, re-encode for longer sequences")
    if conf.tokenizer.oov_token and conf.tokenizer.oov_token.strip() != conf.tokenizer.oov_token:
        raise ConfigError(f"tokenizer.oov_token: must not have surrounding spaces, got {conf.tokenizer.oov_token!r}")


def parse_override(item: str) -> tuple[str, str, Any]:
    """Parse one ``section.key=value`` override; the value is read as TOML, else as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    dotted, raw = item.split("=", 1)
    dotted = dotted.strip()
    if dotted.count(".") != 1:
        raise ConfigError(f"--set {item!r}: the key must look like section.key")
    section, key = dotted.split(".")
    if section not in SECTIONS:
        raise ConfigError(f"{dotted}: unknown section {section!r}; sections are {', '.join(SECTIONS)}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words such as keras or train,unsup
    return section, key, value


def load_conf(path: str | Path | None = None, overrides: Sequence[str] = ()) -> PipelineConf:
    """Load defaults, then ``path`` (TOML), then ``overrides``; validate and return the conf."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--conf {str(p)!r}: no such file")
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--conf {str(p)!r}: not valid TOML: {e}") from e
        for section, values in doc.items():
            if section not in SECTIONS:
                raise ConfigError(f"{section}: unknown section in {p}; sections are {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a [table] in {p}")
            raw[section].update(values)
    for item in overrides:
        section, key, value = parse_override(item)
        raw[section][key] = value
    # The preset sits between the built-in defaults and what the file and --set give.
    preset = raw["model"].get("preset", ModelConf.preset)
    if preset not in PRESETS:
        raise ConfigError(f"model.preset: {preset!r} is not one of {', '.join(map(repr, PRESETS))}")
    for section, values in PRESETS[preset].items():
        raw[section] = {**values, **raw[section]}
    conf = PipelineConf(**{name: _build_section(name, values) for name, values in raw.items()})
    _validate(conf)
    return conf
