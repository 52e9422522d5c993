"""What a nightly scoring job should watch: the input against the run's training data.

The trainer records a profile of what the model learnt from (metrics.json ``data_profile``):
the training rows' OOV rate and token-length quantiles, a length histogram over the training
lengths' deciles, and the histogram of the model's probabilities on val with the share
predicted positive.  Each scored date gets the same figures from the rows it scored (the
``length`` and ``oov`` columns the scoring UDF writes beside each probability), and the
population stability index (PSI) of the length and probability histograms against the
training ones:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)     e, a: the training and the scored shares of bin i

with every share floored at ``EPS`` so an empty bin stays finite.  The usual reading: below
0.1 nothing moved, 0.1-0.25 a moderate shift, above 0.25 a large one; ``score.drift_threshold``
(default 0.2) raises the ``drift`` flag when either PSI passes it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
PROBABILITY_EDGES = tuple(round(0.1 * i, 1) for i in range(1, 10))  # 10 bins of width 0.1
EPS = 1e-4


def length_edges(lengths: np.ndarray) -> list[int]:
    """Bin edges at the training lengths' deciles (distinct, so bins are never empty by design)."""
    return sorted({int(v) for v in np.quantile(lengths, np.linspace(0.1, 0.9, 9), method="lower")})


def histogram(values: np.ndarray, edges: Sequence[float]) -> list[float]:
    """Shares of ``values`` per bin; bin i holds edges[i-1] <= v < edges[i] (len(edges) + 1 bins)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
    return [round(float(c), 6) for c in counts / max(1, len(values))]


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}  # linear, as Spark's percentile


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    e = np.maximum(np.asarray(expected, float), EPS)
    a = np.maximum(np.asarray(actual, float), EPS)
    return round(float(np.sum((a - e) * np.log(a / e))), 6)


def training_profile(lengths: np.ndarray, oov: np.ndarray, val_probs: np.ndarray, threshold: float) -> dict:
    """The trainer's record: train lengths (tokens before truncation) and OOV counts, val probabilities."""
    edges = length_edges(lengths)
    return {
        "rows": int(len(lengths)),
        "oov_rate": round(float(oov.sum() / max(1, lengths.sum())), 6),
        "length_quantiles": quantiles(lengths),
        "length_edges": edges,
        "length_histogram": histogram(lengths, edges),
        "val_rows": int(len(val_probs)),
        "probability_edges": list(PROBABILITY_EDGES),
        "probability_histogram": histogram(val_probs, PROBABILITY_EDGES),
        "share_positive": round(float(np.mean(val_probs >= threshold)), 6) if len(val_probs) else None,
    }


def compare(training: dict, scored: dict, threshold: float) -> dict:
    """PSI of the scored figures against the training profile, and the flag."""
    psi_length = psi(training["length_histogram"], scored["length_histogram"])
    psi_probability = psi(training["probability_histogram"], scored["probability_histogram"])
    return {"psi_length": psi_length, "psi_probability": psi_probability, "threshold": threshold,
            "drift": bool(max(psi_length, psi_probability) > threshold)}


def scored_profile(written, n: int | None, training: dict, columns: tuple[str, str, str, str]) -> dict:
    """The same figures over a scored date (a Spark DataFrame of ``n`` rows with probability,
    predicted label, length and oov; ``n`` None: counted in the same pass): one aggregation,
    on the driver only counts."""
    from pyspark.sql import functions as F

    prob, predicted, length, oov = columns
    if n == 0:
        return {"rows": 0}
    quant = ", ".join(str(q) for q in QUANTILES)

    def bin_counts(column: str, edges: Sequence[float], name: str) -> list:
        bin_of = F.expr(f"size(filter(array({', '.join(str(e) for e in edges)}), e -> e <= {column}))")
        return [F.count(F.when(bin_of == i, 1)).alias(f"{name}{i}") for i in range(len(edges) + 1)]

    len_edges, prob_edges = training["length_edges"], training["probability_edges"]
    row = written.agg(F.count(F.lit(1)).alias("n"), F.sum(oov).alias("oov"), F.sum(length).alias("tokens"),
                      F.avg(predicted).alias("positive"),
                      F.expr(f"percentile({length}, array({quant}))").alias("q"),
                      *bin_counts(length, len_edges, "l"), *bin_counts(prob, prob_edges, "p")).first()
    if n is None:
        n = row["n"]
        if not n:
            return {"rows": 0}
    return {
        "rows": n,
        "oov_rate": round(float(row["oov"] / max(1, row["tokens"])), 6),
        "length_quantiles": {f"p{int(q * 100)}": float(v) for q, v in zip(QUANTILES, row["q"])},
        "length_histogram": [round(row[f"l{i}"] / n, 6) for i in range(len(len_edges) + 1)],
        "probability_histogram": [round(row[f"p{i}"] / n, 6) for i in range(len(prob_edges) + 1)],
        "share_positive": round(float(row["positive"]), 6),
    }
