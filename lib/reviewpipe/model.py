"""Embedding -> [Bidirectional] LSTM/GRU -> pooling over time -> Dense(1, sigmoid), from conf.

cuDNN: Keras runs the fused cuDNN kernel when the layer keeps its default activations,
``recurrent_dropout=0``, ``unroll=False`` and ``use_bias=True`` (GRU: ``reset_after=True``)
and the mask, if any, is right-padded with no fully masked row.  The builder keeps all of
these: dropout goes on the embedded sequence and between layers, never as
``recurrent_dropout``; masks are used only with post-padded shards; and :class:`PaddingMask`
always keeps the first step, so an empty review (all padding) is one padding step instead of
a fully masked row, which the cuDNN kernel rejects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from reviewpipe import constants as C
from reviewpipe.config import ConfigError, ModelConf, TrainConf

log = logging.getLogger(__name__)


def padding_mask(ids):
    """``ids != 0`` with the first step always kept (a right-padded mask with no empty row)."""
    first = ops.cumsum(ops.ones_like(ids), axis=1) == 1  # also when the length is only known at run time
    return ops.logical_or(ops.not_equal(ids, C.PAD_INDEX), first)


@keras.saving.register_keras_serializable(package="reviewpipe")
class PaddingMask(layers.Layer):
    """Pass the embedded sequence through and attach ``ids != 0`` with the first step kept."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs[1]

    def compute_mask(self, inputs, previous_mask=None):
        return padding_mask(inputs[0])

    def compute_output_shape(self, input_shape):
        return input_shape[1]


@keras.saving.register_keras_serializable(package="reviewpipe")
class TimePooling(layers.Layer):
    """Max, mean, or both side by side (``maxmean``: the max then the mean of each unit,
    ULMFiT's concat pooling less the last state) over time, ignoring masked (padding) steps."""

    MODES = ("max", "mean", "maxmean")

    def __init__(self, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"TimePooling mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            pooled = {"max": lambda: ops.max(inputs, axis=1), "mean": lambda: ops.mean(inputs, axis=1)}
        else:
            # The first step always counts, as PaddingMask keeps it: Keras's LSTM/GRU hand on an
            # all-False mask for a row of padding only, and the max of no step would be -6e4.
            mask = ops.logical_or(mask, ops.cumsum(ops.ones_like(mask, dtype="int32"), axis=1) == 1)
            m = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
            lowest = ops.cast(-6.0e4, inputs.dtype)  # below any tanh output, float16-safe
            pooled = {"max": lambda: ops.max(inputs * m + lowest * (1 - m), axis=1),
                      "mean": lambda: ops.sum(inputs * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1)}
        if self.mode == "maxmean":
            return ops.concatenate([pooled["max"](), pooled["mean"]()], axis=-1)
        return pooled[self.mode]()

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        units = input_shape[2]
        return (input_shape[0], 2 * units if self.mode == "maxmean" and units is not None else units)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


NGRAM_MULTIPLIER = 1_000_003


def ngram_hashes(ids, orders: int, buckets: int) -> list:
    """``[(buckets [batch, t] int64, valid [batch, t] bool)]`` for n = 1..orders: the n-gram
    that starts at each step, hashed as ``h = n`` then ``h = (h * NGRAM_MULTIPLIER + id) %
    buckets`` for each of its ids (int64, so no step overflows).  An n-gram that reaches a
    padding id (0), or runs past the row's end, is not valid.  Works on any backend tensor
    (Keras ops); reviewpipe.onnxmodel builds the same graph."""
    ids = ops.cast(ids, "int64")
    padded = ops.pad(ids, [[0, 0], [0, orders - 1]]) if orders > 1 else ids
    # the k-th id of the n-gram at each step: the ids shifted left by k, as wide as the ids
    parts = [padded[:, k:(k - (orders - 1)) or None] for k in range(orders)]
    out = []
    for n in range(1, orders + 1):
        h, valid = n, None
        for part in parts[:n]:
            h = (h * NGRAM_MULTIPLIER + part) % buckets
            nonpad = ops.not_equal(part, C.PAD_INDEX)
            valid = nonpad if valid is None else ops.logical_and(valid, nonpad)
        out.append((h, valid))
    return out


def ngram_logit(ids, orders: int, buckets: int, table, offset=None):
    """``[batch, 1]``: the sum of the table's weights at a row's n-gram hashes over the square
    root of their count (0 for an empty row); :class:`NgramBag`'s output, and the XLA loop's.
    ``offset`` ``[batch, 1]`` (int64) moves each row's hashes into its own part of a longer table."""
    total = count = 0.0
    for h, valid in ngram_hashes(ids, orders, buckets):
        v = ops.cast(valid, "float32")
        total = total + ops.sum(ops.take(table, h if offset is None else h + offset) * v, axis=1)
        count = count + ops.sum(v, axis=1)
    return ops.expand_dims(total / ops.sqrt(ops.maximum(count, 1.0)), -1)


def row_fold(ids, folds: int):
    """``[batch]`` int64: each row's out-of-fold group for ``model.wide_nb_folds``, the sum of
    its ids modulo ``folds``.  Padding adds 0, so padding or cropping a row leaves its fold as it
    is; identical rows share a fold.  Works on numpy arrays and tensors."""
    return ops.mod(ops.sum(ops.cast(ids, "int64"), axis=1), folds)


class _FoldTables:
    """The training-only tables of :meth:`NgramBag.set_fold_tables`.  A plain holder, so that
    neither Keras nor TensorFlow tracks the variable: it never reaches a saved model."""

    def __init__(self, tables: np.ndarray):
        import tensorflow as tf

        self.folds = len(tables)
        self.flat = tf.Variable(np.ascontiguousarray(tables, np.float32).reshape(-1), trainable=False,
                                name="ngram_bag_fold_tables")


@keras.saving.register_keras_serializable(package="reviewpipe")
class NgramBag(layers.Layer):
    """A linear model over the review's word 1..``orders``-grams: the wide half of a wide &
    deep classifier (Cheng et al. 2016), the feature set of the n-gram teacher
    (:mod:`reviewpipe.ngram`) read from the same ids the LSTM reads.

    Each n-gram is hashed into one of ``buckets`` weights (:func:`ngram_hashes`).  The output
    ``[batch, 1]`` is the sum of a row's n-gram weights over the square root of their count (0
    for an empty row): a linear logit whose scale grows slowly with the review's length.

    Out-of-fold stacking (``model.wide_nb_folds``): with :meth:`set_fold_tables`, a training
    call weighs each row with the table of its fold (:func:`row_fold`), a regression that never
    saw that row, while inference keeps ``table``.
    """

    def __init__(self, orders: int = 2, buckets: int = 2**20, **kwargs):
        super().__init__(**kwargs)
        if orders < 1 or buckets < 2:
            raise ValueError(f"NgramBag needs orders >= 1 and buckets >= 2, got {orders} and {buckets}")
        self.orders, self.buckets = int(orders), int(buckets)
        self._folds = None

    def build(self, input_shape):
        self.table = self.add_weight(shape=(self.buckets,), initializer="zeros", name="table", dtype="float32")

    def set_fold_tables(self, tables) -> None:
        """``tables`` [folds, buckets]: what training calls weigh row by row; ``None`` drops them.
        They are not weights of the layer: checkpoints and saved models hold ``table`` only."""
        if tables is not None and (np.ndim(tables) != 2 or len(tables) < 2 or np.shape(tables)[1] != self.buckets):
            raise ValueError(f"fold tables must be [folds >= 2, {self.buckets}], got {np.shape(tables)}")
        self._folds = None if tables is None else _FoldTables(tables)

    @property
    def folds(self) -> int:
        return self._folds.folds if self._folds is not None else 0

    def call(self, ids, training=None):
        if training and self._folds is not None:
            offset = ops.expand_dims(row_fold(ids, self._folds.folds) * self.buckets, -1)
            return ngram_logit(ids, self.orders, self.buckets, self._folds.flat, offset)
        return ngram_logit(ids, self.orders, self.buckets, self.table)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "orders": self.orders, "buckets": self.buckets}


@dataclass(frozen=True)
class ModelPlan:
    """What :func:`build_model` will build, decided before TensorFlow does any work."""

    vocab_rows: int
    embedding_dim: int
    maxlen: int | None  # None: any width (batches cropped by length, train.length_step)
    masked: bool
    cudnn: bool
    cudnn_reason: str


def plan(mc: ModelConf, vocab_rows: int, maxlen: int | None, padding: str, pretrained_dim: int = 0) -> ModelPlan:
    """Resolve ``auto`` settings and check the padding/masking rules for the cuDNN kernel.

    Pretrained vectors fix the embedding width (``pretrained_dim``).
    """
    dim = round(vocab_rows ** 0.25) if mc.embedding_dim == "auto" else int(mc.embedding_dim)
    if pretrained_dim:
        if dim != pretrained_dim:
            log.info("embedding width %d from the pretrained vectors (model.embedding_dim %s ignored)",
                     pretrained_dim, mc.embedding_dim)
        dim = pretrained_dim
    if mc.mask == "on" and padding == "pre":
        raise ConfigError("model.mask: 'on' needs post-padded shards (encode.padding=post); a mask over "
                          "left padding is not right-padded and cannot use the cuDNN kernel")
    masked = mc.mask == "on" or (mc.mask == "auto" and padding == "post")
    if not masked and padding == "post" and mc.pooling == "last":
        log.warning("post-padded shards without a mask: the last state is read after the padding")
    reason = ("defaults kept (tanh/sigmoid, no recurrent_dropout, use_bias, no unroll"
              + (", reset_after" if mc.cell == "gru" else "") + ")"
              + ("; mask is right-padded" if masked else "; no mask"))
    return ModelPlan(vocab_rows, max(1, dim), maxlen, masked, True, reason)


def build_model(mc: ModelConf, p: ModelPlan) -> keras.Model:
    """The classifier; the output layer is float32 under a mixed precision policy."""
    ids = keras.Input((p.maxlen,), dtype="int32", name=C.IDS)
    x = layers.Embedding(p.vocab_rows, p.embedding_dim, trainable=mc.embedding_trainable, name="embedding")(ids)
    out = _head(mc, p, ids, x, lambda name, make: make())
    return keras.Model(ids, out, name=f"{'bi' if mc.bidirectional else ''}{mc.cell}_classifier")


def embedded_head(model: keras.Model, mc: ModelConf, p: ModelPlan) -> keras.Model:
    """``[ids, embedded ids] -> probability`` with the classifier's own layers after its
    embedding (shared, not copied): what adversarial training perturbs (reviewpipe.adversarial)."""
    ids = keras.Input((None,), dtype="int32", name=C.IDS)
    embedded = keras.Input((None, p.embedding_dim), name="embedded")
    return keras.Model([ids, embedded], _head(mc, p, ids, embedded, lambda name, make: model.get_layer(name)),
                       name=f"{model.name}_head")


def _head(mc: ModelConf, p: ModelPlan, ids, x, layer):
    """The layers after the embedding, in order; ``layer(name, make)`` builds or finds each."""
    if p.masked:
        x = layer("padding_mask", lambda: PaddingMask(name="padding_mask"))([ids, x])
    if mc.embedding_dropout:
        x = layer("embedding_dropout", lambda: layers.SpatialDropout1D(mc.embedding_dropout,
                                                                       name="embedding_dropout"))(x)
    rnn = layers.LSTM if mc.cell == "lstm" else layers.GRU
    for i in range(mc.layers):
        last = i == mc.layers - 1
        cell_name, seqs = f"{mc.cell}_{i + 1}", not (last and mc.pooling == "last")
        if mc.bidirectional:
            x = layer(f"bi_{cell_name}", lambda: layers.Bidirectional(
                rnn(mc.units, return_sequences=seqs, name=cell_name), name=f"bi_{cell_name}"))(x)
        else:
            x = layer(cell_name, lambda: rnn(mc.units, return_sequences=seqs, name=cell_name))(x)
        if not last and mc.dropout:
            x = layer(f"dropout_{i + 1}", lambda: layers.Dropout(mc.dropout, name=f"dropout_{i + 1}"))(x)
    if mc.pooling != "last":
        x = layer(f"{mc.pooling}_over_time", lambda: TimePooling(mc.pooling, name=f"{mc.pooling}_over_time"))(x)
    if mc.dropout:
        x = layer("output_dropout", lambda: layers.Dropout(mc.dropout, name="output_dropout"))(x)
    if not mc.wide_ngrams:
        return layer("sentiment", lambda: layers.Dense(1, activation="sigmoid", dtype="float32", name="sentiment"))(x)
    # wide & deep: the recurrent half's logit plus the n-gram bag's, from the ids (never the
    # perturbed embeddings of adversarial training), in float32
    deep = layer("deep_logit", lambda: layers.Dense(1, dtype="float32", name="deep_logit"))(x)
    wide = layer("ngram_bag", lambda: NgramBag(mc.wide_ngrams, 2**mc.wide_hash_bits, dtype="float32",
                                               trainable=mc.wide_trainable, name="ngram_bag"))(ids)
    logit = layer("wide_deep", lambda: layers.Add(dtype="float32", name="wide_deep"))([deep, wide])
    return layer("sentiment", lambda: layers.Activation("sigmoid", dtype="float32", name="sentiment"))(logit)


def _hard(y_true):
    """A target in [0, 1] as its 0/1 label (>= 0.5 is positive, as pseudo-labels are cut)."""
    return ops.cast(ops.greater_equal(ops.cast(y_true, "float32"), 0.5), "float32")


@keras.saving.register_keras_serializable(package="reviewpipe")
class LabelAccuracy(keras.metrics.BinaryAccuracy):
    """Binary accuracy against the target's 0/1 label.  The same as Keras's on 0/1 labels; on a
    soft target (a teacher's probability, ``pseudo.soft``) Keras would count every row wrong."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_hard(y_true), y_pred, sample_weight)


@keras.saving.register_keras_serializable(package="reviewpipe")
class LabelAUC(keras.metrics.AUC):
    """ROC AUC against the target's 0/1 label (Keras's AUC counts any target > 0 as positive)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_hard(y_true), y_pred, sample_weight)


def compile_model(model: keras.Model, tc: TrainConf, steps_per_epoch: int = 1) -> None:
    lr = tc.learning_rate
    if tc.lr_schedule == "cosine":  # a function of the optimizer's step count, so --resume keeps its place
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, tc.epochs * steps_per_epoch))
    kwargs = {"learning_rate": lr}
    if tc.clipnorm:
        kwargs["clipnorm"] = tc.clipnorm
    if tc.ema_momentum:
        # An exponential moving average of the weights replaces them after each epoch's last
        # step, so validation, checkpoints and the next epoch all start from the average.
        kwargs.update(use_ema=True, ema_momentum=tc.ema_momentum, ema_overwrite_frequency=max(1, steps_per_epoch))
    opt = keras.optimizers.Adam(**kwargs) if tc.optimizer == "adam" else keras.optimizers.RMSprop(**kwargs)
    # Binary cross-entropy takes a soft target as it is (distillation); the metrics read its label.
    model.compile(optimizer=opt, loss="binary_crossentropy",
                  metrics=[LabelAccuracy(name="accuracy"), LabelAUC(name="auc")])


def first_recurrent_layer(model: keras.Model):
    """The first LSTM/GRU (the forward one of a Bidirectional pair): what a language model pretrains."""
    return recurrent_layers(model)[0]


def recurrent_layers(model: keras.Model) -> list:
    """The LSTM/GRU layers (inside Bidirectional wrappers too)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, layers.Bidirectional):
            out += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, (layers.LSTM, layers.GRU)):
            out.append(layer)
    return out


def cudnn_blockers(layer) -> list[str]:
    """Why ``layer`` cannot use the fused cuDNN kernel (empty when it can)."""
    cell = layer.cell
    bad = []
    if cell.activation is not keras.activations.tanh:
        bad.append("activation is not tanh")
    if cell.recurrent_activation is not keras.activations.sigmoid:
        bad.append("recurrent_activation is not sigmoid")
    if getattr(cell, "recurrent_dropout", 0):
        bad.append("recurrent_dropout > 0")
    if layer.unroll:
        bad.append("unroll=True")
    if not cell.use_bias:
        bad.append("use_bias=False")
    if isinstance(layer, layers.GRU) and not cell.reset_after:
        bad.append("reset_after=False")
    if layer.use_cudnn is False:
        bad.append("use_cudnn=False")
    return bad


# ---------------------------------------------------------------------------------------
# length-aware inference

CROP_STEP = 32  # length-aware batches are cropped to a multiple of this many ids


def free_width(model: keras.Model) -> keras.Model:
    """The same layers and weights over a (None, None) input, for batches cropped to their
    longest row (a masked, post-padded model ignores the columns past a row's last id)."""
    free = keras.models.clone_model(model, input_tensors=keras.Input((None,), dtype="int32", name=C.IDS))
    free.set_weights(model.get_weights())
    return free


def crop(ids):
    """A post-padded batch cut to its longest row, rounded up to CROP_STEP ids (so TensorFlow
    sees few distinct widths) and never wider than it was."""
    import numpy as np

    if not len(ids):
        return ids
    longest = int(np.count_nonzero(ids, axis=1).max())
    return ids[:, :min(ids.shape[1], max(CROP_STEP, -(-longest // CROP_STEP) * CROP_STEP))]


def predict_length_aware(free: keras.Model, ids, batch_size: int):
    """Probabilities of post-padded ``ids`` in row order, predicted on batches of rows of
    similar length, each cropped (``free``: :func:`free_width` of a masked model)."""
    import numpy as np

    order = np.argsort(np.count_nonzero(ids, axis=1), kind="stable")
    out = np.empty(len(ids), np.float64)
    for start in range(0, len(ids), batch_size):
        rows = order[start:start + batch_size]
        out[rows] = np.asarray(free.predict_on_batch(crop(ids[rows])), np.float64).reshape(-1)
    return out
