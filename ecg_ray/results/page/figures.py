"""The report's pictures: tidy tables in, PNG files out (matplotlib, headless).

    learning_curves.png     val macro-F1 and val loss by epoch, every trial; ASHA-stopped ones marked
    confusion_val.png       the best config's best trial at its best val epoch
    confusion_test.png      the model best_model.pt ships (the best config's ensemble, or that checkpoint)
                            on the held-out test split (when there is one)
    hyperparameters.png     best val macro-F1 by each hyperparameter that varies: every trial, mean and 95% CI
    per_class_f1.png        per-class val F1 of the top configs, mean ± sd over seeds
    pareto.png              mean val macro-F1 against MACs, parameters and latency; the Pareto fronts marked
    importance.png          each searched key's fANOVA importance (ecg_ray.results.analysis.importance)
    parallel.png            parallel coordinates of the configs' searched values, coloured by their mean

Wide searches stay readable: the hyperparameter panels wrap into rows of at most PANELS_PER_ROW
(the most important keys first when importance is known), a key drawn from a range is a scatter
over its values rather than one column per value.

Each figure is drawn on its own `Figure` with the Agg canvas: no pyplot state, no display,
safe in any thread. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ecg_ray.results.tables.columns import varying_keys
from ecg_ray.schema import CLASS_KEYS, CLASS_NAMES, NUM_CLASSES, RANK_METRIC, confusion_columns
from ecg_ray.results.analysis.stats import mean_sd_ci
from ecg_ray.storage import atomic_path

DPI = 110
TOP_CONFIGS = 5
PANELS_PER_ROW = 5
CATEGORIES = 8  # a numeric key with more values than this is drawn over its range


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
    # The other trials as one collection per panel and line style (one artist, not one per trial:
    # a few hundred trials draw in a fraction of a second); the best trial on top.
    grey = {(ax, dashed): [] for ax in (ax_f1, ax_loss) for dashed in (False, True)}
    ends = {ax_f1: [], ax_loss: []}
    for trial_id, g in hist.groupby("trial_id", sort=True):
        g = g.sort_values("epoch")
        for ax, col in ((ax_f1, RANK_METRIC), (ax_loss, "val_loss")):
            xy = np.column_stack([g["epoch"].to_numpy(dtype=np.float64), g[col].to_numpy(dtype=np.float64)])
            if trial_id == best:
                ax.plot(xy[:, 0], xy[:, 1], ls="--" if trial_id in stopped else "-", color="C3", lw=2.2, zorder=3)
            else:
                grey[ax, trial_id in stopped].append(xy)
            if trial_id in stopped:
                ends[ax].append(xy[-1])
    for (ax, dashed), lines in grey.items():
        if lines:
            ax.add_collection(LineCollection(lines, colors="0.55", linewidths=1, alpha=0.7, linestyles="--" if dashed else "-"))
    for ax, points in ends.items():
        if points:
            pts = np.asarray(points)
            ax.plot(pts[:, 0], pts[:, 1], "x", color="k", ms=7, mew=1.6, ls="none", zorder=4)
        ax.autoscale_view()
    ax_f1.set(xlabel="epoch", ylabel="val macro-F1", title="Validation macro-F1")
    ax_loss.set(xlabel="epoch", ylabel="val loss (weighted cross-entropy)", title="Validation loss")
    fold = trials["fold"].iloc[0] if "fold" in trials else None
    folds = fold is not None and fold == fold  # cross-validated: each line is one fold of a config at a seed
    handles = [ax_f1.plot([], [], color="C3", lw=2.2, label=f"best trial ({best}" + (f", fold {int(fold)})" if folds else ")"))[0],
               ax_f1.plot([], [], color="0.55", label="other trials (a config's fold at a seed each)" if folds else "other trials")[0]]
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


def _value_text(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _is_range(values) -> bool:
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in values)
    return numeric and len(values) > CATEGORIES


def _log_scale(values) -> bool:
    v = np.asarray(values, dtype=np.float64)
    return bool(v.min() > 0 and v.max() / v.min() >= 10)


def by_hyperparameter(trials: pd.DataFrame, dest: Path, order: list[str] | None = None) -> Path:
    keys = varying_keys(trials) or ["lr"]
    if order:
        keys = [k for k in order if k in keys] + [k for k in keys if k not in order]
    metric = f"best_{RANK_METRIC}"
    ncols = min(len(keys), PANELS_PER_ROW)
    nrows = -(-len(keys) // ncols)
    fig = Figure(figsize=(max(6.0, 3.0 * ncols + 0.6), 2.8 * nrows + 0.7))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, key in zip(axes, keys):
        values = sorted(trials[key].unique(), key=lambda v: (isinstance(v, str), v))
        if _is_range(values):
            ax.plot(trials[key], trials[metric], "o", color="C0", ms=4, alpha=0.7)
            if _log_scale(values):
                ax.set_xscale("log")
            ax.set(xlabel=key)
        else:
            for x, value in enumerate(values):
                scores = trials.loc[trials[key] == value, metric].to_numpy()
                jitter = np.linspace(-0.12, 0.12, len(scores)) if len(scores) > 1 else np.zeros(1)
                ax.plot(x + jitter, scores, "o", color="0.6", ms=4, alpha=0.8)
                mean, _, lo, hi = mean_sd_ci(scores)
                yerr = None if np.isnan(lo) else [[mean - lo], [hi - mean]]
                ax.errorbar(x + 0.3, mean, yerr=yerr, fmt="D", color="C0", ms=6, capsize=4)
            ax.set_xticks(range(len(values)), [_value_text(v) for v in values], fontsize=8)
            ax.set(xlabel=key, xlim=(-0.5, len(values) - 0.2))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("best val macro-F1")
    fig.suptitle("Best val macro-F1 by hyperparameter: trials (grey), mean and 95% CI (blue)"
                 + ("; most important first" if order else ""), fontsize=10)
    return _save(fig, dest)


def pareto(configs: pd.DataFrame, dest: Path) -> Path | None:
    """Mean val macro-F1 against each cost of FRONTS; None when no cost was measured."""
    from ecg_ray.results.analysis.tradeoffs import FRONTS, SCORE, pareto_front

    costs = [(col, label) for col, (_, label) in FRONTS.items() if configs[col].notna().any()]
    if not costs:
        return None
    fig = Figure(figsize=(4.2 * len(costs) + 0.4, 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(costs), sharey=True))
    for ax, (col, label) in zip(axes, costs):
        known = configs[configs[col].notna()]
        front = pareto_front(known[SCORE], known[col])
        ax.plot(known[col], known[SCORE], "o", color="0.6", ms=5, label="config")
        line = known[front].sort_values(col)
        ax.plot(line[col], line[SCORE], "D-", color="C3", ms=6, label=f"Pareto front ({front.sum()})")
        for _, row in line.iterrows():
            ax.annotate(f"#{int(row['rank'])}", (row[col], row[SCORE]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if _log_scale(known[col]):
            ax.set_xscale("log")
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("mean best val macro-F1")
    fig.suptitle("Accuracy against cost: configs no other beats on both (red, #rank)", fontsize=10)
    return _save(fig, dest)


def importance_bars(table: pd.DataFrame, dest: Path) -> Path:
    fig = Figure(figsize=(6.4, 0.35 * len(table) + 1.3))
    ax = fig.subplots()
    ax.barh(range(len(table)), table["importance"], color="C0")
    ax.set_yticks(range(len(table)), table["key"], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="share of the variance of the mean val macro-F1 (fANOVA)", xlim=(0, 1),
           title="Hyperparameter importance")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, dest)


def parallel(configs: pd.DataFrame, keys: list[str], dest: Path) -> Path | None:
    """One line per config through an axis per key (and the score), coloured by its mean; None below two keys."""
    from matplotlib import cm, colormaps, colors

    from ecg_ray.results.analysis.tradeoffs import SCORE

    if len(keys) < 2:
        return None
    axes_cols = [*keys, SCORE]
    positions, ticks = {}, {}
    for key in axes_cols:
        values = configs[key]
        uniques = sorted(values.unique(), key=lambda v: (isinstance(v, str), v))
        if key != SCORE and not _is_range(uniques):
            step = 1.0 / max(1, len(uniques) - 1)
            where = {v: i * step for i, v in enumerate(uniques)} if len(uniques) > 1 else {uniques[0]: 0.5}
            positions[key] = values.map(where).to_numpy(dtype=np.float64)
            ticks[key] = [(where[v], _value_text(v)) for v in uniques]
        else:
            x = values.to_numpy(dtype=np.float64)
            scale = np.log10 if key != SCORE and _log_scale(x) else (lambda a: a)
            lo, hi = np.nanmin(scale(x)), np.nanmax(scale(x))
            positions[key] = (scale(x) - lo) / (hi - lo) if hi > lo else np.full(len(x), 0.5)
            ticks[key] = [(0.0, f"{float(np.nanmin(x)):.3g}"), (1.0, f"{float(np.nanmax(x)):.3g}")]
    fig = Figure(figsize=(min(15.0, max(6.0, 1.1 * len(axes_cols) + 2.0)), 4.6))
    ax = fig.subplots()
    score = configs[SCORE].to_numpy(dtype=np.float64)
    norm = colors.Normalize(np.nanmin(score), np.nanmax(score) if np.nanmax(score) > np.nanmin(score) else np.nanmin(score) + 1e-9)
    cmap = colormaps["viridis"]
    order = np.argsort(score, kind="stable")  # the best drawn last, on top
    xs = np.arange(len(axes_cols), dtype=np.float64)
    lines = [np.column_stack([xs, [positions[k][i] for k in axes_cols]]) for i in order]
    ax.add_collection(LineCollection(lines, colors=cmap(norm(score[order])), linewidths=1.4, alpha=0.85))
    for x, key in enumerate(axes_cols):
        ax.axvline(x, color="0.3", lw=0.8)
        for y, text in ticks[key]:
            ax.text(x + 0.04, y, text, fontsize=7, va="center")
    ax.set_xticks(range(len(axes_cols)), [*keys, "mean val macro-F1"], rotation=30, ha="right", fontsize=8)
    ax.set(yticks=[], ylim=(-0.05, 1.05), xlim=(-0.2, len(axes_cols) - 0.4),
           title="Configs by their searched values, coloured by mean best val macro-F1")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="mean best val macro-F1")
    return _save(fig, dest)


def per_class_f1(configs: pd.DataFrame, dest: Path, top: int = TOP_CONFIGS) -> Path:
    head = configs.head(top)
    keys = varying_keys(configs) or ["lr"]
    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    width = 0.8 / len(head)
    for i, (_, row) in enumerate(head.iterrows()):
        means = [row[f"val_f1_{k}_mean"] for k in CLASS_KEYS]
        sds = [row[f"val_f1_{k}_sd"] if row.get("n_trials", row["n_seeds"]) > 1 else 0.0 for k in CLASS_KEYS]
        ax.bar(np.arange(len(CLASS_KEYS)) + i * width - 0.4 + width / 2, means, width, yerr=sds, capsize=3,
               label=f"#{row['rank']}: {config_label(row, keys)}")
    ax.set_xticks(range(len(CLASS_KEYS)), CLASS_NAMES)
    several = bool((head["n_trials" if "n_trials" in head else "n_seeds"] > 1).any())
    ax.set(ylabel="val F1 at the best epoch", ylim=(0, 1),
           title=f"Per-class val F1 of the top {len(head)} config(s)"
           + ((" (mean ± sd over folds and seeds)" if "n_folds" in head else " (mean ± sd over seeds)") if several else ""))
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, dest)


def draw_all(trials: pd.DataFrame, hist: pd.DataFrame, configs: pd.DataFrame, test: pd.DataFrame | None,
             out_dir: Path, importance: pd.DataFrame | None = None) -> dict[str, Path]:
    """Every figure of the report into out_dir; name -> file. `configs` carries the cost columns
    (ecg_ray.results.analysis.tradeoffs.with_costs); `importance` orders the hyperparameter panels."""
    out_dir = Path(out_dir)
    best = trials.iloc[0]
    best_epoch = hist[(hist["trial_id"] == best["trial_id"]) & (hist["epoch"] == best["best_epoch"])].iloc[0]
    out = {
        "learning_curves": learning_curves(hist, trials, out_dir / "learning_curves.png"),
        "confusion_val": confusion(cm_of(best_epoch), f"Val: {best['trial_id']}, epoch {int(best['best_epoch'])}",
                                   out_dir / "confusion_val.png"),
        "hyperparameters": by_hyperparameter(trials, out_dir / "hyperparameters.png",
                                             None if importance is None else list(importance["key"])),
        "per_class_f1": per_class_f1(configs, out_dir / "per_class_f1.png"),
    }
    optional = {"pareto": lambda dest: pareto(configs, dest),
                "importance": lambda dest: None if importance is None else importance_bars(importance, dest),
                "parallel": lambda dest: parallel(configs, list(importance["key"]) if importance is not None
                                                  else varying_keys(configs), dest)}
    for name, draw in optional.items():
        dest = out_dir / f"{name}.png"
        drawn = draw(dest)
        if drawn is not None:
            out[name] = drawn
        else:
            dest.unlink(missing_ok=True)  # an older report's picture of what is no longer drawn
    if test is not None and len(test):
        row, title = shipped_test_row(test, best["trial_id"])
        out["confusion_test"] = confusion(cm_of(row), title, out_dir / "confusion_test.png")
    return out


def shipped_test_row(test: pd.DataFrame, best_trial: str) -> tuple[pd.Series, str]:
    """(the test row of the model best_model.pt ships, a title for it): the best config's ensemble where
    that config has several trials (seeds, folds), else the best trial's checkpoint (the val figure's)."""
    shipped = test[(test["trial_id"] == "ensemble") & (test["config_rank"] == 1)] if "config_rank" in test else test.iloc[:0]
    if len(shipped):
        row = shipped.iloc[0]
        return row, f"Test: best_model.pt, the {row['evaluated']} of the best config"
    same = test[test["trial_id"] == best_trial]
    row = (same if len(same) else test.sort_values(["config_rank", "seed"])).iloc[0]
    return row, f"Test: {row['trial_id']}, epoch {int(row['best_val_epoch'])}"
