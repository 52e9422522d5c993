"""What the word embeddings are saying: neighbours, analogies, similarity, projections.

Works on a run folder (``vectors.tsv`` + ``metadata.tsv``, or the Keras model) or on any
projector-format pair of files.  Rows are L2-normalised once; every query is one matrix
product over the whole vocabulary (no Python loop over words).  Row ``i`` is id ``i``; the
padding and OOV rows are never returned as answers.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from reviewpipe import constants as C

if TYPE_CHECKING:
    from reviewpipe.vocab import Vocabulary

log = logging.getLogger(__name__)


class UnknownWord(KeyError):
    """A query word is not in the vocabulary; the message suggests close spellings."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Embeddings:
    words: list[str]          # words[i] labels row i
    vectors: np.ndarray       # [n, dim] float32
    reserved: int = 2         # rows never returned as answers (padding, OOV)

    def __post_init__(self):
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.unit = (self.vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        self.index = {w: i for i, w in enumerate(self.words) if i >= self.reserved}

    @classmethod
    def load(cls, path: str | Path) -> "Embeddings":
        """A run folder, or a folder/``vectors.tsv`` path with ``metadata.tsv`` next to it."""
        p = Path(path)
        folder = p if p.is_dir() else p.parent
        vec, meta = folder / C.RUN_VECTORS, folder / C.RUN_METADATA
        if not vec.is_file() or not meta.is_file():
            raise FileNotFoundError(f"no {C.RUN_VECTORS} + {C.RUN_METADATA} in {folder} (a run folder exports "
                                    f"them unless train.embeddings_export = false)")
        words = meta.read_text(encoding="utf-8").split("\n")
        if words and words[-1] == "":
            words.pop()
        vectors = np.loadtxt(vec, delimiter="\t", dtype=np.float32, ndmin=2)
        if len(words) != len(vectors):
            raise ValueError(f"{meta} has {len(words)} labels but {vec} has {len(vectors)} rows")
        reserved = 0
        run_meta = folder / C.RUN_META
        spec = json.loads(run_meta.read_text(encoding="utf-8"))["tokenizer"] if run_meta.is_file() else None
        if spec is not None:
            reserved = C.OOV_INDEX + 1 if spec.get("oov_token") else C.OOV_INDEX
        else:  # a bare projector pair: leading "[PAD]"/"[UNK]"-style labels are reserved rows
            while reserved < min(2, len(words)) and words[reserved].startswith("[") and words[reserved].endswith("]"):
                reserved += 1
        return cls(words, vectors, reserved)

    def row(self, word: str) -> int:
        i = self.index.get(word)
        if i is None:
            close = difflib.get_close_matches(word, list(self.index), n=5, cutoff=0.75)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownWord(f"{word!r} is not in the vocabulary ({len(self.index)} words){hint}")
        return i

    def _top(self, scores: np.ndarray, k: int, exclude: Sequence[int]) -> list[tuple[str, float]]:
        scores = scores.copy()
        scores[: self.reserved] = -np.inf
        scores[list(exclude)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], int)
        top = top[np.lexsort((top, -scores[top]))]  # score descending, then id
        return [(self.words[i], float(scores[i])) for i in top]

    def neighbors(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        i = self.row(word)
        return self._top(self.unit @ self.unit[i], k, [i])

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
        """Words closest to ``b - a + c`` (a is to b as c is to ?), query words excluded."""
        ia, ib, ic = self.row(a), self.row(b), self.row(c)
        target = self.unit[ib] - self.unit[ia] + self.unit[ic]
        target /= max(float(np.linalg.norm(target)), 1e-12)
        return self._top(self.unit @ target, k, [ia, ib, ic])

    def similarity(self, a: str, b: str) -> float:
        return float(self.unit[self.row(a)] @ self.unit[self.row(b)])

    def pair_scores(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[float], int]:
        """Cosines of the pairs whose words are both known, and how many were skipped."""
        out, skipped = [], 0
        for a, b in pairs:
            if a in self.index and b in self.index:
                out.append(self.similarity(a, b))
            else:
                skipped += 1
        return out, skipped

    def project(self, words: Sequence[str], path: str | Path, title: str = "") -> np.ndarray:
        """PCA of the given words' unit vectors to 2-D, drawn with labels; returns the coordinates."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [self.row(w) for w in words]
        x = self.unit[rows] - self.unit[rows].mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        fig, ax = plt.subplots(figsize=(7.5, 6))
        ax.scatter(xy[:, 0], xy[:, 1], s=18)
        for (px, py), w in zip(xy, words):
            ax.annotate(w, (px, py), xytext=(3, 3), textcoords="offset points", fontsize=9)
        ax.set_title(title or "Word embeddings, PCA to 2-D")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return xy


def load_pairs(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """The versioned word-pair file: ``[related]``/``[unrelated]`` tables of ``pairs``."""
    import tomllib

    doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    out = {}
    for group in ("related", "unrelated"):
        pairs = doc.get(group, {}).get("pairs", [])
        if not pairs or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ValueError(f"{path}: [{group}] needs pairs = [[\"a\", \"b\"], ...]")
        out[group] = [(str(a), str(b)) for a, b in pairs]
    out["version"] = doc.get("version")
    return out


def intrinsic(emb: Embeddings, pairs: dict) -> dict:
    """Mean cosine of related pairs minus that of unrelated pairs (higher: more structure)."""
    rel, rel_skip = emb.pair_scores(pairs["related"])
    unrel, unrel_skip = emb.pair_scores(pairs["unrelated"])
    if not rel or not unrel:
        return {"gap": None, "related": None, "unrelated": None, "pairs_used": len(rel) + len(unrel),
                "pairs_skipped": rel_skip + unrel_skip}
    return {"gap": round(float(np.mean(rel) - np.mean(unrel)), 4), "related": round(float(np.mean(rel)), 4),
            "unrelated": round(float(np.mean(unrel)), 4), "pairs_used": len(rel) + len(unrel),
            "pairs_skipped": rel_skip + unrel_skip, "version": pairs.get("version")}


# ---------------------------------------------------------------------------------------
# what a run or make pretrain writes

def export_projector(weights: np.ndarray, vocab: "Vocabulary", out_dir: Path) -> None:
    """vectors.tsv (row i = the vector of id i) and metadata.tsv (one label per row, no header)."""
    labels = [C.PAD_LABEL] * weights.shape[0]
    spec = vocab.tokenizer
    if spec.oov_token and weights.shape[0] > C.OOV_INDEX:
        labels[C.OOV_INDEX] = spec.oov_token
    first = spec.first_word_index
    for i, tok in enumerate(vocab.tokens[: max(0, weights.shape[0] - first)]):
        labels[first + i] = tok.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    np.savetxt(out_dir / C.RUN_VECTORS, weights.astype(np.float32), delimiter="\t", fmt="%.6g")
    (out_dir / C.RUN_METADATA).write_text("\n".join(labels) + "\n", encoding="utf-8")


def intrinsic_report(pairs_path: str, vocab: "Vocabulary", trained: np.ndarray, pretrained: np.ndarray | None,
                     seed: int, pretrained_name: str = "word2vec") -> dict:
    """Related-minus-unrelated mean cosine for random-init, pretrained (Word2Vec or the language
    model's, if used) and trained embeddings."""
    if not Path(pairs_path).is_file():
        log.warning("train.word_pairs %s not found; skipping the intrinsic check", pairs_path)
        return {"skipped": f"{pairs_path} not found"}
    pairs = load_pairs(pairs_path)
    labels = [C.PAD_LABEL] * vocab.tokenizer.first_word_index + list(vocab.tokens)
    reserved = vocab.tokenizer.first_word_index
    rng = np.random.default_rng(seed)  # Keras's default Embedding init: uniform(-0.05, 0.05)
    report = {"pairs": pairs_path, "version": pairs.get("version"),
              "random_init": intrinsic(Embeddings(labels, rng.uniform(-0.05, 0.05, trained.shape), reserved), pairs),
              "trained": intrinsic(Embeddings(labels, trained, reserved), pairs)}
    if pretrained is not None:
        report[pretrained_name] = intrinsic(Embeddings(labels, pretrained, reserved), pairs)
    return report


def write_projector_config(run_dir: Path, events_dir: Path) -> Path:
    """TensorBoard's projector config for a run's ``vectors.tsv``/``metadata.tsv``.

    The projector plugin looks for ``projector_config.pbtxt`` in each folder of event files and
    refuses asset paths that leave that folder, so the two files are hard-linked (copied where
    links are not possible) into every such folder under ``events_dir`` (Keras writes
    ``train/`` and ``validation/``), and the config names them there.
    """
    import shutil

    folders = sorted({p.parent for p in Path(events_dir).rglob("events.out.tfevents.*")}) or [Path(events_dir)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for name in (C.RUN_VECTORS, C.RUN_METADATA):
            target = folder / name
            target.unlink(missing_ok=True)
            try:
                os.link(run_dir / name, target)
            except OSError:
                shutil.copy2(run_dir / name, target)
        (folder / C.PROJECTOR_CONFIG).write_text(
            "embeddings {\n"
            '  tensor_name: "embedding"\n'
            f'  tensor_path: "{C.RUN_VECTORS}"\n'
            f'  metadata_path: "{C.RUN_METADATA}"\n'
            "}\n", encoding="utf-8")
    return folders[0] / C.PROJECTOR_CONFIG
