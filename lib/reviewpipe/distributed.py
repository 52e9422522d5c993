"""Multi-worker training pieces that need TensorFlow but not Spark.

``MultiWorkerMirroredStrategy`` is what ``TF_CONFIG`` selects (``train.detect_hardware``).
Keras 3's ``Model.fit`` does not run under it as released (keras-team/keras#20585, open):

1. ``fit``/``evaluate`` first build the model "symbolically" from one batch, which they get
   by ``strategy.reduce("MEAN", batch)``: a cross-worker mean of the integer ids, which the
   multi-worker strategy cannot reduce (``PerReplica ... to a Tensor``).  Our models are
   functional, so the only state left to build is the compiled loss and metrics; they are
   built here from a local batch of zeros of the right shape, and the reduce is skipped.
2. The per-step logs (loss, metrics) are reduced with ``strategy.reduce("MEAN", v, axis=0)``,
   which fails on the scalars they are.  With ``axis=None`` the same call gives the mean
   over all replicas of all workers, as the one-machine ``MirroredStrategy`` path does.

Both are applied only in a process whose strategy is multi-worker; gradients are all-reduced
by the Keras optimizer itself (``_all_reduce_sum_gradients``), untouched.
"""

from __future__ import annotations

import json
import socket

_PATCHED = {"logs": False}


def tf_config(addresses: list[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``addresses`` (``host:port``)."""
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def free_port(host: str = "") -> int:
    """A TCP port free on this host now (TensorFlow binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._num_workers > 1  # noqa: SLF001 (no public accessor)


def fit_keras_to_multi_worker(model, strategy, maxlen: int) -> None:
    """Make ``model.fit``/``evaluate`` run under a multi-worker strategy (module docstring)."""
    import numpy as np

    example = (np.zeros((2, maxlen), np.int32), np.zeros((2,), np.float32))

    def build_locally(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=example)  # noqa: SLF001

    model._maybe_symbolic_build = build_locally  # noqa: SLF001 (instance attribute; see item 1)
    _patch_log_reduction()


def _patch_log_reduction() -> None:
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    if _PATCHED["logs"]:
        return
    original = keras_tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues)
                else v, values)
        return original(values, strategy, reduction)

    keras_tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED["logs"] = True
