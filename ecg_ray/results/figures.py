"""The report's pictures: tidy tables in, PNG files out (matplotlib, headless).

    learning_curves.png     val macro-F1 and val loss by epoch, every trial; ASHA-stopped ones marked
    confusion_val.png       the best config's best trial at its best val epoch
    confusion_test.png      the same checkpoint on the held-out test split (when there is one)
    hyperparameters.png     best val macro-F1 by each hyperparameter that varies: every trial, mean and 95% CI
    per_class_f1.png        per-class val F1 of the top configs, mean ± sd over seeds

Each figure is drawn on its own `Figure` with the Agg canvas: no pyplot state, no display,
safe in any thread. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ecg_ray.results.tables import varying_keys
from ecg_ray.schema import CLASS_KEYS, CLASS_NAMES, NUM_CLASSES, RANK_METRIC, confusion_columns
from ecg_ray.results.stats import mean_sd_ci
from ecg_ray.storage import atomic_path

DPI = 110
TOP_CONFIGS = 5


def _save(fig: Figure, dest: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return dest


def config_label(row, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]:g}" if isinstance(row[k], (float, np.floating)) else f"{k}={row[k]}" for k in keys) or "config"


def learning_curves(hist: pd.DataFrame, trials: pd.DataFrame, dest: Path) -> Path:
    fig = Figure(figsize=(11, 4.2))
    ax_f1, ax_loss = fig.subplots(1, 2)
    stopped = set(trials.loc[trials["early_stopped"], "trial_id"])
    best = trials["trial_id"].iloc[0]
    for trial_id, g in hist.groupby("trial_id", sort=True):
        g = g.sort_values("epoch")
        style = {"color": "C3", "lw": 2.2, "zorder": 3} if trial_id == best else {"color": "0.55", "lw": 1, "alpha": 0.7}
        for ax, col in ((ax_f1, RANK_METRIC), (ax_loss, "val_loss")):
            ax.plot(g["epoch"], g[col], ls="--" if trial_id in stopped else "-", **style)
            if trial_id in stopped:
                ax.plot(g["epoch"].iloc[-1], g[col].iloc[-1], "x", color="k", ms=7, mew=1.6, zorder=4)
    ax_f1.set(xlabel="epoch", ylabel="val macro-F1", title="Validation macro-F1")
    ax_loss.set(xlabel="epoch", ylabel="val loss (weighted cross-entropy)", title="Validation loss")
    handles = [ax_f1.plot([], [], color="C3", lw=2.2, label=f"best trial ({best})")[0],
               ax_f1.plot([], [], color="0.55", label="other trials")[0]]
    if stopped:
        handles.append(ax_f1.plot([], [], "x--", color="k", label=f"stopped by ASHA ({len(stopped)})")[0])
    ax_f1.legend(handles=handles, loc="lower right", fontsize=8)
    for ax in (ax_f1, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, dest)


def confusion(cm: np.ndarray, title: str, dest: Path) -> Path:
    cm = np.asarray(cm, dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ticks = range(NUM_CLASSES)
    ax.set(xticks=ticks, yticks=ticks, xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
           xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, dest)


def cm_of(row) -> np.ndarray:
    """The confusion matrix stored in a table row's cm_* columns."""
    return np.array([row[c] for c in confusion_columns()], dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)


def by_hyperparameter(trials: pd.DataFrame, dest: Path) -> Path:
    keys = varying_keys(trials) or ["lr"]
    metric = f"best_{RANK_METRIC}"
    fig = Figure(figsize=(max(6.0, 3.2 * len(keys) + 0.6), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(keys), sharey=True))
    for ax, key in zip(axes, keys):
        values = sorted(trials[key].unique(), key=lambda v: (isinstance(v, str), v))
        for x, value in enumerate(values):
            scores = trials.loc[trials[key] == value, metric].to_numpy()
            jitter = np.linspace(-0.12, 0.12, len(scores)) if len(scores) > 1 else np.zeros(1)
            ax.plot(x + jitter, scores, "o", color="0.6", ms=4, alpha=0.8)
            mean, _, lo, hi = mean_sd_ci(scores)
            yerr = None if np.isnan(lo) else [[mean - lo], [hi - mean]]
            ax.errorbar(x + 0.3, mean, yerr=yerr, fmt="D", color="C0", ms=6, capsize=4)
        ax.set_xticks(range(len(values)), [f"{v:g}" if isinstance(v, (float, np.floating)) else str(v) for v in values])
        ax.set(xlabel=key, xlim=(-0.5, len(values) - 0.2))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("best val macro-F1")
    fig.suptitle("Best val macro-F1 by hyperparameter: trials (grey), mean and 95% CI (blue)", fontsize=10)
    return _save(fig, dest)


def per_class_f1(configs: pd.DataFrame, dest: Path, top: int = TOP_CONFIGS) -> Path:
    head = configs.head(top)
    keys = varying_keys(configs) or ["lr"]
    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    width = 0.8 / len(head)
    for i, (_, row) in enumerate(head.iterrows()):
        means = [row[f"val_f1_{k}_mean"] for k in CLASS_KEYS]
        sds = [row[f"val_f1_{k}_sd"] if row["n_seeds"] > 1 else 0.0 for k in CLASS_KEYS]
        ax.bar(np.arange(len(CLASS_KEYS)) + i * width - 0.4 + width / 2, means, width, yerr=sds, capsize=3,
               label=f"#{row['rank']}: {config_label(row, keys)}")
    ax.set_xticks(range(len(CLASS_KEYS)), CLASS_NAMES)
    several = bool((head["n_seeds"] > 1).any())
    ax.set(ylabel="val F1 at the best epoch", ylim=(0, 1),
           title=f"Per-class val F1 of the top {len(head)} config(s)" + (" (mean ± sd over seeds)" if several else ""))
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, dest)


def draw_all(trials: pd.DataFrame, hist: pd.DataFrame, configs: pd.DataFrame, test: pd.DataFrame | None,
             out_dir: Path) -> dict[str, Path]:
    """Every figure of the report into out_dir; name -> file."""
    out_dir = Path(out_dir)
    best = trials.iloc[0]
    best_epoch = hist[(hist["trial_id"] == best["trial_id"]) & (hist["epoch"] == best["best_epoch"])].iloc[0]
    out = {
        "learning_curves": learning_curves(hist, trials, out_dir / "learning_curves.png"),
        "confusion_val": confusion(cm_of(best_epoch), f"Val: {best['trial_id']}, epoch {int(best['best_epoch'])}",
                                   out_dir / "confusion_val.png"),
        "hyperparameters": by_hyperparameter(trials, out_dir / "hyperparameters.png"),
        "per_class_f1": per_class_f1(configs, out_dir / "per_class_f1.png"),
    }
    if test is not None and len(test):
        same = test[test["trial_id"] == best["trial_id"]]  # the val figure's checkpoint, where it was evaluated
        first = (same if len(same) else test.sort_values(["config_rank", "seed"])).iloc[0]
        out["confusion_test"] = confusion(cm_of(first), f"Test: {first['trial_id']}, epoch {int(first['best_val_epoch'])}",
                                          out_dir / "confusion_test.png")
    return out
