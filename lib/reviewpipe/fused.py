"""The classifier's inference as one XLA-compiled loop over time, for batch scoring.

Keras runs an LSTM/GRU on the CPU as a TensorFlow while-loop of small ops per time step, and
it cannot compile it for the cropped widths that length-aware scoring feeds it (one XLA
program per width).  :func:`compile_classifier` reads the trained model's own weights and
builds the same computation with a fixed input shape ``[batch, maxlen]`` and a loop that
runs only to the batch's longest row, compiled once (``jit_compile``): XLA fuses each step's
gates into a few kernels.  The first layer's input projection of every word (``embedding @
kernel + bias``) is computed once, so a step gathers it instead of multiplying: half a step's
arithmetic.  On this 2-core machine it predicts about 3x faster than ``predict_on_batch`` on
the same cropped batches (docs/results.md), with probabilities within 1e-6 of Keras's.

It covers what :func:`reviewpipe.model.build_model` builds: an embedding, the optional
padding mask, LSTM or GRU layers (stacked, bidirectional), pooling over time (last, max,
mean, maxmean) and the sigmoid output, or the wide & deep output (:class:`reviewpipe.model.NgramBag`'s
n-gram logit added to the recurrent half's), in float32.  Anything else (other layers or
activations, a mixed precision policy) gets ``None`` and a reason, and the caller keeps Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from reviewpipe import constants as C


class Unsupported(ValueError):
    """The model has something the fused loop does not reproduce; Keras predicts it instead."""


@dataclass(frozen=True)
class Recurrent:
    kind: str  # lstm | gru
    units: int
    weights: tuple  # (kernel, recurrent_kernel, bias) per direction
    bidirectional: bool
    sequences: bool  # returns the whole sequence (not only its last state)


def _cell_weights(layer, backward: bool = False) -> tuple:
    from keras import activations, layers

    cell = layer.cell
    kind = "lstm" if isinstance(layer, layers.LSTM) else "gru"
    if cell.activation is not activations.tanh or cell.recurrent_activation is not activations.sigmoid:
        raise Unsupported(f"{layer.name}: activations other than tanh/sigmoid")
    if not cell.use_bias:
        raise Unsupported(f"{layer.name}: use_bias=False")
    if kind == "gru" and not cell.reset_after:
        raise Unsupported(f"{layer.name}: reset_after=False")
    if layer.stateful or layer.go_backwards != backward:  # a Bidirectional's backward layer reads backwards
        raise Unsupported(f"{layer.name}: go_backwards or stateful")
    return kind, cell.units, tuple(np.asarray(w, np.float32) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))


def describe(model) -> dict:
    """The model as the fused loop sees it (raises :class:`Unsupported`)."""
    from keras import activations, layers

    from reviewpipe.model import NgramBag, PaddingMask, TimePooling

    plan: dict = {"masked": False, "recurrent": [], "pooling": "last", "wide": None}
    linear_out = added = final_sigmoid = False
    for layer in model.layers:
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and getattr(policy, "compute_dtype", "float32") != "float32":
            raise Unsupported(f"{layer.name}: computes in {policy.compute_dtype}, not float32")
        if isinstance(layer, layers.InputLayer) or isinstance(layer, (layers.Dropout, layers.SpatialDropout1D)):
            continue  # dropout does nothing at inference
        if isinstance(layer, layers.Embedding):
            if "embedding" in plan or plan["recurrent"]:
                raise Unsupported("an embedding that is not the first layer")
            if getattr(layer, "mask_zero", False):
                raise Unsupported(f"{layer.name}: mask_zero (the builder masks with PaddingMask)")
            plan["embedding"] = np.asarray(layer.embeddings, np.float32)
        elif isinstance(layer, PaddingMask):
            plan["masked"] = True
        elif isinstance(layer, (layers.LSTM, layers.GRU)):
            kind, units, w = _cell_weights(layer)
            plan["recurrent"].append(Recurrent(kind, units, (w,), False, bool(layer.return_sequences)))
        elif isinstance(layer, layers.Bidirectional):
            if layer.merge_mode != "concat":
                raise Unsupported(f"{layer.name}: merge_mode {layer.merge_mode!r}")
            fk, units, fw = _cell_weights(layer.forward_layer)
            bk, _, bw = _cell_weights(layer.backward_layer, backward=True)
            if fk != bk:
                raise Unsupported(f"{layer.name}: different forward and backward cells")
            plan["recurrent"].append(Recurrent(fk, units, (fw, bw), True, bool(layer.return_sequences)))
        elif isinstance(layer, TimePooling):
            plan["pooling"] = layer.mode
        elif isinstance(layer, layers.Dense):
            linear_out = layer.activation is activations.linear
            if not (linear_out or layer.activation is activations.sigmoid) or layer.units != 1 or not layer.use_bias:
                raise Unsupported(f"{layer.name}: not Dense(1, sigmoid), or Dense(1) before a wide & deep sum")
            plan["output"] = (np.asarray(layer.kernel, np.float32), np.asarray(layer.bias, np.float32))
        elif isinstance(layer, NgramBag):  # wide & deep: the n-gram logit is added to the output's
            plan["wide"] = (layer.orders, layer.buckets, np.asarray(layer.table, np.float32))
        elif isinstance(layer, layers.Add):
            added = True
        elif isinstance(layer, layers.Activation) and layer.activation is activations.sigmoid:
            final_sigmoid = True
        else:
            raise Unsupported(f"layer {layer.name} ({type(layer).__name__})")
    rec = plan["recurrent"]
    if "embedding" not in plan or not rec or "output" not in plan:
        raise Unsupported("not embedding -> LSTM/GRU -> Dense(1, sigmoid)")
    if (plan["wide"] is not None, linear_out, added, final_sigmoid) not in ((False,) * 4, (True,) * 4):
        raise Unsupported("not embedding -> LSTM/GRU -> Dense(1, sigmoid), nor its wide & deep form "
                          "(Dense(1) + NgramBag, then a sigmoid)")
    if any(not r.sequences for r in rec[:-1]) or rec[-1].sequences != (plan["pooling"] != "last"):
        raise Unsupported("return_sequences does not match the pooling")
    return plan


def _step(kind: str, w: tuple, units: int):
    """One time step of a Keras LSTMCell/GRUCell (implementation 2, the default), from the
    step's input projection ``x @ kernel + bias`` (GRU: ``bias[0]``), which the caller gives."""
    import tensorflow as tf

    recurrent = tf.constant(w[1])
    if kind == "lstm":  # its bias is in the projection
        def lstm(xz, state):
            h, c = state
            z = xz + tf.matmul(h, recurrent)
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            return h, (h, c)
        return lstm, 2

    def gru(xz, state):
        (h,) = state
        xz, xr, xh = tf.split(xz, 3, axis=1)
        rz, rr, rh = tf.split(tf.matmul(h, recurrent) + w[2][1], 3, axis=1)  # the recurrent half of the bias
        z, r = tf.sigmoid(xz + rz), tf.sigmoid(xr + rr)
        h = z * h + (1 - z) * tf.tanh(xh + r * rh)
        return h, (h,)
    return gru, 1


def _input_bias(kind: str, bias: np.ndarray) -> np.ndarray:
    return bias if kind == "lstm" else bias[0]  # GRU (reset_after): the input half of its two biases


def projection(embedding: np.ndarray, kind: str, w: tuple) -> np.ndarray:
    """The first recurrent layer's input projection of every word, ``embedding @ kernel +
    bias``: a step gathers its rows instead of multiplying (half a step's arithmetic)."""
    return (embedding @ w[0] + _input_bias(kind, w[2])).astype(np.float32)


# past this size (per direction) the first layer multiplies in the loop instead of holding the table
PROJECTION_MAX_BYTES = 512 * 2**20


def compile_classifier(model, maxlen: int, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """``ids [n <= batch_size, <= maxlen] int32 -> probabilities [n]``, compiled once.

    Post-padded ids are read up to the longest row's last id; masked steps keep the state (as
    Keras's masked RNN does) and are left out of the pooling."""
    import tensorflow as tf

    from reviewpipe.model import ngram_logit

    plan = describe(model)
    masked, pooling, layers = plan["masked"], plan["pooling"], plan["recurrent"]
    # variables, not constants: XLA takes them as arguments instead of folding vocabulary-sized
    # literals into the program (compile time and memory would grow with the vocabulary)
    embedding = plan["embedding"]
    first = layers[0]
    if embedding.shape[0] * first.weights[0][0].shape[1] * 4 <= PROJECTION_MAX_BYTES:
        tables = [tf.Variable(projection(embedding, first.kind, w), trainable=False) for w in first.weights]
        table = None
    else:
        tables, table = None, tf.Variable(embedding, trainable=False)
    out_kernel, out_bias = (tf.constant(a) for a in plan["output"])
    wide = plan["wide"] and (plan["wide"][0], plan["wide"][1], tf.Variable(plan["wide"][2], trainable=False))

    def direction(project, valid, steps, kind, w, units, reverse, keep_sequence, batch):
        step, n_states = _step(kind, w, units)
        zeros = tf.zeros([batch, units])
        pooled = (tf.fill([batch, units], -6.0e4), zeros)  # running max and sum over valid steps
        seq = tf.TensorArray(tf.float32, size=maxlen, element_shape=[batch, units]) if keep_sequence else None

        def body(i, state, pooled, seq):
            t = steps - 1 - i if reverse else i
            h, new = step(project(t), state)
            m = valid(t)
            if m is not None:  # a masked step keeps the state (and so the output) and is not pooled
                new = tuple(tf.where(m, a, b) for a, b in zip(new, state))
                h, m = new[0], m | tf.equal(t, 0)  # but TimePooling always counts the first step
                pooled = (tf.where(m, tf.maximum(pooled[0], h), pooled[0]), pooled[1] + tf.where(m, h, 0.0))
            else:
                pooled = (tf.maximum(pooled[0], h), pooled[1] + h)
            return i + 1, new, pooled, seq.write(t, new[0]) if keep_sequence else seq

        _, state, pooled, seq = tf.while_loop(lambda i, *a: i < steps, body,
                                              (0, (zeros,) * n_states, pooled, seq if keep_sequence else 0),
                                              maximum_iterations=maxlen)
        return state[0], pooled, seq if keep_sequence else None

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([batch_size, maxlen], tf.int32),
                                                    tf.TensorSpec([], tf.int32)])
    def predict(ids, steps):
        batch = batch_size
        # The recurrent layers see ``ids != 0``: Keras hands them that mask (not PaddingMask's
        # first step kept), so an empty review's output is zeros, as Keras's predict gives.
        valid = (lambda t: (ids[:, t] != C.PAD_INDEX)[:, None]) if masked else (lambda t: None)
        read = lambda t: tf.gather(table, ids[:, t])  # noqa: E731
        for n, layer in enumerate(layers):
            keep = n < len(layers) - 1
            if n == 0 and tables is not None:  # the first layer's projections, gathered per word
                projects = [(lambda p: lambda t: tf.gather(p, ids[:, t]))(p) for p in tables]
            else:
                projects = [(lambda r, k, b: lambda t: tf.matmul(r(t), k) + b)(
                    read, tf.constant(w[0]), tf.constant(_input_bias(layer.kind, w[2]))) for w in layer.weights]
            outs = [direction(projects[d], valid, steps, layer.kind, w, layer.units, d == 1, keep, batch)
                    for d, w in enumerate(layer.weights)]
            if keep:
                seqs = [o[2] for o in outs]
                read = (lambda seqs: lambda t: tf.concat([s.read(t) for s in seqs], axis=1))(seqs)
        last = tf.concat([o[0] for o in outs], axis=1)
        biggest = tf.concat([o[1][0] for o in outs], axis=1)
        total = tf.concat([o[1][1] for o in outs], axis=1)
        if masked:
            cols = tf.range(maxlen)[None, :]
            kept = (ids != C.PAD_INDEX) | (cols == 0)
            count = tf.reduce_sum(tf.cast(kept & (cols < steps), tf.float32), axis=1, keepdims=True)
        else:
            count = tf.fill([batch, 1], tf.cast(steps, tf.float32))
        mean = total / tf.maximum(count, 1.0)
        x = {"last": last, "max": biggest, "mean": mean, "maxmean": tf.concat([biggest, mean], axis=1)}[pooling]
        logit = tf.matmul(x, out_kernel) + out_bias
        if wide:
            logit += ngram_logit(ids, *wide)
        return tf.reshape(tf.sigmoid(logit), [-1])

    def run(ids: np.ndarray) -> np.ndarray:
        n, width = ids.shape
        if n > batch_size or width > maxlen:
            raise ValueError(f"a batch of {ids.shape} does not fit the compiled [{batch_size}, {maxlen}]")
        full = np.zeros((batch_size, maxlen), np.int32)
        full[:n, :width] = ids
        steps = width if not masked else max(1, int(np.flatnonzero(np.any(ids != C.PAD_INDEX, axis=0)).max(initial=0)) + 1)
        return predict(tf.constant(full), tf.constant(steps, tf.int32)).numpy()[:n].astype(np.float64)

    return run

