"""Adversarial and virtual adversarial training on the embeddings (Miyato, Dai & Goodfellow 2017).

``train.adversarial`` picks the extra terms the training objective gets (``off`` leaves
Keras's own train step alone):

``at``      adversarial: the loss again, at the embedded sequence moved along the loss's gradient,
            ``L(e + r_adv)``, with ``r_adv = eps * |e| * g / |g|``, ``g = dL/de`` (not
            back-propagated through).
``vat``     virtual adversarial, on a batch of unlabelled rows (``train.vat_split``, the unsup
            reviews): ``KL(p(e_u) || p(e_u + r_vadv))``, with ``r_vadv = eps * |e_u| * g / |g|`` and
            ``g`` the gradient of that KL at a random ``r = xi * |e_u| * d / |d|`` (one power-method
            step).  ``p(e_u)`` is held constant.
``at+vat``  both.

Norms are per row, over all its (unmasked) steps and embedding dimensions.  ``eps`` is
relative to the row's own embedded norm ``|e|`` (``train.adversarial_epsilon``): the paper
normalises the word vectors to unit variance and uses an absolute 5.0, which for their
256-wide vectors over 400 steps is about 0.016 of a sequence's norm; a relative size keeps the
same meaning without changing the model, and the model cannot shrink it by scaling its
embeddings up.  Padding steps get no perturbation.

The perturbed passes reuse the classifier's own layers after the embedding
(:func:`reviewpipe.model.embedded_head`), so the saved model is the plain classifier and
scoring, serving and the cuDNN conditions are unchanged.  The AT pass runs with dropout, as
the clean one does; the VAT passes run without it, so the term measures the model's
sensitivity to the perturbation and not dropout noise (it is 0 at a zero perturbation).

The logged training ``loss`` is the whole objective (clean + terms), as Keras logs added
losses; ``val_loss`` stays the plain binary cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("off", "at", "vat", "at+vat")
XI = 1e-3  # the finite-difference step of the VAT power iteration, relative to |e_u|
_TINY = 1e-12


@dataclass(frozen=True)
class Adversarial:
    mode: str
    epsilon: float

    @property
    def at(self) -> bool:
        return self.mode in ("at", "at+vat")

    @property
    def vat(self) -> bool:
        return self.mode in ("vat", "at+vat")


def _row_norm(x, mask):
    import tensorflow as tf

    return tf.sqrt(tf.reduce_sum(tf.square(x * mask), axis=[1, 2], keepdims=True))


def _step_mask(ids, dtype):
    import tensorflow as tf

    from reviewpipe.model import padding_mask

    return tf.cast(padding_mask(ids), dtype)[:, :, None]


def along(direction, embedded, ids, size: float):
    """``size * |e| * direction / |direction|`` per row, zero on padding steps."""
    import tensorflow as tf

    mask = _step_mask(ids, tf.float32)
    d = tf.cast(direction, tf.float32) * mask
    scale = size * _row_norm(tf.cast(tf.stop_gradient(embedded), tf.float32), mask)
    return tf.cast(scale * d / tf.maximum(_row_norm(d, 1.0), _TINY), embedded.dtype)


def bce(y, p):
    """Mean binary cross-entropy (Keras's, float32)."""
    import keras
    import tensorflow as tf

    return tf.reduce_mean(keras.losses.binary_crossentropy(tf.reshape(tf.cast(y, tf.float32), [-1, 1]),
                                                           tf.cast(p, tf.float32)))


def binary_kl(p, q):
    """Mean KL(p || q) of Bernoulli distributions (p, q: probabilities of class 1)."""
    import tensorflow as tf

    eps = 1e-7
    p = tf.clip_by_value(tf.cast(p, tf.float32), eps, 1 - eps)
    q = tf.clip_by_value(tf.cast(q, tf.float32), eps, 1 - eps)
    return tf.reduce_mean(p * tf.math.log(p / q) + (1 - p) * tf.math.log((1 - p) / (1 - q)))


def adversarial_loss(head, ids, embedded, y, clean_loss, tape, epsilon: float):
    """``L(e + r_adv)`` given the clean loss recorded by ``tape`` (watching ``embedded``)."""
    import tensorflow as tf

    ids = tf.convert_to_tensor(ids)
    g = tf.stop_gradient(tape.gradient(clean_loss, embedded))
    return bce(y, head([ids, embedded + along(g, embedded, ids, epsilon)], training=True))


def virtual_adversarial_loss(head, ids, embedded, epsilon: float, seed=None, xi: float = XI):
    """``KL(p(e) || p(e + r_vadv))`` with ``p(e)`` held constant (see the module doc)."""
    import tensorflow as tf

    ids = tf.convert_to_tensor(ids)
    p = tf.stop_gradient(head([ids, embedded], training=False))
    d = tf.random.normal(tf.shape(embedded), seed=seed, dtype=tf.float32)
    r = tf.stop_gradient(along(d, embedded, ids, xi))
    with tf.GradientTape() as tape:
        tape.watch(r)
        kl = binary_kl(p, head([ids, tf.stop_gradient(embedded) + r], training=False))
    g = tf.stop_gradient(tape.gradient(kl, r))
    return binary_kl(p, head([ids, embedded + along(g, embedded, ids, epsilon)], training=False))


def attach(model, head, adv: Adversarial, unlabelled=None) -> None:
    """Give ``model`` (the compiled classifier) a train step with the chosen terms.

    ``unlabelled``: an endless ``tf.data`` dataset of (ids, _) batches for the VAT term.  The
    model object keeps its class: what it saves and loads is the plain classifier."""
    if adv.mode == "off":
        return
    import keras
    import tensorflow as tf

    embedding = model.get_layer("embedding")
    rows = iter(unlabelled) if adv.vat else None

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                e = embedding(x)
                inner.watch(e)
                y_pred = head([x, e], training=True)
                clean = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            loss = clean
            if adv.at:
                loss = loss + adversarial_loss(head, x, e, y, clean, inner, adv.epsilon)
            if adv.vat:
                xu, _ = next(rows)
                loss = loss + virtual_adversarial_loss(head, xu, embedding(xu), adv.epsilon)
            for metric in model.metrics:  # the logged loss (Keras's guide to a custom train step)
                if metric.name == "loss":
                    metric.update_state(loss, sample_weight=tf.shape(x)[0])
            scaled = model.optimizer.scale_loss(loss)
        weights = model.trainable_weights
        model.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    model.train_step = train_step
    model.train_function = None  # rebuilt around the new step
    if adv.vat:  # the step reads the unlabelled iterator, which XLA cannot compile
        model.jit_compile = False
