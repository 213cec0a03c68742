"""Learning curves of a run, drawn from its metrics log (JSONL) into a PNG beside it."""

from __future__ import annotations

from pathlib import Path

from ammkd.common.files import atomic_write
from ammkd.distill.schedule import read_log


def plot_learning_curve(log: Path, png: Path, title: str) -> Path:
    """Training loss over steps, and validation mean recall (%) where the log has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], color="tab:blue", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    val = [r for r in records if "val_mean_recall" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["val_mean_recall"] for r in val], "o-", color="tab:orange")
        ax2.set_ylabel("val mean recall (%)", color="tab:orange")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return png
