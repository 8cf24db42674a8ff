"""Every figure fer_lottery draws, in one home: matplotlib, headless (Agg), with saving,
rendering to pixels, and the confusion-matrix figure that every stage logs (PNG and TensorBoard)
and the report draws; the report's and the analysis' charts are in ``plotting.charts``.

Training draws the confusion matrix of each stage's test; the report builds on the same figure.
Both import it from here, so the producer of the runs never imports its consumer. Which figures
a report holds, and from which rows, is the report's (``report.figures``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 120


def save(fig, out_path) -> Path:
    """Save ``fig`` as a PNG at ``out_path``, creating the parent folder; returns the path."""
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def render(fig) -> np.ndarray:
    """Draw ``fig`` once (layout included) and return its pixels as an HxWx3 uint8 array, then
    close it: one render serves both a PNG file and a TensorBoard image."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return pixels


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
    fig.set_layout_engine("tight")  # laid out when drawn: no extra render here
    return fig
