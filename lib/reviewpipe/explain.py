"""The seed's walk-through for one sentence: word index, one-hot vectors, ids and padding,
and what one-hot costs compared with an embedding."""

from __future__ import annotations

import numpy as np

from reviewpipe import constants as C
from reviewpipe.tokenizer import pad, texts_to_ids, tokenize
from reviewpipe.vocab import Vocabulary


def word_index_whitespace(text: str) -> dict[str, int]:
    """The seed's own index: split on whitespace, first appearance gets the next index from 1."""
    index: dict[str, int] = {}
    for word in text.split():
        index.setdefault(word, len(index) + 1)
    return index


def one_hot(index: dict[str, int]) -> np.ndarray:
    """One row per unique word; column 0 is reserved and never set."""
    out = np.zeros((len(index), len(index) + 1), np.int8)
    for word, i in index.items():
        out[i - 1, i] = 1
    return out


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.2f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 1024:,.1f} KiB"


def explain(text: str, vocab: Vocabulary | None = None, maxlen: int = 20, padding: str = "post",
            truncating: str = "pre", embedding_dim: int = 32) -> str:
    """A plain-text report; every number in it is computed from ``text`` and ``vocab``."""
    lines = [f"text: {text!r}", ""]
    index = word_index_whitespace(text)
    lines.append(f"1. unique words (split on whitespace): {len(index)}; word_index starts at 1, 0 is reserved")
    width = max(len(w) for w in index) if index else 0
    hot = one_hot(index)
    lines.append(f"2. one-hot vectors ({len(index) + 1} columns: index 0 reserved + one per word)")
    for (word, i), row in zip(index.items(), hot):
        lines.append(f"   {i:>3} {word:<{width}} {''.join(map(str, row))}")
    if vocab is not None:
        spec = vocab.tokenizer
        tokens = tokenize(text, spec)
        ids, n_oov = texts_to_ids(tokens, vocab.word_index(), spec)
        oov_words = [t for t in tokens if t not in vocab.word_index()]
        lines += ["", f"3. with the vocabulary {vocab.fingerprint[:12]}… ({spec.mode} tokenizer, {vocab.size:,} ids)",
                  f"   tokens: {tokens}", f"   ids:    {ids}",
                  f"   OOV words ({n_oov}): {oov_words}" + (f" -> id {C.OOV_INDEX}" if spec.oov_token else " -> dropped"),
                  f"   padded (maxlen={maxlen}, padding={padding}, truncating={truncating}): "
                  f"{pad(ids, maxlen, padding, truncating)}"]
        n_words = vocab.size
    else:
        n_words = len(index) + 1
    one_hot_bytes = maxlen * n_words * 4
    emb_bytes = maxlen * embedding_dim * 4
    lines += ["", f"4. memory for one review of {maxlen} positions, float32:",
              f"   one-hot: {maxlen} x {n_words:,} = {maxlen * n_words:,} values = {_mib(one_hot_bytes)}",
              f"   embedding (dim {embedding_dim}): {maxlen} x {embedding_dim} = {maxlen * embedding_dim:,} values = "
              f"{_mib(emb_bytes)}  ({one_hot_bytes / emb_bytes:,.0f}x smaller)",
              f"   the embedding table itself: {n_words:,} x {embedding_dim} = {n_words * embedding_dim:,} weights "
              f"= {_mib(n_words * embedding_dim * 4)}, learned once and shared by every review"]
    return "\n".join(lines)
