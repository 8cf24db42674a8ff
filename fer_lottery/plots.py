"""Figures shared by the run directory, TensorBoard and the report."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def confusion_figure(matrix: list[list[int]], class_names: list[str], title: str = ""):
    """A labelled confusion-matrix heat map: rows are true classes, columns predictions."""
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(6, 5.2), dpi=100)
    image = ax.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            value = matrix[i][j]
            color = "white" if value > peak / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = sum(map(sum, matrix)) or 1
    acc = sum(matrix[i][i] for i in range(n)) / total
    ax.set_title(title or f"Confusion matrix (test, n={total}, acc={acc:.3f})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig
