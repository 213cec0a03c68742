"""Learning curves of a run, drawn from its metrics log (JSONL) into a PNG beside it."""

from __future__ import annotations

from pathlib import Path

from ammkd.common.files import atomic_write
from ammkd.distill.schedule import read_log


def plot_learning_curve(log: Path, png: Path, title: str) -> Path:
    """Training loss over steps, validation mean recall (%) where the log has it, and the
    teacher weights α per teacher (a second panel) for distillation runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log)
    alphas = [r for r in records if r.get("alpha")]
    fig, axes = plt.subplots(2 if alphas else 1, 1, figsize=(7, 6 if alphas else 4), dpi=100, squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    val = [r for r in records if "val_mean_recall" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["val_mean_recall"] for r in val], "o-", color="tab:orange")
        ax2.set_ylabel("val mean recall (%)", color="tab:orange")
    ax.set_title(title, fontsize=10)
    if alphas:
        ax = axes[1][0]
        for k in range(len(alphas[0]["alpha"])):
            ax.plot([r["step"] for r in alphas], [r["alpha"][k] for r in alphas], label=f"α teacher {k}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("teacher weight α")
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return png
