"""Training and validation curves as the seed notebook draws them (matplotlib, Agg)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


def read_history(path: str | Path) -> dict[str, list[float]]:
    """history.csv (Keras CSVLogger) -> {column: values}, epochs 1-based in ``epoch``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {k: [] for k in (rows[0] if rows else {})}
    for row in rows:
        for k, v in row.items():
            cols[k].append(float(v))
    if "epoch" in cols:
        cols["epoch"] = [e + 1 for e in cols["epoch"]]
    return cols


def _panel(ax, h: dict[str, list[float]], metric: str, title: str) -> None:
    epochs = h["epoch"]
    ax.plot(epochs, h[metric], "bo", label=f"Training {metric}")
    ax.plot(epochs, h[f"val_{metric}"], "b", label=f"Validation {metric}")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_curves(history: dict[str, list[float]], path: str | Path, name: str = "") -> None:
    """Two panels: training vs validation accuracy, and loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    prefix = f"{name}: " if name else ""
    _panel(axes[0], history, "accuracy", f"{prefix}Training and validation accuracy")
    _panel(axes[1], history, "loss", f"{prefix}Training and validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_compare(runs: Sequence[tuple[str, dict[str, list[float]]]], path: str | Path) -> None:
    """One column per run (e.g. GRU, LSTM): accuracy on top, loss below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs), 8), squeeze=False)
    for col, (name, h) in enumerate(runs):
        _panel(axes[0][col], h, "accuracy", f"{name} training and validation")
        _panel(axes[1][col], h, "loss", f"{name} training and validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
