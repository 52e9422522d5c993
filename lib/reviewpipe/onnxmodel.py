"""The classifier as an ONNX graph, for batch scoring with ONNX Runtime instead of TensorFlow.

A scoring worker that predicts with TensorFlow first imports it (3.8 s of CPU on this 2-core
machine, every Python worker) and loads and compiles the model (1.4 s more); ONNX Runtime
imports and opens the same model in about 0.2 s, in a tenth of the memory.  :func:`to_onnx`
builds the graph from the trained model's own weights, as :mod:`reviewpipe.fused` reads them
(:func:`reviewpipe.fused.describe`: the same layers are covered and the same ones refused),
using ONNX's own ``LSTM``/``GRU`` operators:

* the embedding is a ``Gather`` of the ids, time-major;
* a masked (post-padded) model gives each row its length, the count of its non-padding ids,
  as ``sequence_lens``: the operator stops each row there and zero-fills the steps after it,
  as Keras's masked RNN keeps its state there and the pooling leaves them out.  An empty
  review has length 0, so its outputs are zeros, the output Keras gives it;
* Keras's gate order (LSTM ``i f c o``) becomes ONNX's (``i o f c``); a GRU with
  ``reset_after`` is ``linear_before_reset=1``, its two biases ONNX's ``Wb`` and ``Rb``;
* the pooling (last, max, mean, maxmean) follows :class:`reviewpipe.model.TimePooling`,
  which always counts the first step.

The widths are free (``[n, t]``): a length-sorted batch is cropped to its longest row before
it is run, so a batch of short reviews runs few steps.  The file records whether the model is
masked (``masked`` in its metadata) and which Keras file it was made from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from reviewpipe import constants as C

log = logging.getLogger(__name__)

OPSET = 18  # ReduceMax/ReduceSum take their axes as an input from 18 on
IDS, PROBABILITY = "ids", "probability"
SOURCE_KEY = "source_sha256"
MAX_BYTES = 2**31 - 2**26  # protobuf's 2 GiB message limit, less room for the graph itself


def _gates(kind: str, a: np.ndarray) -> np.ndarray:
    """Keras's gate blocks (last axis) in ONNX's order: LSTM i f c o -> i o f c; GRU z r h as is."""
    if kind == "gru":
        return a
    i, f, c, o = np.split(a, 4, axis=-1)
    return np.concatenate([i, o, f, c], axis=-1)


def _onnx_weights(kind: str, w: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction's (W [gates*units, in], R [gates*units, units], B [2*gates*units])."""
    kernel, recurrent, bias = w
    if kind == "lstm":
        b = np.concatenate([_gates(kind, bias), np.zeros_like(bias)])
    else:  # reset_after: bias [2, 3*units] is the input half and the recurrent half
        b = np.concatenate([bias[0], bias[1]])
    return _gates(kind, kernel).T, _gates(kind, recurrent).T, b


def _wide_logit(wide: tuple, const, node) -> str:
    """:class:`reviewpipe.model.NgramBag` as ONNX nodes: the hashes of
    :func:`reviewpipe.model.ngram_hashes` in int64, the table gathered, ``[n, 1]``."""
    from onnx import TensorProto

    from reviewpipe.model import NGRAM_MULTIPLIER

    orders, buckets, table = wide
    i64 = lambda name, v: const(name, np.array(v, np.int64))  # noqa: E731
    ids = node("Cast", [IDS], "wide_ids", to=TensorProto.INT64)
    if orders > 1:
        ids = node("Pad", [ids, i64("wide_pads", [0, 0, 0, orders - 1])], "wide_padded")
    parts = [node("Slice", [ids, i64(f"wide_from{k}", [k]), i64(f"wide_to{k}", [k - (orders - 1) or 2**62]),
                            i64(f"wide_axis{k}", [1])], f"wide_part{k}") for k in range(orders)]
    pad = i64("wide_pad_id", C.PAD_INDEX)
    nonpad = [node("Not", [node("Equal", [p, pad], f"wide_is_pad{k}")], f"wide_nonpad{k}") for k, p in enumerate(parts)]
    mult, mod = i64("wide_mult", NGRAM_MULTIPLIER), i64("wide_buckets", buckets)
    weights = const("wide_table", table)
    total = count = None
    for n in range(1, orders + 1):
        h = i64(f"wide_seed{n}", n)
        valid = nonpad[0]
        for k in range(n):
            h = node("Mod", [node("Add", [node("Mul", [h, mult], f"wide_m{n}_{k}"), parts[k]], f"wide_a{n}_{k}"), mod],
                     f"wide_h{n}_{k}")
            if k:
                valid = node("And", [valid, nonpad[k]], f"wide_valid{n}_{k}")
        w = node("Where", [valid, node("Gather", [weights, h], f"wide_w{n}", axis=0), const(f"wide_zero{n}", np.float32(0))],
                 f"wide_kept{n}")
        s = node("ReduceSum", [w, i64(f"wide_ax{n}", [1])], f"wide_sum{n}", keepdims=1)
        c = node("ReduceSum", [node("Cast", [valid], f"wide_valid_f{n}", to=TensorProto.FLOAT), i64(f"wide_cax{n}", [1])],
                 f"wide_count{n}", keepdims=1)
        total = s if total is None else node("Add", [total, s], f"wide_total{n}")
        count = c if count is None else node("Add", [count, c], f"wide_counts{n}")
    root = node("Sqrt", [node("Max", [count, const("wide_one", np.array([1.0], np.float32))], "wide_count_floor")], "wide_root")
    return node("Div", [total, root], "wide_logit")


def to_onnx(model):
    """The Keras classifier as an ``onnx.ModelProto`` (raises :class:`reviewpipe.fused.Unsupported`)."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper

    from reviewpipe import fused

    plan = fused.describe(model)
    masked, pooling, layers = plan["masked"], plan["pooling"], plan["recurrent"]
    weights = plan["embedding"].nbytes + sum(a.nbytes for r in layers for w in r.weights for a in w)
    weights += plan["wide"][2].nbytes if plan["wide"] else 0
    if weights > MAX_BYTES:
        raise fused.Unsupported(f"{weights / 2**30:.1f} GiB of weights (one ONNX file holds at most 2 GiB)")
    inits, nodes = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(h.make_node(op, inputs, [output], **attrs))
        return output

    ax0, ax1 = const("axis0", np.array([0], np.int64)), const("axis1", np.array([1], np.int64))
    ids_t = node("Transpose", [IDS], "ids_t", perm=[1, 0])  # [t, n]: ONNX's RNNs are time-major
    x = node("Gather", [const("embedding", plan["embedding"]), ids_t], "embedded", axis=0)
    valid = node("Not", [node("Equal", [ids_t, const("pad", np.array(C.PAD_INDEX, np.int32))], "is_pad")], "valid")
    lens = node("ReduceSum", [node("Cast", [valid], "valid_i", to=TensorProto.INT32), ax0], "lens", keepdims=0)
    last = None
    for n, layer in enumerate(layers):
        ws = [_onnx_weights(layer.kind, w) for w in layer.weights]
        inputs = [x] + [const(f"{k}{n}", np.stack([w[j] for w in ws]).astype(np.float32)) for j, k in enumerate("WRB")]
        inputs += [lens] if masked else []
        attrs = {"hidden_size": layer.units, "direction": "bidirectional" if layer.bidirectional else "forward"}
        if layer.kind == "gru":
            attrs["linear_before_reset"] = 1
        y, y_h = f"y{n}", f"y_h{n}"
        nodes.append(h.make_node(layer.kind.upper(), inputs, [y, y_h], **attrs))
        # y [t, directions, n, units] -> [t, n, directions*units]: forward then backward, as Keras concatenates
        x = node("Reshape", [node("Transpose", [y], f"y_t{n}", perm=[0, 2, 1, 3]),
                             const(f"seq_shape{n}", np.array([0, 0, -1], np.int64))], f"seq{n}")
        last = node("Reshape", [node("Transpose", [y_h], f"y_h_t{n}", perm=[1, 0, 2]),
                                const(f"last_shape{n}", np.array([0, -1], np.int64))], f"last{n}")
    if pooling != "last":
        # the steps a row pools over: its own (masked), or every step; TimePooling always counts step 0
        first = node("Equal", [node("Range", [const("t0", np.array(0, np.int64)),
                                              node("Gather", [node("Shape", [IDS], "ids_shape"), const("one", np.array(1, np.int64))],
                                                   "width"), const("t1", np.array(1, np.int64))], "steps"),
                               const("zero64", np.array(0, np.int64))], "first_step")
        kept = node("Or", [valid, node("Unsqueeze", [first, ax1], "first_col")], "kept") if masked else None
        if kept is not None:
            kept3 = node("Unsqueeze", [kept, const("axis2", np.array([2], np.int64))], "kept3")
            biggest = node("ReduceMax", [node("Where", [kept3, x, const("floor", np.array(-6.0e4, np.float32))], "masked_seq"), ax0],
                           "max", keepdims=0)
            count = node("ReduceSum", [node("Cast", [kept], "kept_f", to=TensorProto.FLOAT), ax0], "count", keepdims=0)
            # the steps past a row's length are zeros (ONNX's RNNs zero-fill them), so the sum is over its own
            mean = node("Div", [node("ReduceSum", [x, ax0], "total", keepdims=0), node("Unsqueeze", [count, ax1], "count_col")], "mean")
        else:
            biggest = node("ReduceMax", [x, ax0], "max", keepdims=0)
            mean = node("ReduceMean", [x, ax0], "mean", keepdims=0)
        last = {"max": biggest, "mean": mean}.get(pooling) or node("Concat", [biggest, mean], "maxmean", axis=1)
    kernel, bias = plan["output"]
    logit = node("Add", [node("MatMul", [last, const("out_kernel", kernel)], "logit0"), const("out_bias", bias)], "logit")
    if plan["wide"]:
        logit = node("Add", [logit, _wide_logit(plan["wide"], const, node)], "wide_deep")
    node("Reshape", [node("Sigmoid", [logit], "sigmoid"), const("flat", np.array([-1], np.int64))], PROBABILITY)
    graph = h.make_graph(nodes, "reviewpipe_classifier", [h.make_tensor_value_info(IDS, TensorProto.INT32, ["n", "t"])],
                         [h.make_tensor_value_info(PROBABILITY, TensorProto.FLOAT, ["n"])], inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="reviewpipe")
    h.set_model_props(proto, {"masked": str(int(masked)), "pooling": pooling})
    onnx.checker.check_model(proto)
    return proto


def export(model, path: str | Path, source: str = "") -> Path:
    """Write :func:`to_onnx`'s graph to ``path`` atomically (a reader never sees half a file);
    ``source`` is the SHA-256 of the Keras file it was made from (:func:`ensure` compares it)."""
    from onnx import helper as h

    path = Path(path)
    proto = to_onnx(model)
    if source:
        h.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, SOURCE_KEY: source})
    data = proto.SerializeToString()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def made_from(path: str | Path) -> str:
    """The SHA-256 of the Keras file ``path`` was made from ('' if unknown or unreadable)."""
    import onnx

    try:
        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}.get(SOURCE_KEY, "")
    except Exception:  # noqa: BLE001  a truncated or foreign file is simply made again
        return ""


def ensure(run_dir: str | Path) -> Path:
    """The run's ``model.onnx``, made from its ``model.keras`` when it is missing or was made
    from another one (a run retrained in place).  Only then is Keras imported.  Raises
    :class:`reviewpipe.fused.Unsupported` for a model the graph does not reproduce, and
    ``OSError`` when the run folder cannot be written."""
    run_dir = Path(run_dir)
    source, path = run_dir / C.RUN_MODEL, run_dir / C.RUN_ONNX
    digest = file_sha256(source)
    if path.exists() and made_from(path) == digest:
        return path
    import keras

    from reviewpipe import model as _custom_layers  # noqa: F401  (registers PaddingMask, TimePooling)

    log.info("making %s from %s", path, source)
    return export(keras.models.load_model(source, compile=False), path, source=digest)


class Classifier:
    """``ids [n, t] -> probabilities [n]`` (float64) with ONNX Runtime on the CPU, ``threads``
    threads (0: ONNX Runtime's default, every core).  A masked model's batch is cropped to its
    longest row first; an unmasked one reads every column."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # every batch has its own width: a memory plan per input shape is made and kept for
        # nothing (without it the first pass over new widths is ~15 % faster, docs/results.md)
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.masked = self.session.get_modelmeta().custom_metadata_map.get("masked") == "1"

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int32)
        if self.masked:  # the columns past the longest row are padding in every row
            used = np.flatnonzero(np.any(ids != C.PAD_INDEX, axis=0))
            ids = ids[:, :int(used[-1]) + 1 if used.size else 1]
        if not len(ids):
            return np.zeros(0, np.float64)
        return self.session.run([PROBABILITY], {IDS: np.ascontiguousarray(ids)})[0].astype(np.float64)
