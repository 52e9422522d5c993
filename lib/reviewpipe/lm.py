"""Language-model pretraining of the classifier's encoder on the unlabelled reviews.

Dai & Le (2015): an LSTM first trained to predict the next word of the 50,000 unlabelled
reviews, then fine-tuned as the classifier, beats the same LSTM trained from random weights.
Here a forward LSTM/GRU with the classifier's shapes (``model.cell``, ``model.units``, the
embedding width) reads the encoded shards of ``lm.splits`` (train + unsup; labels unused; val
and test never) and learns P(next id | ids so far).  ``model.encoder_init = lm:<folder>`` then
starts the classifier's embedding and first recurrent layer from it.

The output layer is a sampled softmax (``tf.nn.sampled_softmax_loss``, ``lm.sampled``
negatives per batch from the log-uniform sampler, whose assumption -- ids ranked by frequency --
is how the vocabulary is ordered).  Padding targets carry no loss.  Batches are cut from
windows of rows sorted by length and cropped to a multiple of ``lm.length_step``, so little
time goes to padding.  The shards must be post-padded (the tokens start at step 0).

Output folder (written to a temporary sibling, then renamed)::

    encoder.npz   embedding [vocab rows, dim] and rnn_0.. (the recurrent layer's weights, Keras order)
    lm.json       vocabulary fingerprint, cell, units, dim, settings, loss per epoch, val perplexity
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from reviewpipe import constants as C
from reviewpipe import shards, storage
from reviewpipe.cli import JobError
from reviewpipe.config import PipelineConf
from reviewpipe.vocab import Vocabulary, load_vocab

log = logging.getLogger(__name__)

LM_SPEC = "lm.json"
LM_WEIGHTS = "encoder.npz"
PREFIX = "lm:"
EVAL_BATCH = 8       # full-softmax logits of 8 x 400 steps x 30k ids: ~0.4 GB


class LanguageModelError(JobError):
    """The language model cannot be trained or used; the message says why."""


class LanguageModel:
    """Embedding -> LSTM/GRU (return sequences) -> sampled softmax over the vocabulary."""

    def __init__(self, vocab_rows: int, dim: int, cell: str, units: int, sampled: int):
        import keras
        import tensorflow as tf
        from keras import layers

        self.vocab_rows, self.units, self.sampled = vocab_rows, units, min(sampled, vocab_rows)
        self.embedding = layers.Embedding(vocab_rows, dim, name="embedding")
        self.rnn = (layers.LSTM if cell == "lstm" else layers.GRU)(units, return_sequences=True, name=f"{cell}_1")
        self.embedding.build((None, None))
        self.rnn.build((None, None, dim))
        init = keras.initializers.GlorotUniform(seed=0)
        self.out_w = tf.Variable(init((vocab_rows, units)), name="softmax_w")
        self.out_b = tf.Variable(tf.zeros(vocab_rows), name="softmax_b")

    @property
    def variables(self) -> list:
        return [*self.embedding.trainable_variables, *self.rnn.trainable_variables, self.out_w, self.out_b]

    def hidden(self, ids, training: bool):
        """Hidden states [batch, steps, units] for the inputs ``ids[:, :-1]``, and the targets."""
        from reviewpipe.model import padding_mask

        inputs, targets = ids[:, :-1], ids[:, 1:]
        h = self.rnn(self.embedding(inputs), mask=padding_mask(inputs), training=training)
        return h, targets

    def sampled_loss(self, ids):
        import tensorflow as tf

        h, targets = self.hidden(ids, training=True)
        flat_t = tf.reshape(targets, (-1, 1))
        per_step = tf.nn.sampled_softmax_loss(self.out_w, self.out_b, tf.cast(flat_t, tf.int64),
                                              tf.reshape(h, (-1, self.units)), self.sampled, self.vocab_rows)
        return _masked_mean(per_step, targets)

    def full_loss(self, ids):
        """Mean cross-entropy over the whole vocabulary (for perplexity) and the target count."""
        import tensorflow as tf

        h, targets = self.hidden(ids, training=False)
        logits = tf.matmul(tf.reshape(h, (-1, self.units)), self.out_w, transpose_b=True) + self.out_b
        per_step = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.reshape(targets, (-1,)), logits=logits)
        return _masked_mean(per_step, targets), tf.reduce_sum(tf.cast(targets != C.PAD_INDEX, tf.float32))

    def encoder_weights(self) -> dict[str, np.ndarray]:
        out = {"embedding": np.asarray(self.embedding.get_weights()[0], np.float32)}
        out.update({f"rnn_{i}": np.asarray(w, np.float32) for i, w in enumerate(self.rnn.get_weights())})
        return out


def _masked_mean(per_step, targets):
    import tensorflow as tf

    m = tf.cast(tf.reshape(targets, (-1,)) != C.PAD_INDEX, per_step.dtype)
    return tf.reduce_sum(per_step * m) / tf.maximum(tf.reduce_sum(m), 1.0)


def _embedding(conf: PipelineConf, vocab: Vocabulary, maxlen: int) -> tuple[int, np.ndarray | None]:
    """The embedding width the classifier will have (``model.plan``'s rule) and the pretrained
    matrix to start from, if ``model.embedding_init`` names one."""
    from reviewpipe.model import plan

    matrix = None
    if conf.model.embedding_init != "random":
        from reviewpipe.word2vec import load_pretrained

        matrix, _ = load_pretrained(conf.model.embedding_init, vocab)
    p = plan(conf.model, vocab.size, maxlen, "post", matrix.shape[1] if matrix is not None else 0)
    return p.embedding_dim, matrix


def pretrain(shards_dir: str, vocab_dir: str, out_dir: str, conf: PipelineConf, verbose: bool = True) -> dict:
    """Train the language model on ``lm.splits`` of the shards and write ``out_dir``."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    lc, mc = conf.lm, conf.model
    vocab = load_vocab(None, vocab_dir)
    manifest = shards.load_manifest(shards_dir)
    shards.check_fingerprint(manifest, vocab.fingerprint, shards_dir)
    if manifest.get("padding") != "post":
        raise LanguageModelError(f"{shards_dir} is {manifest.get('padding')}-padded; the language model needs "
                                 f"post-padded shards (encode.padding=post), where every review starts at step 0")
    rows = {s: shards.split_rows(manifest, s) for s in lc.splits}
    missing = [s for s, n in rows.items() if not n]
    if missing:
        raise LanguageModelError(f"{shards_dir} has no {', '.join(missing)} rows; encode those splits first "
                                 f"(lm.splits = {list(lc.splits)})")
    maxlen = int(manifest["maxlen"])
    dim, pretrained = _embedding(conf, vocab, maxlen)

    keras.utils.set_random_seed(lc.seed)
    lm = LanguageModel(vocab.size, dim, mc.cell, mc.units, lc.sampled)
    if pretrained is not None:
        lm.embedding.set_weights([pretrained])
    opt = keras.optimizers.Adam(lc.learning_rate, **({"clipnorm": lc.clipnorm} if lc.clipnorm else {}))
    window = shards.WINDOW_BATCHES * lc.batch_size
    n_rows = sum(rows.values())
    steps = lc.steps_per_epoch or math.ceil(n_rows / lc.batch_size)
    ds = shards.make_dataset(shards_dir, list(lc.splits), batch_size=window, vocab_fingerprint=vocab.fingerprint,
                             labelled=False, shuffle=True, seed=lc.seed, shuffle_buffer=window * 4,
                             repeat=bool(lc.steps_per_epoch))
    ds = shards.length_batches(ds, lc.batch_size, lc.length_step, maxlen, lc.seed, min_width=2)
    ds = ds.map(lambda ids, _labels: ids).prefetch(tf.data.AUTOTUNE)
    spec_ids = tf.TensorSpec((None, None), tf.int32)

    @tf.function(input_signature=[spec_ids])
    def train_step(ids):
        with tf.GradientTape() as tape:
            loss = lm.sampled_loss(ids)
        variables = lm.variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    print(f"language model  {mc.cell.upper()}({mc.units}) over embedding {vocab.size} x {dim}"
          f"{' from ' + mc.embedding_init if pretrained is not None else ''}; {n_rows} rows of "
          f"{'+'.join(lc.splits)}; {steps} steps/epoch x {lc.epochs}, batch {lc.batch_size}, "
          f"sampled softmax {lm.sampled}", flush=True)
    history = []
    for epoch in range(lc.epochs):
        t0, total, n = time.perf_counter(), 0.0, 0
        for ids in ds:  # one pass, or lm.steps_per_epoch batches of the repeated stream
            total += float(train_step(ids))
            n += 1
            if verbose and n % 100 == 0:
                print(f"  epoch {epoch + 1} step {n}/~{steps}  sampled loss {total / n:.4f}  "
                      f"{(time.perf_counter() - t0) / n:.3f} s/step", flush=True)
            if lc.steps_per_epoch and n >= steps:
                break
        history.append({"epoch": epoch + 1, "sampled_loss": round(total / max(n, 1), 5), "steps": n,
                        "seconds": round(time.perf_counter() - t0, 1)})
        log.info("lm epoch %d: sampled loss %.4f, %d steps, %.0f s", epoch + 1, total / max(n, 1), n,
                 history[-1]["seconds"])

    perplexity = _val_perplexity(lm, shards_dir, manifest, vocab, lc, maxlen) if lc.eval_rows else None
    spec = {"vocab_fingerprint": vocab.fingerprint, "cell": mc.cell, "units": mc.units, "dim": dim,
            "vocab_rows": vocab.size, "embedding_init": mc.embedding_init, "splits": list(lc.splits),
            "rows": rows, "maxlen": maxlen, "epochs": lc.epochs, "batch_size": lc.batch_size,
            "learning_rate": lc.learning_rate, "sampled": lm.sampled, "length_step": lc.length_step,
            "seed": lc.seed, "history": history, "val_perplexity": perplexity,
            "seconds": round(time.perf_counter() - started, 1)}
    _publish(Path(out_dir), lm.encoder_weights(), spec)
    print(f"done  sampled loss {history[-1]['sampled_loss']:.4f}; val perplexity "
          f"{perplexity if perplexity is not None else 'skipped'}; {spec['seconds']:.0f} s -> {out_dir}", flush=True)
    return spec


def _val_perplexity(lm: LanguageModel, shards_dir: str, manifest: dict, vocab: Vocabulary, lc, maxlen: int):
    """exp(mean full-softmax cross-entropy) over the first ``lm.eval_rows`` val rows (targets only)."""
    import tensorflow as tf

    if not shards.split_rows(manifest, C.VAL):
        return None
    ds = shards.make_dataset(shards_dir, C.VAL, batch_size=shards.WINDOW_BATCHES * lc.batch_size, shuffle=False,
                             vocab_fingerprint=vocab.fingerprint, labelled=False)
    ds = ds.unbatch().take(lc.eval_rows).batch(shards.WINDOW_BATCHES * lc.batch_size)
    ds = shards.length_batches(ds, EVAL_BATCH, lc.length_step, maxlen, lc.seed, min_width=2)
    ds = ds.map(lambda ids, _labels: ids)  # logits: rows x steps x vocab
    loss = tf.function(lm.full_loss, input_signature=[tf.TensorSpec((None, None), tf.int32)])
    total, count = 0.0, 0.0
    for ids in ds:
        mean, n = loss(ids)
        total += float(mean) * float(n)
        count += float(n)
    return round(math.exp(total / count), 2) if count else None


def _publish(out: Path, weights: dict[str, np.ndarray], spec: dict) -> None:
    """Write to a staging sibling and swap it in, so a failed run leaves no folder that looks complete."""
    with storage.staged_local(out) as stage:
        np.savez(stage / LM_WEIGHTS, **weights)
        (stage / LM_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_encoder(init: str, vocab: Vocabulary, cell: str, units: int) -> tuple[dict[str, np.ndarray], dict]:
    """The weights for ``model.encoder_init = lm:<folder>``; refuses another vocabulary or shape."""
    folder = Path(init[len(PREFIX):])
    spec_path = folder / LM_SPEC
    if not spec_path.is_file():
        raise LanguageModelError(f"model.encoder_init: no {LM_SPEC} in {folder}; run make pretrain-lm first")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if spec.get("vocab_fingerprint") != vocab.fingerprint:
        raise LanguageModelError(
            f"model.encoder_init: the language model in {folder} was trained on vocabulary "
            f"{str(spec.get('vocab_fingerprint'))[:12]}…, but training uses {vocab.fingerprint[:12]}…; "
            f"re-run make pretrain-lm with this vocabulary")
    if (spec.get("cell"), spec.get("units")) != (cell, units):
        raise LanguageModelError(
            f"model.encoder_init: the language model in {folder} is {str(spec.get('cell')).upper()}"
            f"({spec.get('units')}), the classifier {cell.upper()}({units}); set model.cell and model.units "
            f"to match, or re-run make pretrain-lm with them")
    with np.load(folder / LM_WEIGHTS) as z:
        weights = {k: z[k] for k in z.files}
    if weights["embedding"].shape[0] != vocab.size:
        raise LanguageModelError(f"{folder / LM_WEIGHTS}: embedding has {weights['embedding'].shape[0]} rows, "
                                 f"the vocabulary {vocab.size}")
    return weights, spec


def rnn_weights(weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [weights[f"rnn_{i}"] for i in range(sum(k.startswith("rnn_") for k in weights))]
